"""``moodring check-feeds``: connect to every configured feed once and say what came back.

Each source that can be checked registers an async ``check(name, feed, timeout)`` beside its
``build`` (ccxt, yahoo); it tries the feed's REST API and its websocket within ``timeout``
seconds each and returns a ``FeedCheck``. Sources without one are reported as not checked.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from moodring.feeds.source import SOURCES
from moodring.settings import FeedConfig

# A check of one feed: its REST API and websocket, each within ``timeout`` seconds.
Checker = Callable[[str, FeedConfig, float], Awaitable["FeedCheck"]]


@dataclass(slots=True)
class FeedCheck:
    """What one feed's check found."""

    feed: str
    source: str
    usable: bool | None  # None: the source cannot be checked
    reason: str = ""  # why not usable (or a note when usable)
    market: str = ""  # the market found, as the venue names it
    price: float | None = None  # the latest price seen
    offset_ms: int | None = None  # the venue's clock less the local clock

    def line(self) -> str:
        """Return the check as one line for a person."""
        if self.usable is None:
            verdict = "not checked"
        else:
            verdict = "usable" if self.usable else "NOT usable"
        parts = [f"{self.feed} ({self.source}): {verdict}"]
        if self.market:
            parts.append(f"market {self.market}")
        if self.price is not None and math.isfinite(self.price):
            parts.append(f"latest price {self.price:g}")
        if self.offset_ms is not None:
            parts.append(f"clock offset {self.offset_ms:+d} ms")
        if self.reason:
            parts.append(self.reason)
        return "; ".join(parts)


async def check_feeds(feeds: Mapping[str, FeedConfig], timeout: float = 5.0) -> list[FeedCheck]:
    """Check every feed (all at once), in the order of ``feeds``."""

    async def one(name: str, feed: FeedConfig) -> FeedCheck:
        source = SOURCES.get(feed.source)
        checker: Checker | None = getattr(source, "check", None)
        if checker is None:
            return FeedCheck(name, feed.source, None, f"source {feed.source} has no check")
        try:
            # REST and websocket each get ``timeout``; the bound covers a check that hangs
            async with asyncio.timeout(3 * timeout + 5):
                return await checker(name, feed, timeout)
        except TimeoutError:
            return FeedCheck(name, feed.source, False, f"no answer within {3 * timeout + 5:g} s")

    return list(await asyncio.gather(*(one(name, feed) for name, feed in feeds.items())))
