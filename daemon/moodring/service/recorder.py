"""``--record DIR``: every closed bar appended to a CSV that ``moodring backtest`` reads."""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import TextIO

from moodring.market.bar import Bar
from moodring.market.builder import BarBuilder
from moodring.times import iso_time

HEADER = ("timestamp", "open", "high", "low", "close", "volume")

log = logging.getLogger("moodring.recorder")


class BarRecorder:
    """Appends closed bars to ``DIR/<feed>_<timeframe>.csv`` (header written once)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self._files: dict[str, TextIO] = {}
        self._last: dict[str, int] = {}  # open time of the last bar written, per file
        self.unwritten = 0  # bars a failing disk kept out of the files

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
            try:
                writer.writerow((iso_time(bar.time), *(repr(float(x)) for x in bar[1:])))
            except OSError as exc:  # a full disk must not reach the feed that closed the bar
                if not self.unwritten:
                    log.error("%s: bars not recorded from %s on: %s", path, iso_time(bar.time), exc)
                self.unwritten += 1
                return
            if self.unwritten:
                log.warning("%s: recording again; %d bar(s) missing", path, self.unwritten)
                self.unwritten = 0

        builder.subscribe(record)

    def close(self) -> None:
        """Flush and close every file."""
        for out in self._files.values():
            out.close()
        self._files.clear()
