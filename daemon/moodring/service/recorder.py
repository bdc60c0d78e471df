"""``--record DIR``: every closed bar appended to a CSV that ``moodring backtest`` reads."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import TextIO

from moodring.market.bar import Bar
from moodring.market.builder import BarBuilder
from moodring.times import iso_time

HEADER = ("timestamp", "open", "high", "low", "close", "volume")


class BarRecorder:
    """Appends closed bars to ``DIR/<feed>_<timeframe>.csv`` (header written once)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self._files: dict[str, TextIO] = {}
        self._last: dict[str, int] = {}  # open time of the last bar written, per file

    def attach(self, feed: str, builder: BarBuilder) -> None:
        """Record the closed bars of one builder."""
        path = self.directory / f"{feed}_{builder.timeframe}.csv"
        out = self._files.get(str(path))  # a builder replaced on reload keeps the file
        if out is None:
            new = not path.exists() or path.stat().st_size == 0
            out = self._files[str(path)] = path.open("a", newline="", buffering=1)
            if new:
                csv.writer(out).writerow(HEADER)
            self._last[str(path)] = -1
        writer = csv.writer(out)
        last = self._last
        key = str(path)

        def record(bar: Bar) -> None:
            if bar.time <= last[key]:
                return
            last[key] = bar.time
            writer.writerow((iso_time(bar.time), *(repr(float(x)) for x in bar[1:])))

        builder.subscribe(record)

    def close(self) -> None:
        """Flush and close every file."""
        for out in self._files.values():
            out.close()
        self._files.clear()
