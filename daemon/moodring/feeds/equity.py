"""The running part of an equity feed: its source's streamer, its warm-up and its repairs.

An equity stream carries no exchange clock, so its bars close by the data's own time: the
streamer's ``data_ms`` (its trades' times, and Yahoo's keep-alives through closed hours;
the local clock until the stream has told it). A replay of a past day, or one ten times
faster than real time, therefore closes its bars where a live stream would, and a live
stream never has a bar closed before its own trades say the bar is over.

History comes from a chart API (Yahoo's for every source; a keyed source has none free):
the warm-up takes the bars that have ended by the data's time, and whenever trades may be
missing (at start, after a dropped connection, after a reload) the bars from there through
the first one seen whole again are held back and replaced by the chart's own once over, as
the crypto feed does with the exchange's klines. So closed bars equal an unbroken stream.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import ClassVar

from moodring.backoff import Backoff
from moodring.feeds.base import FeedSink
from moodring.feeds.source import Clock, FeedPart, FeedWiring
from moodring.feeds.streamer import EquityStreamer, StreamerOptions
from moodring.feedstate import FeedState
from moodring.lifecycle import Group
from moodring.market.bar import Bar
from moodring.market.builder import HOLD_ALL, BarBuilder
from moodring.market.calendar import MarketCalendar
from moodring.market.frame import BarFrame
from moodring.market.timeframe import Timeframe
from moodring.settings import FeedConfig
from moodring.times import iso_time

log = logging.getLogger("moodring.feeds")

# A source's history: the chart's bars of a timeframe (open times on its UTC grid), the
# last one possibly still forming.
History = Callable[[Timeframe], Awaitable[BarFrame]]
# Seconds the warm-up waits for the stream to tell its time before judging by the local
# clock which history bars have ended (a replay's forming bar must not be taken as closed).
CLOCK_WAIT = 3.0
# Trades kept while the warm-up runs (they go on after it); beyond, the oldest are dropped:
# the repair of the first bar seen whole brings back the bars they belonged to.
WARMING_TRADES = 100_000
# Attempts of one repair before the held bars are released as built.
REPAIR_TRIES = 8


def streamer_options(feed: FeedConfig) -> StreamerOptions:
    """Return the options every equity streamer of ``feed`` takes."""
    return {"calendar": MarketCalendar(), "stale_after": feed.stale_after}


class EquityFeed(FeedPart, Group):
    """One equity feed: its streamer (delivering through this part), warm-up and repairs."""

    clock: ClassVar[Clock] = "stream"

    def __init__(
        self,
        feed: str,
        config: FeedConfig,
        wiring: FeedWiring,
        streamer: Callable[[FeedSink], EquityStreamer],
        history: History,
    ) -> None:
        self.feed = feed
        self.feeds = {feed: config}
        self.streamer = streamer(self)
        self.streamer.on_gap = self._gap_begins
        super().__init__((self.streamer,), name=f"feed {feed}")
        self.warmed = asyncio.Event()
        self._wiring = wiring
        self._history = history
        self._warming: deque[tuple[int, float, float, object]] | None = deque(maxlen=WARMING_TRADES)
        self._awaiting_first = True  # trades may be missing until the next one comes
        self._repairs: dict[int, asyncio.Task[None]] = {}

    async def _setup(self) -> None:
        await super()._setup()
        self.spawn(self._warm(), name=f"{self.name} warm-up")

    def clock_ms(self, feed: str) -> int:
        """Return the data's time (the stream's own; the local clock's until it told it)."""
        return self.streamer.data_ms()

    def on_clock(self) -> None:
        """Repair the held bars the data's time has passed."""
        for builder in self._wiring.builders(self.feed):
            self._maybe_repair(builder)

    def resync(self) -> None:
        """Repair the bars in the new engine's builders from the chart history."""
        self._gap_begins()

    # -- the sink the streamer delivers to -------------------------------------------------

    def trade(self, feed: str, t_ms: int, price: float, amount: float, trade_id: object) -> None:
        """Take a trade: kept while warming up, else passed on (the first after a gap holds)."""
        if self._warming is not None:
            self._warming.append((t_ms, price, amount, trade_id))
            return
        if self._awaiting_first:
            self._awaiting_first = False
            for builder in self._wiring.builders(feed):
                builder.hold(builder.timeframe.floor(t_ms))
        self._wiring.sink.trade(feed, t_ms, price, amount, trade_id)
        for builder in self._wiring.builders(feed):
            self._maybe_repair(builder)

    def candle(self, feed: str, bar: Bar, *, closed: bool, length_ms: int) -> None:
        """Pass a candle on (equity streamers send trades)."""
        self._wiring.sink.candle(feed, bar, closed=closed, length_ms=length_ms)

    def history(self, feed: str, bars: Sequence[Bar], *, length_ms: int) -> None:
        """Pass history bars on."""
        self._wiring.sink.history(feed, bars, length_ms=length_ms)

    def state(self, feed: str, state: FeedState, t_ms: int) -> None:
        """Pass a change of the feed's health on."""
        self._wiring.sink.state(feed, state, t_ms)

    def bad_frame(self, feed: str, reason: str, detail: str) -> None:
        """Pass a skipped frame on."""
        self._wiring.sink.bad_frame(feed, reason, detail)

    # -- warm-up and repairs ---------------------------------------------------------------

    async def _warm(self) -> None:
        """Fill every builder with the history bars ended by the data's time; then stream."""
        fetched = [(b, await self._fetch(b.timeframe)) for b in self._wiring.builders(self.feed)]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CLOCK_WAIT
        while self.streamer.stream_clock.time() is None and loop.time() < deadline:
            await asyncio.sleep(0.05)
        now = self.streamer.data_ms()
        for builder, frame in fetched:
            tf = builder.timeframe.ms
            closed = [bar for bar in _bars(frame) if bar.time + tf <= now]
            self._wiring.sink.history(self.feed, closed, length_ms=tf)
            log.info("%s: warmed up %d %s bars", self.feed, len(closed), builder.timeframe)
        waiting, self._warming = self._warming or (), None
        self._gap_begins()
        for t_ms, price, amount, trade_id in waiting:
            self.trade(self.feed, t_ms, price, amount, trade_id)
        self.warmed.set()

    async def _fetch(self, timeframe: Timeframe) -> BarFrame:
        """Return the chart history of a timeframe, retrying with backoff until it comes."""
        backoff = Backoff(2.0, 300.0)
        while True:
            try:
                return await self._history(timeframe)
            except (OSError, RuntimeError) as exc:  # HistoryError is a RuntimeError
                delay = backoff.next()
                log.warning("%s: history: %s; retrying in %.0f s", self.feed, exc, delay)
                await asyncio.sleep(delay)

    def _gap_begins(self) -> None:
        """Trades may be missing from now on: hold the bars until the next trade's is repaired."""
        self._awaiting_first = True
        if self._warming is None:
            for builder in self._wiring.builders(self.feed):
                builder.hold(HOLD_ALL)

    def _maybe_repair(self, builder: BarBuilder) -> None:
        if not builder.holding:
            return
        if builder.held_until + builder.timeframe.ms > self.streamer.data_ms():
            return  # the last held bar is not over yet by the data's time
        key = id(builder)
        running = self._repairs.get(key)
        if running is not None and not running.done():
            return
        self._repairs[key] = self.spawn(self._repair(builder), name=f"{self.name} repair")

    async def _repair(self, builder: BarBuilder) -> None:
        """Settle the held bars (and the ones that never formed before them) from the chart."""
        since, through = builder.held_from, builder.held_until
        last = builder.bars.last()
        if last is not None:
            since = min(since, last.time + builder.timeframe.ms)
        backoff = Backoff(1.0, 30.0)
        for _ in range(REPAIR_TRIES):
            try:
                frame = await self._history(builder.timeframe)
            except (OSError, RuntimeError) as exc:
                log.warning("%s: repair failed (%s); retrying", self.feed, exc)
                await asyncio.sleep(backoff.next())
                continue
            builder.settle([bar for bar in _bars(frame) if since <= bar.time <= through], through)
            log.info(
                "%s: %s bars from %s to %s taken from the chart history",
                self.feed,
                builder.timeframe,
                iso_time(since),
                iso_time(through),
            )
            return
        log.error("%s: repair gave up; releasing the bars as received", self.feed)
        builder.settle((), through)


def _bars(frame: BarFrame) -> list[Bar]:
    """Return a frame's rows as bars."""
    columns = (frame.time, frame.open, frame.high, frame.low, frame.close, frame.volume)
    return [Bar(*row) for row in zip(*(c.tolist() for c in columns), strict=True)]
