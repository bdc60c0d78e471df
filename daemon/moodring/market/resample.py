"""Aggregation of history bars into a coarser timeframe, as the bar builder would do it."""

from __future__ import annotations

import numpy as np

from moodring.market.frame import BarFrame
from moodring.market.timeframe import Timeframe


def infer_step(times: np.ndarray) -> int:
    """Return the most common gap between consecutive bar times (the data's bar length)."""
    if times.shape[0] < 2:
        raise ValueError("need at least two bars to tell their timeframe")
    gaps, counts = np.unique(np.diff(times), return_counts=True)
    return int(gaps[np.argmax(counts)])


def resample(bars: BarFrame, step_ms: int, timeframe: Timeframe) -> BarFrame:
    """Return the closed ``timeframe`` bars made of ``bars`` (each ``step_ms`` long).

    A bucket closes when a later bucket starts or when its last bar ends at the bucket's
    end, exactly like ``BarBuilder.add_candle`` with closed candles, so the last bucket is
    dropped while it is still incomplete.
    """
    if step_ms > timeframe.ms:
        raise ValueError(
            f"data bars of {step_ms // 60_000} min cannot make {timeframe} bars: "
            "the data is coarser than the timeframe"
        )
    n = len(bars)
    if n == 0:
        return bars
    t = bars.time
    start = t - (t - timeframe.offset_ms) % timeframe.ms
    if step_ms == timeframe.ms and np.array_equal(start, t):
        return bars
    first = np.flatnonzero(np.r_[True, start[1:] != start[:-1]])
    last = np.r_[first[1:] - 1, n - 1]
    keep = len(first) if t[-1] + step_ms >= start[-1] + timeframe.ms else len(first) - 1
    return BarFrame(
        start[first][:keep],
        bars.open[first][:keep],
        np.maximum.reduceat(bars.high, first)[:keep],
        np.minimum.reduceat(bars.low, first)[:keep],
        bars.close[last][:keep],
        np.add.reduceat(bars.volume, first)[:keep],
    )
