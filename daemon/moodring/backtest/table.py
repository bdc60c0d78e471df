"""The metrics table a backtest produces: one row per closed bar time, one column per output."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from moodring.times import iso_time


@dataclass(slots=True)
class MetricTable:
    """Metric outputs by bar open time (epoch ms); NaN where a metric has no value then.

    ``bars`` tells, per column, the rows where its metric closed a bar (its value, or NaN
    while undefined); a column missing from it closed a bar wherever it has a value.
    """

    time: np.ndarray
    columns: dict[str, np.ndarray] = field(default_factory=dict)
    bars: dict[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def from_series(cls, series: dict[str, tuple[np.ndarray, np.ndarray]]) -> MetricTable:
        """Build a table from ``name -> (times, values)``; each times array sorted and unique."""
        distinct = list({id(t): t for t, _ in series.values()}.values())
        if not distinct:
            return cls(np.empty(0, np.int64))
        union = np.concatenate(distinct)
        union.sort(kind="stable")  # merges the sorted runs
        union = union[np.r_[True, union[1:] != union[:-1]]]
        rows = {id(t): np.searchsorted(union, t) for t in distinct}
        columns: dict[str, np.ndarray] = {}
        bars: dict[str, np.ndarray] = {}
        for name, (t, values) in series.items():
            column = np.full(union.shape[0], np.nan)
            column[rows[id(t)]] = values
            columns[name] = column
            bars[name] = np.zeros(union.shape[0], bool)
            bars[name][rows[id(t)]] = True
        return cls(union, columns, bars)

    def series(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Return ``name -> (times, values)`` at the rows where each column closed a bar."""
        out = {}
        for name, column in self.columns.items():
            rows = self.had_bar(name)
            out[name] = (self.time[rows], column[rows])
        return out

    def had_bar(self, name: str) -> np.ndarray:
        """Return a column's rows where its metric closed a bar, as a boolean mask."""
        found = self.bars.get(name)
        return ~np.isnan(self.columns[name]) if found is None else found

    def between(self, start_ms: int | None, end_ms: int | None) -> MetricTable:
        """Return the rows with ``start_ms <= time < end_ms``."""
        lo = 0 if start_ms is None else int(np.searchsorted(self.time, start_ms, "left"))
        hi = len(self.time) if end_ms is None else int(np.searchsorted(self.time, end_ms, "left"))
        return MetricTable(
            self.time[lo:hi],
            {k: v[lo:hi] for k, v in self.columns.items()},
            {k: v[lo:hi] for k, v in self.bars.items()},
        )

    def write_csv(self, path: str | Path) -> None:
        """Write ``time`` (ISO-8601 UTC) and one column per output; empty where no value."""
        names = list(self.columns)
        with open(path, "w", newline="") as out:
            writer = csv.writer(out)
            writer.writerow(["time", *names])
            columns = [self.columns[n].tolist() for n in names]
            for i, t in enumerate(self.time.tolist()):
                row = [iso_time(t)]
                row.extend("" if math.isnan(c[i]) else repr(c[i]) for c in columns)
                writer.writerow(row)
