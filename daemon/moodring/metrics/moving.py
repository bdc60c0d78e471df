"""Moving averages, percent change, z-score and moving-average cross of a series' close."""

from __future__ import annotations

import math
from abc import abstractmethod
from typing import ClassVar, Literal

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from pydantic import Field, model_validator

from moodring.market.bar import NAN, Bar
from moodring.market.frame import BarFrame
from moodring.metrics.base import Indicator, register_metric
from moodring.settings import SingleInput


class _CloseIndicator(Indicator):
    """An indicator of the close alone."""

    __slots__ = ()

    @abstractmethod
    def update(self, close: float) -> None:
        """Fold a closed bar's close."""

    @abstractmethod
    def peek(self, close: float) -> float:
        """Return the value if a bar closed at ``close`` now."""

    @abstractmethod
    def batch_close(self, close: np.ndarray) -> np.ndarray:
        """Return the value after each close."""

    def update_bar(self, bar: Bar) -> None:
        """Fold a closed bar."""
        self.update(bar.close)

    def peek_bar(self, bar: Bar) -> tuple[float, ...]:
        """Return the outputs including the forming bar."""
        return (self.peek(bar.close),)

    def batch(self, bars: BarFrame) -> np.ndarray:
        """Return the value after each closed bar."""
        return self.batch_close(bars.close)[:, None]


class SMA(_CloseIndicator):
    """Simple moving average of the last ``period`` closes."""

    __slots__ = ("_count", "_i", "_ring", "_sum", "period", "value")
    value: float

    def __init__(self, period: int) -> None:
        if period < 1:
            raise ValueError("period must be at least 1")
        self.period = period
        self._ring = [0.0] * period
        self._i = 0
        self._count = 0
        self._sum = 0.0
        self.value = NAN

    def update(self, close: float) -> None:
        """Fold a closed bar's close."""
        i = self._i
        old = self._ring[i]
        self._sum += close - old
        self._ring[i] = close
        i += 1
        if i == self.period or abs(old) > abs(self._sum):
            # every wrap, and when the evicted close outweighed what is left of the sum
            i %= self.period
            self._sum = math.fsum(self._ring)
        self._i = i
        if self._count < self.period:
            self._count += 1
        if self._count == self.period:
            self.value = self._sum / self.period

    def peek(self, close: float) -> float:
        """Return the average if a bar closed at ``close`` now."""
        if self._count + 1 < self.period:
            return NAN
        return (self._sum - self._ring[self._i] + close) / self.period

    def batch_close(self, close: np.ndarray) -> np.ndarray:
        """Return the average after each close."""
        out = np.full(close.shape[0], np.nan)
        if close.shape[0] >= self.period:
            out[self.period - 1 :] = sliding_window_view(close, self.period).mean(axis=1)
        return out


class EMA(_CloseIndicator):
    """Exponential moving average seeded, like TA-Lib, with the SMA of the first ``period``."""

    __slots__ = ("_count", "_k", "_sum", "period", "value")
    value: float

    def __init__(self, period: int) -> None:
        if period < 1:
            raise ValueError("period must be at least 1")
        self.period = period
        self._k = 2.0 / (period + 1)
        self._count = 0
        self._sum = 0.0
        self.value = NAN

    def update(self, close: float) -> None:
        """Fold a closed bar's close."""
        if self._count >= self.period:
            self.value = (close - self.value) * self._k + self.value
            return
        self._count += 1
        self._sum += close
        if self._count == self.period:
            self.value = self._sum / self.period

    def peek(self, close: float) -> float:
        """Return the average if a bar closed at ``close`` now."""
        if self._count >= self.period:
            return (close - self.value) * self._k + self.value
        if self._count + 1 == self.period:
            return (self._sum + close) / self.period
        return NAN

    def batch_close(self, close: np.ndarray) -> np.ndarray:
        """Return the average after each close (a sequential recurrence, so a loop)."""
        out = np.full(close.shape[0], np.nan)
        p = self.period
        if close.shape[0] < p:
            return out
        value = float(np.sum(close[:p])) / p
        out[p - 1] = value
        k = self._k
        values = close.tolist()
        for j in range(p, len(values)):
            value = (values[j] - value) * k + value
            out[j] = value
        return out


