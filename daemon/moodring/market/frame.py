"""Columnar OHLCV bars, the form history takes in backtests and warm-ups."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class BarFrame:
    """Bars as columns: open time in epoch milliseconds (int64) and float64 OHLCV."""

    time: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray

    def __len__(self) -> int:
        return int(self.time.shape[0])

    def slice(self, start: int, stop: int) -> BarFrame:
        """Return rows ``start:stop`` as a new frame (views, no copy)."""
        return BarFrame(
            self.time[start:stop],
            self.open[start:stop],
            self.high[start:stop],
            self.low[start:stop],
            self.close[start:stop],
            self.volume[start:stop],
        )

    def take(self, index: np.ndarray) -> BarFrame:
        """Return the rows at ``index`` as a new frame."""
        return BarFrame(
            self.time[index],
            self.open[index],
            self.high[index],
            self.low[index],
            self.close[index],
            self.volume[index],
        )

    def between(self, start_ms: int | None, end_ms: int | None) -> BarFrame:
        """Return the bars whose open time lies in ``[start_ms, end_ms)``."""
        lo = 0 if start_ms is None else int(np.searchsorted(self.time, start_ms, "left"))
        hi = len(self) if end_ms is None else int(np.searchsorted(self.time, end_ms, "left"))
        return self.slice(lo, hi)


def join_frames(a: BarFrame, b: BarFrame) -> tuple[BarFrame, BarFrame]:
    """Inner-join two frames on bar open time; both results have the same times."""
    _, ia, ib = np.intersect1d(a.time, b.time, assume_unique=True, return_indices=True)
    return a.take(ia), b.take(ib)


def ratio_frame(a: BarFrame, b: BarFrame) -> BarFrame:
    """Return the close-only frame of ``a.close / b.close`` on joined times."""
    ja, jb = join_frames(a, b)
    r = ja.close / jb.close
    return BarFrame(ja.time, r, r, r, r, np.zeros_like(r))
