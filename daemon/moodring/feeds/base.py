"""What a feed hands on: trades, candles, its health, and the frames it had to skip."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from moodring.feedstate import FeedState
from moodring.market.bar import Bar


class FeedSink(Protocol):
    """Where a feed delivers; the daemon passes these on to the engine and the logs."""

    def trade(self, feed: str, t_ms: int, price: float, amount: float, trade_id: object) -> None:
        """Take one trade."""

    def candle(self, feed: str, bar: Bar, *, closed: bool, length_ms: int) -> None:
        """Take one exchange candle (a forming or closed kline of a live stream)."""

    def history(self, feed: str, bars: Sequence[Bar], *, length_ms: int) -> None:
        """Take closed history bars (warm-up): they fill windows but send no alerts."""

    def state(self, feed: str, state: FeedState, t_ms: int) -> None:
        """Take a change of the feed's health."""

    def bad_frame(self, feed: str, reason: str, detail: str) -> None:
        """Count a frame that was skipped, and why."""
