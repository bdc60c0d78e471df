"""Rolling Pearson correlation of two series' log returns on joined bars."""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from pydantic import Field

from moodring.market.bar import NAN, Bar
from moodring.market.frame import BarFrame
from moodring.metrics.base import PairIndicator, register_metric
from moodring.metrics.moments import (
    PairMoments,
    correlation_of,
    covariances,
    gap_returns,
    rolling_moments,
    spoiled,
)
from moodring.settings import PairInput


class Correlation(PairIndicator):
    """Correlation of log returns of consecutive joined bars over the last ``window`` returns.

    A pair that comes after a data gap starts the window afresh: the return across the gap
    is not taken, and the value is undefined until ``window`` returns follow the gap.
    """

    __slots__ = ("_moments", "_prev_a", "_prev_b", "value")
    value: float

    def __init__(self, window: int) -> None:
        self._moments = PairMoments(window)
        self._prev_a = NAN
        self._prev_b = NAN
        self.value = NAN

    def update(self, a_close: float, b_close: float, after_gap: bool = False) -> None:
        """Fold the closes of a joined pair of closed bars."""
        pa, pb = self._prev_a, self._prev_b
        self._prev_a, self._prev_b = a_close, b_close
        m = self._moments
        if after_gap:
            m.clear()
            self.value = NAN
            return
        if pa != pa:
            return
        m.push(math.log(a_close / pa), math.log(b_close / pb))
        if m.full:
            n = m.count
            self.value = correlation_of(*covariances(n, m.sx, m.sy, m.sxx, m.syy, m.sxy))

    def peek(self, a_close: float, b_close: float, after_gap: bool = False) -> float:
        """Return the correlation if the forming pair closed at these prices."""
        m = self._moments
        pa = self._prev_a
        n = m.window
        if after_gap:
            return NAN
        if pa != pa or m.count + 1 < n:
            return self.value
        x = math.log(a_close / pa)
        y = math.log(b_close / self._prev_b)
        if m.flat_with(x, y):
            return NAN
        ox, oy = m.oldest()
        sx = m.sx + x - ox
        sy = m.sy + y - oy
        vx = m.sxx + x * x - ox * ox - sx * sx / n
        vy = m.syy + y * y - oy * oy - sy * sy / n
        if vx <= 0.0 or vy <= 0.0:
            return NAN
        return (m.sxy + x * y - ox * oy - sx * sy / n) / math.sqrt(vx * vy)

    def update_bars(self, a: Bar, b: Bar, after_gap: bool = False) -> None:
        """Fold a closed pair of joined bars."""
        self.update(a.close, b.close, after_gap)

    def peek_bars(self, a: Bar, b: Bar, after_gap: bool = False) -> tuple[float, ...]:
        """Return the outputs including the forming pair."""
        return (self.peek(a.close, b.close, after_gap),)

    def batch(self, a: BarFrame, b: BarFrame, after_gap: np.ndarray | None = None) -> np.ndarray:
        """Return the correlation after each joined bar."""
        out = np.full((len(a), 1), np.nan)
        if len(a) < 2:
            return out
        gaps = gap_returns(after_gap, len(a) - 1)
        x = np.where(gaps, 0.0, np.diff(np.log(a.close)))
        y = np.where(gaps, 0.0, np.diff(np.log(b.close)))
        window = self._moments.window
        vx, vy, cxy, _, _ = rolling_moments(x, y, window)
        with np.errstate(invalid="ignore", divide="ignore"):
            r = np.where((vx > 0) & (vy > 0), cxy / np.sqrt(vx * vy), np.nan)
        r[spoiled(gaps, window)] = np.nan
        out[1:, 0] = r
        return out


class CorrelationConfig(PairInput):
    """Pearson correlation of log returns of a and b on bars joined by open time."""

    type: Literal["correlation"]
    window: int = Field(30, ge=2)

    def history(self) -> int:
        """Return the bars looked back over."""
        return self.window + 1


register_metric("correlation", CorrelationConfig, lambda config: Correlation(config.window))