class PctChange(_CloseIndicator):
    """Percent change of the close over the last ``lookback`` bars."""

    __slots__ = ("_count", "_i", "_ring", "lookback", "value")
    value: float

    def __init__(self, lookback: int) -> None:
        if lookback < 1:
            raise ValueError("lookback must be at least 1")
        self.lookback = lookback
        self._ring = [NAN] * lookback
        self._i = 0
        self._count = 0
        self.value = NAN

    def update(self, close: float) -> None:
        """Fold a closed bar's close."""
        self.value = self.peek(close)
        self._ring[self._i] = close
        self._i = (self._i + 1) % self.lookback

    def peek(self, close: float) -> float:
        """Return the change if a bar closed at ``close`` now."""
        return 100.0 * (close / self._ring[self._i] - 1.0)

    def batch_close(self, close: np.ndarray) -> np.ndarray:
        """Return the change after each close."""
        out = np.full(close.shape[0], np.nan)
        k = self.lookback
        out[k:] = 100.0 * (close[k:] / close[:-k] - 1.0)
        return out


class ZScore(_CloseIndicator):
    """How many sample standard deviations the close is from the mean of the last ``window``.

    Sums are kept relative to an anchor (a recent close, re-set at each exact recompute),
    so prices in the thousands with tiny spreads lose nothing to cancellation, and a
    window of equal closes has exactly zero spread (no value), not rounding residue.
    """

    __slots__ = ("_anchor", "_count", "_flat", "_i", "_ring", "_s1", "_s2", "value", "window")
    value: float

    def __init__(self, window: int) -> None:
        if window < 2:
            raise ValueError("window must be at least 2")
        self.window = window
        self._ring = [0.0] * window
        self._i = 0
        self._count = 0
        self._flat = 0
        self._anchor = NAN
        self._s1 = 0.0
        self._s2 = 0.0
        self.value = NAN

    def update(self, close: float) -> None:
        """Fold a closed bar's close."""
        a = self._anchor
        if a != a:
            a = self._anchor = close
        i = self._i
        old = self._ring[i] - a if self._count >= self.window else 0.0
        self._flat = self._flat + 1 if close == self._ring[i - 1] and self._count else 0
        x = close - a
        self._s1 += x - old
        self._s2 += x * x - old * old
        self._ring[i] = close
        i += 1
        if i == self.window or old * old > 0.5 * self._s2:
            i %= self.window
            self._recompute(close)
        self._i = i
        if self._count < self.window:
            self._count += 1
        if self._count == self.window:
            self.value = self._z(close - self._anchor, self._s1, self._s2, self._flat)

    def peek(self, close: float) -> float:
        """Return the z-score if a bar closed at ``close`` now."""
        if self._count + 1 < self.window:
            return NAN
        i = self._i
        a = self._anchor
        old = self._ring[i] - a if self._count >= self.window else 0.0
        flat = self._flat + 1 if close == self._ring[i - 1] else 0
        x = close - a
        return self._z(x, self._s1 + x - old, self._s2 + x * x - old * old, flat)

    def _z(self, x: float, s1: float, s2: float, flat: int) -> float:
        n = self.window
        if flat >= n - 1:
            return NAN
        var = (s2 - s1 * s1 / n) / (n - 1)
        if var <= 0.0:
            return NAN
        return (x - s1 / n) / math.sqrt(var)

    def _recompute(self, anchor: float) -> None:
        self._anchor = anchor
        ring = self._ring
        self._s1 = math.fsum([v - anchor for v in ring])
        self._s2 = math.fsum([(v - anchor) * (v - anchor) for v in ring])

    def batch_close(self, close: np.ndarray) -> np.ndarray:
        """Return the z-score after each close (each window anchored at its last close)."""
        n, w = close.shape[0], self.window
        out = np.full(n, np.nan)
        if n < w:
            return out
        windows = sliding_window_view(close, w)
        for start in range(0, windows.shape[0], 65536):
            win = windows[start : start + 65536]
            d = win - win[:, -1:]
            s1 = d.sum(axis=1)
            var = ((d * d).sum(axis=1) - s1 * s1 / w) / (w - 1)
            with np.errstate(invalid="ignore", divide="ignore"):
                z = np.where(var > 0, -(s1 / w) / np.sqrt(var), np.nan)
            out[w - 1 + start : w - 1 + start + win.shape[0]] = z
        return out


