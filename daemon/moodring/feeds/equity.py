"""The running part of an equity feed: its source's streamer and the warm-up it chose."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from moodring.feeds.source import FeedPart
from moodring.feeds.streamer import EquityStreamer, StreamerOptions
from moodring.lifecycle import Group
from moodring.market.calendar import MarketCalendar
from moodring.settings import FeedConfig


def streamer_options(feed: FeedConfig) -> StreamerOptions:
    """Return the options every equity streamer of ``feed`` takes."""
    return {"calendar": MarketCalendar(), "stale_after": feed.stale_after}


class EquityFeed(FeedPart, Group):
    """One equity feed: its streamer, and beside it the warm-up its source chose.

    Its bars close by the local clock (an equity stream carries no exchange clock).
    """

    def __init__(
        self,
        feed: str,
        config: FeedConfig,
        streamer: EquityStreamer,
        warm_up: Callable[[], Awaitable[None]],
    ) -> None:
        super().__init__((streamer,), name=f"feed {feed}")
        self.feeds = {feed: config}
        self.streamer = streamer
        self.warmed = asyncio.Event()
        self._warm_up = warm_up

    async def _setup(self) -> None:
        await super()._setup()
        self.spawn(self._warm(), name=f"{self.name} warm-up")

    async def _warm(self) -> None:
        await self._warm_up()
        self.warmed.set()
