"""The feed sink of the daemon: feed events into the engine, health into logs and rules."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from moodring.engine import Engine
from moodring.feeds.base import FeedState
from moodring.feeds.health import BadFrames
from moodring.market.bar import Bar
from moodring.times import iso_time

log = logging.getLogger("moodring.feeds")


class EngineSink:
    """Passes trades and candles to the engine; feed states to the rules and the log."""

    def __init__(self, engine: Engine, bad_frames: BadFrames | None = None) -> None:
        self.engine = engine
        self.bad_frames = bad_frames or BadFrames()
        self.states: dict[str, FeedState] = {}

    def trade(self, feed: str, t_ms: int, price: float, amount: float, trade_id: object) -> None:
        """Take one trade."""
        self.engine.on_trade(feed, t_ms, price, amount, trade_id)

    def candle(self, feed: str, bar: Bar, *, closed: bool, length_ms: int) -> None:
        """Take one live candle."""
        self.engine.on_candle(feed, bar.time, bar, closed=closed, length_ms=length_ms)

    def history(self, feed: str, bars: Sequence[Bar], *, length_ms: int) -> None:
        """Take warm-up bars: they fill the windows, their alerts are not sent."""
        with self.engine.rules.quiet():
            for bar in bars:
                self.engine.on_candle(feed, bar.time, bar, closed=True, length_ms=length_ms)

    def state(self, feed: str, state: FeedState, t_ms: int) -> None:
        """Take a change of a feed's health."""
        if self.states.get(feed) == state:
            return
        self.states[feed] = state
        log.info("%s: feed %s at %s", feed, state, iso_time(t_ms))
        self.engine.rules.set_feed_state(feed, state, t_ms)

    def bad_frame(self, feed: str, reason: str, detail: str) -> None:
        """Count a skipped frame (logged at most once a minute per reason)."""
        self.bad_frames.add(feed, reason, detail)
