"""Divergence of series a from series b: OLS residual z-score, opposite moves, swing structure."""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from pydantic import Field

from moodring.market.bar import NAN, Bar
from moodring.market.frame import BarFrame
from moodring.market.ring import RingBuffer
from moodring.metrics.base import PairIndicator, register_metric
from moodring.metrics.moments import (
    PairMoments,
    covariances,
    gap_returns,
    rolling_moments,
    spoiled,
)
from moodring.settings import PairInput


class Divergence(PairIndicator):
    """How far a has come apart from b, on bars joined by open time.

    Outputs:

    - ``residual_z``: a's latest log return minus the rolling-OLS fit on b's (intercept and
      beta over the last ``window`` returns), in standard deviations of that window's residuals;
    - ``beta``: the OLS beta of a's returns on b's over the window;
    - ``opposite``: +1 when over ``lookback`` bars a rose and b fell, -1 for the reverse, and
      only when the two cumulative returns are at least ``threshold`` apart; else 0;
    - ``swing``: +1 when b's last ``lookback`` bars make a higher high than the ``lookback``
      before them while a's make a lower low; -1 for b lower low with a higher high; else 0.

    A pair after a data gap starts the OLS window afresh (no return across the gap):
    ``residual_z`` and ``beta`` are undefined until ``window`` returns follow the gap.
    """

    __slots__ = (
        "_a_closes",
        "_b_closes",
        "_cache",
        "_count",
        "_i",
        "_moments",
        "_prev_a",
        "_prev_b",
        "_rings",
        "lookback",
        "threshold",
        "values",
    )
    outputs: ClassVar[tuple[str, ...]] = ("residual_z", "beta", "opposite", "swing")

    def __init__(self, window: int, lookback: int = 20, threshold: float = 0.05) -> None:
        if lookback < 2:
            raise ValueError("lookback must be at least 2")
        self._moments = PairMoments(window)
        self.lookback = lookback
        self.threshold = threshold
        self._prev_a = NAN
        self._prev_b = NAN
        self._a_closes = [NAN] * lookback
        self._b_closes = [NAN] * lookback
        self._i = 0
        self._count = 0
        # a high, a low, b high, b low of the last 2 * lookback bars
        self._rings = tuple(RingBuffer(2 * lookback) for _ in range(4))
        # extremes of the closed bars that a forming bar's two windows would hold
        self._cache: tuple[float, ...] | None = None
        self.values: tuple[float, ...] = (NAN, NAN, NAN, NAN)

    def update_bars(self, a: Bar, b: Bar, after_gap: bool = False) -> None:
        """Fold a closed pair of joined bars."""
        z = beta = NAN
        pa, pb = self._prev_a, self._prev_b
        self._prev_a, self._prev_b = a.close, b.close
        if after_gap:
            self._moments.clear()
        elif pa == pa:
            m = self._moments
            x, y = math.log(a.close / pa), math.log(b.close / pb)
            m.push(x, y)
            if m.full:
                n = m.window
                vx, vy, cxy = covariances(n, m.sx, m.sy, m.sxx, m.syy, m.sxy)
                z, beta = residual_z(x, y, m.sx / n, m.sy / n, vx, vy, cxy)
        opposite = self._opposite(a.close, b.close)
        i = self._i
        self._a_closes[i] = a.close
        self._b_closes[i] = b.close
        self._i = (i + 1) % self.lookback
        self._count += 1
        for ring, value in zip(self._rings, (a.high, a.low, b.high, b.low), strict=True):
            ring.push(value)
        self.values = (z, beta, opposite, self._closed_swing())
        self._cache = self._forming_extremes()

    def peek_bars(self, a: Bar, b: Bar, after_gap: bool = False) -> tuple[float, ...]:
        """Return the outputs including the forming pair."""
        z = beta = NAN
        m = self._moments
        n = m.window
        pa = self._prev_a
        if pa == pa and m.count + 1 >= n and not after_gap:
            x = math.log(a.close / pa)
            y = math.log(b.close / self._prev_b)
            if y == 0.0 and m.flat_y >= n - 1:
                pass  # b flat over the window: no fit
            elif x == 0.0 and m.flat_x >= n - 1:
                beta = 0.0  # a flat: nothing to explain, no residual spread
            else:
                ox, oy = m.oldest()
                sx = m.sx + x - ox
                sy = m.sy + y - oy
                d = n - 1
                vy = (m.syy + y * y - oy * oy - sy * sy / n) / d
                if vy > 0.0:
                    cxy = (m.sxy + x * y - ox * oy - sx * sy / n) / d
                    beta = cxy / vy
                    var_e = (m.sxx + x * x - ox * ox - sx * sx / n) / d - beta * cxy
                    if var_e > 0.0:
                        z = ((x - sx / n) - beta * (y - sy / n)) / math.sqrt(var_e)
        swing = NAN
        c = self._cache
        if c is not None:
            bear = (b.high > c[5] or c[4] > c[5]) and (a.low < c[3] or c[2] < c[3])
            bull = (b.low < c[7] or c[6] < c[7]) and (a.high > c[1] or c[0] > c[1])
            swing = 1.0 if bear and not bull else -1.0 if bull and not bear else 0.0
        return (z, beta, self._opposite(a.close, b.close), swing)

    def _opposite(self, a_close: float, b_close: float) -> float:
        if self._count < self.lookback:
            return NAN
        i = self._i
        return opposite_moves(
            a_close / self._a_closes[i] - 1.0, b_close / self._b_closes[i] - 1.0, self.threshold
        )

    def _closed_swing(self) -> float:
        k = self.lookback
        if self._count < 2 * k:
            return NAN
        ah, al, bh, bl = (ring.window() for ring in self._rings)
        return swing_state(
            bh[k:].max() > bh[:k].max(),
            al[k:].min() < al[:k].min(),
            bl[k:].min() < bl[:k].min(),
            ah[k:].max() > ah[:k].max(),
        )

    def _forming_extremes(self) -> tuple[float, ...] | None:
        k = self.lookback
        if self._count < 2 * k - 1:
            return None
        ah, al, bh, bl = (ring.window(2 * k - 1) for ring in self._rings)
        return (
            float(ah[k:].max()),
            float(ah[:k].max()),
            float(al[k:].min()),
            float(al[:k].min()),
            float(bh[k:].max()),
            float(bh[:k].max()),
            float(bl[k:].min()),
            float(bl[:k].min()),
        )

    def batch(self, a: BarFrame, b: BarFrame, after_gap: np.ndarray | None = None) -> np.ndarray:
        """Return the four outputs after each joined pair."""
        n, k = len(a), self.lookback
        out = np.full((n, 4), np.nan)
        if n >= 2:
            gaps = gap_returns(after_gap, n - 1)
            x = np.where(gaps, 0.0, np.diff(np.log(a.close)))
            y = np.where(gaps, 0.0, np.diff(np.log(b.close)))
            window = self._moments.window
            vx, vy, cxy, mx, my = rolling_moments(x, y, window)
            with np.errstate(invalid="ignore", divide="ignore"):
                beta = np.where(vy > 0, cxy / vy, np.nan)
                var_e = vx - beta * cxy
                z = ((x - mx) - beta * (y - my)) / np.sqrt(np.where(var_e > 0, var_e, np.nan))
            cut = spoiled(gaps, window)
            z[cut] = np.nan
            beta[cut] = np.nan
            out[1:, 0] = z
            out[1:, 1] = beta
        if n > k:
            ca = a.close[k:] / a.close[:-k] - 1.0
            cb = b.close[k:] / b.close[:-k] - 1.0
            t = self.threshold
            up = (ca > 0) & (cb < 0) & (ca - cb >= t)
            down = (ca < 0) & (cb > 0) & (cb - ca >= t)
            out[k:, 2] = np.where(up, 1.0, np.where(down, -1.0, 0.0))
        if n >= 2 * k:

            def recent_vs_prior(v: np.ndarray, highest: bool) -> np.ndarray:
                w = sliding_window_view(v, k)
                ext = w.max(axis=1) if highest else w.min(axis=1)
                newer: np.ndarray = ext[k:] > ext[:-k] if highest else ext[k:] < ext[:-k]
                return newer

            b_hh = recent_vs_prior(b.high, True)
            a_ll = recent_vs_prior(a.low, False)
            b_ll = recent_vs_prior(b.low, False)
            a_hh = recent_vs_prior(a.high, True)
            bear = b_hh & a_ll
            bull = b_ll & a_hh
            out[2 * k - 1 :, 3] = np.where(bear & ~bull, 1.0, np.where(bull & ~bear, -1.0, 0.0))
        return out


