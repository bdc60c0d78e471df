"""Relative Strength Index, exactly as TA-Lib computes it (Wilder's smoothing)."""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
from pydantic import Field

from moodring.market.bar import NAN, Bar
from moodring.market.frame import BarFrame
from moodring.metrics.base import Indicator, register_metric
from moodring.settings import SingleInput


class RSI(Indicator):
    """TA-Lib's RSI of the close: first value after ``period`` + 1 bars.

    The first averages of gains and losses are the means of the first ``period`` changes;
    each later change is folded in as (average * (period - 1) + change) / period, in
    TA-Lib's order of operations, dividing as its build does (times 1 / period), so that
    values agree to the last bit. No gain and no loss gives 0. The averages remember every
    bar, so a value depends on where the history starts; ten periods on, the start weighs
    under 0.01 %.
    """

    __slots__ = ("_changes", "_gain", "_loss", "_per", "_prev", "period", "value")
    value: float

    def __init__(self, period: int = 14) -> None:
        if period < 2:
            raise ValueError("period must be at least 2")
        self.period = period
        self._per = 1.0 / period
        self._changes = 0
        self._gain = 0.0
        self._loss = 0.0
        self._prev = NAN
        self.value = NAN

    def update(self, close: float) -> None:
        """Fold a closed bar's close."""
        prev, self._prev = self._prev, close
        if prev != prev:
            return  # the first bar only sets the previous close
        gain, loss = self._step(close - prev)
        self._gain, self._loss = gain, loss
        self._changes += 1
        if self._changes >= self.period:
            self.value = _rsi(gain, loss)

    def peek(self, close: float) -> float:
        """Return the RSI if a bar closed at ``close`` now."""
        prev = self._prev
        if prev != prev or self._changes + 1 < self.period:
            return NAN
        return _rsi(*self._step(close - prev))

    def _step(self, change: float) -> tuple[float, float]:
        """Return the (gain, loss) sums or averages after one more close-to-close ``change``.

        Before ``period`` changes they are sums, made means at the ``period``-th; after
        that, Wilder's smoothing.
        """
        gain, loss, period = self._gain, self._loss, self.period
        if self._changes >= period:
            gain *= period - 1
            loss *= period - 1
        if change < 0.0:
            loss -= change
        else:
            gain += change
        if self._changes + 1 >= period:
            gain *= self._per
            loss *= self._per
        return gain, loss

    def update_bar(self, bar: Bar) -> None:
        """Fold a closed bar."""
        self.update(bar.close)

    def peek_bar(self, bar: Bar) -> tuple[float, ...]:
        """Return the outputs including the forming bar."""
        return (self.peek(bar.close),)

    def batch(self, bars: BarFrame) -> np.ndarray:
        """Return the RSI after each closed bar (a sequential recurrence, so a loop)."""
        rsi = RSI(self.period)
        out = np.full((len(bars), 1), np.nan)
        for i, close in enumerate(bars.close.tolist()):
            rsi.update(close)
            out[i, 0] = rsi.value
        return out


def _rsi(gain: float, loss: float) -> float:
    total = gain + loss
    return 100.0 * (gain / total) if total != 0.0 else 0.0


class RSIConfig(SingleInput):
    """TA-Lib's Relative Strength Index of the close."""

    type: Literal["rsi"]
    label: ClassVar[str] = "RSI"
    period: int = Field(14, ge=2)

    def history(self) -> int:
        """Return the bars kept and warmed up: ten periods, so the seed has faded."""
        return 10 * self.period


register_metric("rsi", RSIConfig, lambda config: RSI(config.period))
