"""The bar clock: a stream's bars close by its own time, and only once that time is known."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import ClassVar

from moodring.feeds.source import Clock, FeedPart
from moodring.pipeline import Pipeline
from moodring.service.clock import CLOSE_GRACE_MS, BarClock
from moodring.settings import FeedConfig, Settings

HOUR_MS = 3_600_000
# a replay's time: the exchange's clock is years behind the local one
REPLAY_MS = 28_333_333 * 60_000  # 2023-11-14, a whole minute


class StreamPart(FeedPart):
    """A stream-clocked part that has not connected yet: its clock says the local time."""

    clock: ClassVar[Clock] = "stream"

    def __init__(self, feeds: Mapping[str, FeedConfig]) -> None:
        self.feeds = dict(feeds)
        self.warmed = asyncio.Event()
        self.stream_ms: int | None = None  # told once connected

    def clock_ms(self, feed: str) -> int:
        return self.stream_ms if self.stream_ms is not None else int(time.time() * 1000)

    async def _setup(self) -> None:
        self.spawn(asyncio.Event().wait(), name="stream")


async def test_a_stream_not_yet_connected_closes_no_bars_by_the_local_clock() -> None:
    settings = Settings(
        feeds={"eth": {"symbol": "ETH/USDT"}},
        metrics={"mfi": {"type": "mfi", "series": "eth", "timeframe": "1m", "period": 3}},
    )
    engine = Pipeline(settings)
    for minute in range(3):  # a replay's trades, carried over from an engine a reload replaced
        engine.on_trade("eth", REPLAY_MS + minute * 60_000, 100.0 + minute, 1.0)
    part = StreamPart(settings.feeds)
    clock = BarClock(lambda: engine, lambda: [part])
    [builder] = engine.builders("eth")
    async with part:
        clock.tick()
        assert builder.time == REPLAY_MS + 2 * 60_000, "closed by a clock the stream never told"
        assert builder.last_time == REPLAY_MS + 60_000

        part.warmed.set()  # connected: the stream tells its time, an hour on
        part.stream_ms = REPLAY_MS + HOUR_MS + CLOSE_GRACE_MS
        clock.tick()
        assert builder.last_time == REPLAY_MS + HOUR_MS - 60_000, "empty minutes filled up to it"