class MACross(Indicator):
    """A fast and a slow moving average: their spread and which one is on top (+1/-1/0)."""

    __slots__ = ("_fast", "_slow")
    outputs: ClassVar[tuple[str, ...]] = ("spread", "position")

    def __init__(self, fast: int, slow: int, kind: Literal["sma", "ema"] = "sma") -> None:
        if fast >= slow:
            raise ValueError("fast period must be shorter than slow period")
        average = SMA if kind == "sma" else EMA
        self._fast = average(fast)
        self._slow = average(slow)

    @property
    def values(self) -> tuple[float, ...]:
        """Return (spread, position) after the latest closed bar."""
        return _cross(self._fast.value, self._slow.value)

    def update_bar(self, bar: Bar) -> None:
        """Fold a closed bar."""
        self._fast.update(bar.close)
        self._slow.update(bar.close)

    def peek_bar(self, bar: Bar) -> tuple[float, ...]:
        """Return the outputs including the forming bar."""
        return _cross(self._fast.peek(bar.close), self._slow.peek(bar.close))

    def batch(self, bars: BarFrame) -> np.ndarray:
        """Return (spread, position) after each closed bar."""
        slow = self._slow.batch_close(bars.close)
        spread = self._fast.batch_close(bars.close) - slow
        tie = np.abs(spread) <= _TIE * np.abs(slow)
        position = np.where(tie, 0.0, np.sign(spread))
        return np.column_stack((spread, np.where(np.isnan(spread), np.nan, position)))


# Averages closer than this share of the slow one are equal: their last bits depend on
# summation order, and the position must not flip on rounding.
_TIE = 1e-12


def _cross(fast: float, slow: float) -> tuple[float, float]:
    spread = fast - slow
    if spread != spread:
        return (NAN, NAN)
    if abs(spread) <= _TIE * abs(slow):
        return (spread, 0.0)
    return (spread, 1.0 if spread > 0 else -1.0)


class AverageConfig(SingleInput):
    """A simple or exponential moving average of the close."""

    type: Literal["sma", "ema"]
    period: int = Field(ge=1)

    def history(self) -> int:
        """Return the bars looked back over."""
        return self.period


class PctChangeConfig(SingleInput):
    """Percent change of the close over ``lookback`` bars."""

    type: Literal["pct_change"]
    lookback: int = Field(ge=1)

    def history(self) -> int:
        """Return the bars looked back over."""
        return self.lookback + 1


class ZScoreConfig(SingleInput):
    """Z-score of the close over ``window`` bars."""

    type: Literal["zscore"]
    window: int = Field(ge=2)

    def history(self) -> int:
        """Return the bars looked back over."""
        return self.window


class MACrossConfig(SingleInput):
    """Spread and position of a fast against a slow moving average."""

    type: Literal["ma_cross"]
    outputs: ClassVar[tuple[str, ...]] = MACross.outputs
    fast: int = Field(ge=1)
    slow: int = Field(ge=2)
    kind: Literal["sma", "ema"] = "sma"

    @model_validator(mode="after")
    def _fast_below_slow(self) -> MACrossConfig:
        if self.fast >= self.slow:
            raise ValueError("fast must be shorter than slow")
        return self

    def history(self) -> int:
        """Return the bars looked back over."""
        return self.slow


register_metric("sma", AverageConfig, lambda config: SMA(config.period))
register_metric("ema", AverageConfig, lambda config: EMA(config.period))
register_metric("pct_change", PctChangeConfig, lambda config: PctChange(config.lookback))
register_metric("zscore", ZScoreConfig, lambda config: ZScore(config.window))
register_metric(
    "ma_cross", MACrossConfig, lambda config: MACross(config.fast, config.slow, config.kind)
)
