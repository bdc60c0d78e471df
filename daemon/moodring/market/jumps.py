"""Price jumps: a closed bar whose close moved more than a feed's ``max_jump`` in one bar."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from moodring.times import iso_time


class Jump(NamedTuple):
    """A suspect bar: its close is more than ``limit`` (a fraction) away from the previous."""

    feed: str
    timeframe: str
    time: int
    previous: float
    close: float
    limit: float

    def describe(self) -> str:
        """Return the log line that reports the jump."""
        move = 100.0 * (self.close / self.previous - 1.0)
        return (
            f"{self.feed} {self.timeframe} bar {iso_time(self.time)}: close {self.close:.6g} "
            f"is {move:+.1f}% from the previous close {self.previous:.6g} (max_jump "
            f"{100.0 * self.limit:g}%): suspect bar, rules reading it are muted for this bar"
        )


def jumped(previous: float, close: float, limit: float) -> bool:
    """Return whether ``close`` is more than ``limit`` (a fraction) away from ``previous``."""
    return abs(close / previous - 1.0) > limit


def jump_rows(close: np.ndarray, limit: float) -> np.ndarray:
    """Return the indices of the closes more than ``limit`` away from the close before them."""
    if close.shape[0] < 2:
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero(np.abs(close[1:] / close[:-1] - 1.0) > limit) + 1