def residual_z(
    x: float, y: float, mx: float, my: float, vx: float, vy: float, cxy: float
) -> tuple[float, float]:
    """Return (z-score of the latest OLS residual, beta) from window moments (ddof=1)."""
    if vy <= 0.0:
        return NAN, NAN
    beta = cxy / vy
    var_e = vx - beta * cxy
    if var_e <= 0.0:
        return NAN, beta
    return ((x - mx) - beta * (y - my)) / math.sqrt(var_e), beta


def opposite_moves(ca: float, cb: float, threshold: float) -> float:
    """Return +1 if a rose while b fell (by ``threshold`` apart), -1 for the reverse, else 0."""
    if ca > 0.0 > cb and ca - cb >= threshold:
        return 1.0
    if ca < 0.0 < cb and cb - ca >= threshold:
        return -1.0
    return 0.0


def swing_state(
    b_higher_high: bool, a_lower_low: bool, b_lower_low: bool, a_higher_high: bool
) -> float:
    """Return +1 for b higher high with a lower low, -1 for the mirror, 0 otherwise or both."""
    bear = b_higher_high and a_lower_low
    bull = b_lower_low and a_higher_high
    if bear and not bull:
        return 1.0
    if bull and not bear:
        return -1.0
    return 0.0


class DivergenceConfig(PairInput):
    """Residual z-score, opposite moves and swing structure of a against b."""

    type: Literal["divergence"]
    outputs: ClassVar[tuple[str, ...]] = Divergence.outputs
    window: int = Field(30, ge=2)
    lookback: int = Field(20, ge=2)
    threshold: float = Field(0.05, ge=0)

    def history(self) -> int:
        """Return the bars looked back over."""
        return max(self.window + 1, 2 * self.lookback)


register_metric(
    "divergence",
    DivergenceConfig,
    lambda config: Divergence(config.window, config.lookback, config.threshold),
)
