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
    """Metric outputs by bar open time (epoch ms); NaN where a metric has no value then."""

    time: np.ndarray
    columns: dict[str, np.ndarray] = field(default_factory=dict)

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
        for name, (t, values) in series.items():
            column = np.full(union.shape[0], np.nan)
            column[rows[id(t)]] = values
            columns[name] = column
        return cls(union, columns)

    def between(self, start_ms: int | None, end_ms: int | None) -> MetricTable:
        """Return the rows with ``start_ms <= time < end_ms``."""
        lo = 0 if start_ms is None else int(np.searchsorted(self.time, start_ms, "left"))
        hi = len(self.time) if end_ms is None else int(np.searchsorted(self.time, end_ms, "left"))
        return MetricTable(self.time[lo:hi], {k: v[lo:hi] for k, v in self.columns.items()})

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
