"""A small registry: named parts of one kind, registered by the modules that define them.

A leaf module. A lower layer owns a registry and reads it; the higher packages that define
the parts register them when imported (settings reads the metric types of
``moodring.metrics`` and the feed sources of ``moodring.feeds``), so the lower layer never
imports the higher one. Whoever loads settings imports those packages first
(``moodring.configfile`` does).
"""

from __future__ import annotations

from collections.abc import ItemsView, Iterator, ValuesView
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Parts of one kind by name, in the order they were registered."""

    def __init__(self, kind: str, home: str) -> None:
        self.kind = kind
        self.home = home  # the package whose import registers the parts
        self._parts: dict[str, T] = {}

    def register(self, name: str, part: T) -> T:
        """Add ``part`` under ``name`` (a name is registered once) and return it."""
        if name in self._parts and self._parts[name] != part:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._parts[name] = part
        return part

    def unregister(self, name: str) -> None:
        """Remove the part named ``name`` (a test's own part, once the test is done)."""
        del self._parts[name]

    def __getitem__(self, name: str) -> T:
        """Return the part named ``name``; LookupError naming the registered ones if none."""
        try:
            return self._parts[name]
        except KeyError:
            known = ", ".join(self._parts) or f"none: import {self.home} to register them"
            raise LookupError(f"no {self.kind} {name!r} (registered: {known})") from None

    def get(self, name: str) -> T | None:
        """Return the part named ``name``, or None if there is none."""
        return self._parts.get(name)

    def __contains__(self, name: object) -> bool:
        """Return whether a part is registered under ``name``."""
        return name in self._parts

    def __iter__(self) -> Iterator[str]:
        """Iterate over the names in registration order."""
        return iter(self._parts)

    def __len__(self) -> int:
        """Return how many parts are registered."""
        return len(self._parts)

    def items(self) -> ItemsView[str, T]:
        """Return (name, part) pairs in registration order."""
        return self._parts.items()

    def values(self) -> ValuesView[T]:
        """Return the parts in registration order."""
        return self._parts.values()
