"""Load an altcoin universe for backtests: a folder of daily CSVs named ``<BASE><QUOTE>_1d.csv``."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from moodring.backtest.csvfile import CsvError, load_csv
from moodring.market.frame import BarFrame
from moodring.metrics.altseason import DAY_MS
from moodring.times import iso_time

__all__ = ["UniverseCoin", "coin_files", "load_universe"]

log = logging.getLogger(__name__)

_FILE = re.compile(r"^(?P<symbol>[A-Za-z0-9]+)_1d\.csv$")


@dataclass(frozen=True, slots=True)
class UniverseCoin:
    """One coin of the universe: its base asset, the file it came from and its daily bars."""

    base: str
    path: Path
    bars: BarFrame

    def daily(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return (open times, closes, base volumes), the form ``altseason_series`` takes."""
        return self.bars.time, self.bars.close, self.bars.volume


def coin_files(path: str | Path, quote: str = "USDT") -> dict[str, Path]:
    """Return base asset -> file for ``<BASE><QUOTE>_1d.csv`` in a folder (or one such file)."""
    path = Path(path)
    files = sorted(path.iterdir()) if path.is_dir() else [path]
    found: dict[str, Path] = {}
    for file in files:
        match = _FILE.match(file.name)
        if match is None:
            if not path.is_dir():
                raise CsvError(file, None, "a universe file must be named <BASE><QUOTE>_1d.csv")
            continue
        symbol = match["symbol"].upper()
        if not symbol.endswith(quote.upper()) or symbol == quote.upper():
            log.warning("%s: not a %s market: skipped", file, quote)
            continue
        found[symbol[: -len(quote)]] = file
    return found


def load_universe(paths: Iterable[str | Path], quote: str = "USDT") -> dict[str, UniverseCoin]:
    """Load the daily bars of every coin in these folders/files; a coin may appear only once."""
    coins: dict[str, UniverseCoin] = {}
    for path in paths:
        for base, file in coin_files(path, quote).items():
            if base in coins:
                raise CsvError(file, None, f"{base} is already loaded from {coins[base].path}")
            loaded = load_csv(file)
            for line, reason in loaded.skipped:
                log.warning("%s:%d: row skipped: %s", file, line, reason)
            bars = loaded.bars
            off = np.flatnonzero(bars.time % DAY_MS)
            if off.size:
                when = iso_time(int(bars.time[off[0]]))
                raise CsvError(file, None, f"bar at {when} does not open at 00:00 UTC: not daily")
            coins[base] = UniverseCoin(base, file, bars)
    return coins
