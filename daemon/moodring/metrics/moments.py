"""Rolling first and second moments of paired returns, without drift."""

from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from moodring.market.bar import NAN


class PairMoments:
    """Running Σx, Σy, Σx², Σy², Σxy over the latest ``window`` pairs.

    The sums are recomputed exactly from the ring every time it wraps, and at once when
    an evicted pair held most of the sum of squares, so rounding never accumulates beyond
    one window nor outweighs what is left; and once a whole
    window of x (or y) is exactly 0 (a flat price) its sums are exactly 0, so a flat
    series reads as zero variance, not as rounding residue.
    """

    __slots__ = (
        "_i",
        "_xs",
        "_ys",
        "count",
        "flat_x",
        "flat_y",
        "sx",
        "sxx",
        "sxy",
        "sy",
        "syy",
        "window",
    )

    def __init__(self, window: int) -> None:
        if window < 2:
            raise ValueError("window must be at least 2")
        self.window = window
        self._xs = [0.0] * window
        self._ys = [0.0] * window
        self._i = 0
        self.count = 0
        self.flat_x = 0
        self.flat_y = 0
        self.sx = self.sy = self.sxx = self.syy = self.sxy = 0.0

    def clear(self) -> None:
        """Forget every pair: the window fills again from the next push."""
        self._xs = [0.0] * self.window
        self._ys = [0.0] * self.window
        self._i = 0
        self.count = 0
        self.flat_x = 0
        self.flat_y = 0
        self.sx = self.sy = self.sxx = self.syy = self.sxy = 0.0

    @property
    def full(self) -> bool:
        """Return whether ``window`` pairs have been pushed."""
        return self.count >= self.window

    def push(self, x: float, y: float) -> None:
        """Add a pair, evicting the oldest once the window is full."""
        i = self._i
        xs, ys = self._xs, self._ys
        ox, oy = xs[i], ys[i]
        xs[i] = x
        ys[i] = y
        self.sx += x - ox
        self.sy += y - oy
        self.sxx += x * x - ox * ox
        self.syy += y * y - oy * oy
        self.sxy += x * y - ox * oy
        if self.count < self.window:
            self.count += 1
        i += 1
        if i == self.window:
            i = 0
            self._recompute()
        elif ox * ox + oy * oy > 0.5 * (self.sxx + self.syy + ox * ox + oy * oy):
            # the evicted pair was most of the window: its rounding would dominate the rest
            self._recompute()
        self._i = i
        self.flat_x = self.flat_x + 1 if x == 0.0 else 0
        self.flat_y = self.flat_y + 1 if y == 0.0 else 0
        if self.flat_x >= self.window:
            self.sx = self.sxx = self.sxy = 0.0
        if self.flat_y >= self.window:
            self.sy = self.syy = self.sxy = 0.0

    def flat_with(self, x: float, y: float) -> bool:
        """Return whether pushing (x, y) would leave a whole window of x or of y at 0."""
        w = self.window - 1
        return (x == 0.0 and self.flat_x >= w) or (y == 0.0 and self.flat_y >= w)

    def oldest(self) -> tuple[float, float]:
        """Return the pair the next push evicts (zeros while the window is filling)."""
        i = self._i
        return self._xs[i], self._ys[i]

    def _recompute(self) -> None:
        xs, ys = self._xs, self._ys
        self.sx = math.fsum(xs)
        self.sy = math.fsum(ys)
        self.sxx = math.fsum([x * x for x in xs])
        self.syy = math.fsum([y * y for y in ys])
        self.sxy = math.fsum([x * y for x, y in zip(xs, ys, strict=True)])


def covariances(
    n: int, sx: float, sy: float, sxx: float, syy: float, sxy: float
) -> tuple[float, float, float]:
    """Return (var x, var y, cov xy) with ddof=1 from raw sums over ``n`` pairs."""
    d = n - 1
    return (sxx - sx * sx / n) / d, (syy - sy * sy / n) / d, (sxy - sx * sy / n) / d


def correlation_of(vx: float, vy: float, cxy: float) -> float:
    """Return Pearson's r from variances and covariance; NaN for a flat series."""
    if vx <= 0.0 or vy <= 0.0:
        return NAN
    return cxy / math.sqrt(vx * vy)


def gap_returns(after_gap: np.ndarray | None, n: int) -> np.ndarray:
    """Return per return (``n``, one per bar after the first) whether it spans a data gap."""
    if after_gap is None:
        return np.zeros(n, dtype=bool)
    return after_gap[1:]


def spoiled(gaps: np.ndarray, window: int) -> np.ndarray:
    """Return per return whether the ``window`` returns ending there include a gap's."""
    seen = np.cumsum(gaps)
    before = np.zeros_like(seen)
    before[window:] = seen[:-window]
    return seen > before


def rolling_moments(
    x: np.ndarray, y: np.ndarray, window: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return (vx, vy, cxy, mean x, mean y) over each full window ending at each index.

    Entries before the first full window are NaN; sums are pairwise per window, so the
    batch path has no drift either.
    """
    n = x.shape[0]
    out = [np.full(n, np.nan) for _ in range(5)]
    if n < window:
        return out[0], out[1], out[2], out[3], out[4]
    wx = sliding_window_view(x, window)
    wy = sliding_window_view(y, window)
    sx, sy = wx.sum(axis=1), wy.sum(axis=1)
    sxx, syy, sxy = (wx * wx).sum(axis=1), (wy * wy).sum(axis=1), (wx * wy).sum(axis=1)
    d = window - 1
    sl = slice(window - 1, None)
    out[0][sl] = (sxx - sx * sx / window) / d
    out[1][sl] = (syy - sy * sy / window) / d
    out[2][sl] = (sxy - sx * sy / window) / d
    out[3][sl] = sx / window
    out[4][sl] = sy / window
    return out[0], out[1], out[2], out[3], out[4]
