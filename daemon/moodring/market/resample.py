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


def merge_rows(bars: BarFrame, step_ms: int) -> tuple[BarFrame, np.ndarray]:
    """Put rows on the open time of their ``step_ms`` bar, merging rows that share one.

    Rows in one bar (a file stamped at bar close times, ``…:59:59.999``, with a row missing
    or doubled) merge as an exchange aggregates: first open, highest high, lowest low, last
    close, summed volume. Return the bars and the open times of those that took several rows.
    """
    tf = Timeframe.of_length(step_ms)
    t = bars.time
    start = t - (t - tf.offset_ms) % tf.ms
    if not t.shape[0]:
        return bars, start
    first = np.flatnonzero(np.r_[True, start[1:] != start[:-1]])
    if first.shape[0] == t.shape[0]:
        if np.array_equal(start, t):
            return bars, start[:0]
        return BarFrame(start, bars.open, bars.high, bars.low, bars.close, bars.volume), start[:0]
    last = np.r_[first[1:] - 1, t.shape[0] - 1]
    merged = BarFrame(
        start[first],
        bars.open[first],
        np.maximum.reduceat(bars.high, first),
        np.minimum.reduceat(bars.low, first),
        bars.close[last],
        np.add.reduceat(bars.volume, first),
    )
    return merged, start[first][last > first]
