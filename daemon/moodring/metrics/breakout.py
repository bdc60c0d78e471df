"""Channel breakout: the close against the previous ``lookback`` bars' range."""

from __future__ import annotations

from typing import Literal

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from pydantic import Field

from moodring.market.bar import NAN, Bar
from moodring.market.frame import BarFrame
from moodring.market.ring import RingBuffer
from moodring.metrics.base import Indicator, register_metric
from moodring.settings import SingleInput


class Breakout(Indicator):
    """+1 when the close tops the previous ``lookback`` bars' high, -1 below their lowest low.

    On close-only series (ratios) high = low = close, so the channel is on closes.
    """

    __slots__ = ("_bottom", "_highs", "_lows", "_top", "lookback", "value")
    value: float

    def __init__(self, lookback: int) -> None:
        if lookback < 1:
            raise ValueError("lookback must be at least 1")
        self.lookback = lookback
        self._highs = RingBuffer(lookback)
        self._lows = RingBuffer(lookback)
        self._top = NAN
        self._bottom = NAN
        self.value = NAN

    def update(self, high: float, low: float, close: float) -> None:
        """Fold a closed bar; the channel then moves on to include it."""
        self.value = self.peek(close)
        self._highs.push(high)
        self._lows.push(low)
        if len(self._highs) == self.lookback:
            self._top = float(self._highs.window().max())
            self._bottom = float(self._lows.window().min())

    def peek(self, close: float) -> float:
        """Return the breakout state of a bar closing at ``close`` now."""
        top = self._top
        if top != top:
            return NAN
        if close > top:
            return 1.0
        if close < self._bottom:
            return -1.0
        return 0.0

    def update_bar(self, bar: Bar) -> None:
        """Fold a closed bar."""
        self.update(bar.high, bar.low, bar.close)

    def peek_bar(self, bar: Bar) -> tuple[float, ...]:
        """Return the outputs including the forming bar."""
        return (self.peek(bar.close),)

    def batch(self, bars: BarFrame) -> np.ndarray:
        """Return the breakout state after each closed bar."""
        n, k = len(bars), self.lookback
        out = np.full((n, 1), np.nan)
        if n <= k:
            return out
        top = sliding_window_view(bars.high, k).max(axis=1)[:-1]
        bottom = sliding_window_view(bars.low, k).min(axis=1)[:-1]
        close = bars.close[k:]
        out[k:, 0] = np.where(close > top, 1.0, np.where(close < bottom, -1.0, 0.0))
        return out


class BreakoutConfig(SingleInput):
    """+1/-1 when the close leaves the previous ``lookback`` bars' range."""

    type: Literal["breakout"]
    lookback: int = Field(20, ge=1)

    def history(self) -> int:
        """Return the bars looked back over."""
        return self.lookback + 1


register_metric("breakout", BreakoutConfig, lambda config: Breakout(config.lookback))
