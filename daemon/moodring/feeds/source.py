"""What a feed source is: one protocol, one registry; the daemon knows no source by name.

A source (``source: <name>`` in ``feeds.<feed>``) is a package ``moodring.feeds.<name>``
that registers a ``FeedSource``: its config model, how to build its running parts from its
feeds (the parts warm themselves up, each in the way its source chose), and the clock its
bars close by. ``moodring/feeds/template.py`` is a template to copy.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal, Protocol, Self

from pydantic import SecretStr, model_validator

from moodring.feeds.base import FeedSink
from moodring.lifecycle import Component
from moodring.market.builder import BarBuilder
from moodring.registry import Registry
from moodring.settings import FEED_SOURCES, FeedConfig

# ``stream``: bars close by the stream's own clock (its data's time, per stream, ahead of or
# behind the local clock: a replay runs at its own pace); ``wall``: by the local clock.
Clock = Literal["stream", "wall"]


@dataclass(frozen=True, slots=True)
class FeedWiring:
    """What the parts of a source are wired to."""

    sink: FeedSink
    # the bar builders of a feed in the current engine (a reload may replace the engine)
    builders: Callable[[str], list[BarBuilder]]
    on_reconnect: Callable[[str], None] | None = None


class FeedPart(Component):
    """A running part of a source (an exchange's client, one equity stream): a Component.

    It serves ``feeds`` (by name), sets ``warmed`` once they are warmed up (READY=1 waits
    for every part's) and closes their bars by its ``clock``. These defaults fit a part
    without a stream clock: its bars close by the local time, nothing needs repairs.
    """

    clock: ClassVar[Clock] = "wall"
    feeds: Mapping[str, FeedConfig]
    warmed: asyncio.Event

    def clock_ms(self, feed: str) -> int:
        """Return the time by which the feed's bars close (see ``Clock``)."""
        return int(time.time() * 1000)

    def on_clock(self) -> None:
        """Look after the feeds once a second (stale checks, repairs due)."""

    def resync(self) -> None:
        """Settle the feeds' bars anew: the engine (its builders) was replaced."""

    def problem(self) -> str | None:
        """Return what keeps the feeds from streaming that retrying will not mend, or None."""
        return None


class FeedSource(Protocol):
    """A kind of feed: its config model, its clock, and how its running parts are built."""

    name: ClassVar[str]
    config: ClassVar[type[FeedConfig]]
    clock: ClassVar[Clock]

    def build(self, feeds: Mapping[str, FeedConfig], wiring: FeedWiring) -> list[FeedPart]:
        """Return the parts that stream these feeds (all of this source), warm-up included."""
        ...


SOURCES: Registry[FeedSource] = Registry("feed source", "moodring.feeds")


def register(source: FeedSource) -> FeedSource:
    """Make ``source`` the one of ``source: <source.name>`` (its config model in settings)."""
    SOURCES.register(source.name, source)
    FEED_SOURCES.register(source.name, source.config)
    return source


def unregister(name: str) -> None:
    """Forget the source ``name`` (a test's own source, once the test is done)."""
    SOURCES.unregister(name)
    FEED_SOURCES.unregister(name)


def build_parts(feeds: Mapping[str, FeedConfig], wiring: FeedWiring) -> list[FeedPart]:
    """Return the running parts of every feed, grouped by source in the order of ``feeds``."""
    by_source: dict[str, dict[str, FeedConfig]] = {}
    for name, feed in feeds.items():
        by_source.setdefault(feed.source, {})[name] = feed
    return [
        part for source, group in by_source.items() for part in SOURCES[source].build(group, wiring)
    ]


class KeyedFeedConfig(FeedConfig):
    """A feed of a source that needs an API key (``needs``: the keys it must have)."""

    needs: ClassVar[tuple[str, ...]] = ("api_key",)
    api_key: SecretStr | None = None

    @model_validator(mode="after")
    def _keys_given(self) -> Self:
        for key in self.needs:
            if getattr(self, key) is None:
                raise ValueError(
                    f"{key}: source {self.source} needs it ({key}, {key}_file or "
                    f"{key}_credential; or MOODRING_FEEDS__<NAME>__{key.upper()})"
                )
        return self


def warm_up_bars(feed: FeedConfig, capacity: int) -> int | None:
    """Return the closed bars a feed's warm-up fetches for a ring of ``capacity`` bars.

    None when its source does not say (a chart's range of its own choosing). A source
    tells by a ``warm_up_bars(capacity)`` method.
    """
    source = SOURCES.get(feed.source)
    count = getattr(source, "warm_up_bars", None)
    return None if count is None else int(count(capacity))


def warming(parts: Sequence[FeedPart]) -> list[str]:
    """Return the names of the parts not warmed up yet."""
    return [part.name for part in parts if not part.warmed.is_set()]
