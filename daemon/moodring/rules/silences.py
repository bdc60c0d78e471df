"""Silences: rules muted by hand for a while, kept in the state directory.

A silence names a rule (``sol-decoupling``), a wildcard pattern of rule names
(``*-decoupling``, fnmatch's ``*``, ``?`` and ``[...]``) or a rule template of a watchlist
as written (``{base}-decoupling``: every rule expanded from it, members added later too).
Rule names hold none of ``*?[{``, so the three never mix up.
"""

from __future__ import annotations

import json
import os
import tempfile
import time as clock
from collections.abc import Callable
from dataclasses import asdict, dataclass
from fnmatch import fnmatchcase
from pathlib import Path

WILDCARDS = frozenset("*?[")


def is_pattern(name: str) -> bool:
    """Return whether a silenced name is a wildcard pattern of rule names."""
    return not WILDCARDS.isdisjoint(name)


def is_template(name: str) -> bool:
    """Return whether a silenced name is a rule template as written (``{base}-decoupling``)."""
    return "{" in name


def covers(silenced: str, rule: str, template: str | None = None) -> bool:
    """Return whether a silence of ``silenced`` mutes ``rule`` (expanded from ``template``)."""
    if is_template(silenced):
        return template == silenced
    if is_pattern(silenced):
        return fnmatchcase(rule, silenced)
    return rule == silenced


@dataclass(frozen=True, slots=True)
class Silence:
    """A rule muted until ``until`` (epoch seconds), with who-knows-why in ``reason``."""

    rule: str
    until: float
    reason: str = ""
    created: float = 0.0


class Silences:
    """The silences file: read on change, written atomically, expired entries dropped."""

    def __init__(self, path: Path, template_of: Callable[[str], str | None] | None = None) -> None:
        self.path = path
        # the template (as written) a rule was expanded from, for silences of templates
        self.template_of: Callable[[str], str | None] = template_of or (lambda rule: None)
        self._mtime: float | None = None
        self._items: list[Silence] = []

    def add(self, rule: str, seconds: float, reason: str = "", now: float | None = None) -> Silence:
        """Silence ``rule`` for ``seconds`` from now (replacing an earlier silence of it)."""
        now = clock.time() if now is None else now
        silence = Silence(rule, now + seconds, reason, now)
        self._write([s for s in self.active(now) if s.rule != rule] + [silence])
        return silence

    def clear(self, rule: str | None = None, now: float | None = None) -> int:
        """Remove the silence of ``rule`` (all silences when None); return how many went."""
        active = self.active(now)
        kept = [s for s in active if rule is not None and s.rule != rule]
        self._write(kept)
        return len(active) - len(kept)

    def active(self, now: float | None = None) -> list[Silence]:
        """Return the silences in force."""
        now = clock.time() if now is None else now
        return [s for s in self._read() if s.until > now]

    def silenced(self, rule: str, now: float | None = None) -> Silence | None:
        """Return the silence muting ``rule`` now, if any (its own, a pattern's, a template's)."""
        active = self.active(now)
        if not active:
            return None
        template = self.template_of(rule)
        return next((s for s in active if covers(s.rule, rule, template)), None)

    def _read(self) -> list[Silence]:
        try:
            mtime = self.path.stat().st_mtime
        except FileNotFoundError:
            return []
        if mtime != self._mtime:
            data = json.loads(self.path.read_text() or "[]")
            self._items = [Silence(**item) for item in data]
            self._mtime = mtime
        return self._items

    def _write(self, items: list[Silence]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".silences.")
        with os.fdopen(fd, "w") as out:
            json.dump([asdict(s) for s in items], out, indent=1)
        os.replace(tmp, self.path)
        self._items, self._mtime = items, self.path.stat().st_mtime
