"""The feed sink of the daemon: feed events into the engine, health into logs and rules."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from moodring.feeds.frames import BadFrames
from moodring.feedstate import FeedState
from moodring.market.bar import Bar
from moodring.pipeline import Pipeline
from moodring.service.catchup import CatchUp
from moodring.times import iso_time

log = logging.getLogger("moodring.feeds")

# One trade in this many is timed (bars, metrics, rules): a sample, not a cost on every tick.
TIME_EVERY = 64


class PipelineSink:
    """Passes trades and candles to the engine; feed states to the rules and the log."""

    def __init__(
        self,
        engine: Pipeline,
        bad_frames: BadFrames | None = None,
        on_tick: Callable[[str], None] | None = None,
        on_state: Callable[[str, FeedState, int], None] | None = None,
        on_update: Callable[[float], None] | None = None,
    ) -> None:
        self.engine = engine
        self.bad_frames = bad_frames or BadFrames()
        self.states: dict[str, FeedState] = {}
        self.catch_up: CatchUp | None = None
        self._on_tick = on_tick
        self._on_state = on_state
        self._on_update = on_update
        self._trades = 0

    def trade(self, feed: str, t_ms: int, price: float, amount: float, trade_id: object) -> None:
        """Take one trade (every ``TIME_EVERY``-th one timed for ``on_update``)."""
        self._trades += 1
        if self._on_update is not None and not self._trades % TIME_EVERY:
            started = time.perf_counter()
            self.engine.on_trade(feed, t_ms, price, amount, trade_id)
            self._on_update(time.perf_counter() - started)
        else:
            self.engine.on_trade(feed, t_ms, price, amount, trade_id)
        if self._on_tick is not None:
            self._on_tick(feed)

    def candle(self, feed: str, bar: Bar, *, closed: bool, length_ms: int) -> None:
        """Take one live candle."""
        self.engine.on_candle(feed, bar.time, bar, closed=closed, length_ms=length_ms)
        if self._on_tick is not None:
            self._on_tick(feed)

    def history(self, feed: str, bars: Sequence[Bar], *, length_ms: int) -> None:
        """Take warm-up bars: they fill the windows, their alerts are not sent.

        Bars go to the feed's builders of their length only (each timeframe has its own).
        After a restart from a snapshot (``catch_up`` set) they are judged by it instead:
        bars that closed while moodring was down alert late.
        """
        catch_up = self.catch_up
        if catch_up is None or not bars:
            context = self.engine.rules.quiet()
        else:
            context = catch_up.replaying(bars[-1].time + length_ms)
        with context:
            for bar in bars:
                self.engine.on_history(feed, bar, length_ms)

    def state(self, feed: str, state: FeedState, t_ms: int) -> None:
        """Take a change of a feed's health."""
        if self.states.get(feed) == state:
            return
        self.states[feed] = state
        log.info("%s: feed %s at %s", feed, state, iso_time(t_ms))
        self.engine.rules.set_feed_state(feed, state, t_ms)
        if self._on_state is not None:
            self._on_state(feed, state, t_ms)

    def bad_frame(self, feed: str, reason: str, detail: str) -> None:
        """Count a skipped frame (logged at most once a minute per reason)."""
        self.bad_frames.add(feed, reason, detail)
