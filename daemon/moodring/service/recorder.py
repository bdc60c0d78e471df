"""``--record DIR``: every closed bar appended to a CSV that ``moodring backtest`` reads."""

from __future__ import annotations

import csv
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from moodring.market.bar import Bar
from moodring.market.builder import BarBuilder
from moodring.times import iso_time

TAIL_BYTES = 4096  # read from a record file's end to find its last bar
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
            # a restart appends after the bars the run before wrote (its warm-up replays them)
            self._last[str(path)] = -1 if new else last_recorded(path)
            out = self._files[str(path)] = path.open("a", newline="", buffering=1)
            if new:
                csv.writer(out).writerow(HEADER)
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


def last_recorded(path: Path) -> int:
    """Return the open time of the last bar in a record file (-1 if none can be read)."""
    with path.open("rb") as f:
        f.seek(max(0, f.seek(0, 2) - TAIL_BYTES))
        tail = f.read().decode("utf-8", "replace")
    for line in reversed(tail.splitlines()):
        try:
            moment = datetime.fromisoformat(line.split(",", 1)[0])
        except ValueError:
            continue  # the header, or a line cut short
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return int(moment.timestamp() * 1000)
    return -1
