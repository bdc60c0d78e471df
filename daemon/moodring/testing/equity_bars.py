"""Intraday equity bars synthesised from real data: real daily bars, shaped by real crypto bars.

Real intraday equity bars are not in ``../shared/data``; ``session_bars`` makes them from two
real series, and says exactly how:

1. Every day of ``daily`` (real daily equity bars, e.g. Yahoo ^RUT) that is an NYSE session
   day is cut into bars of ``length_ms`` from the session's open (09:30 New York) to its
   close (16:00, 13:00 on half days); the last bar of a session may be shorter. Holidays
   and weekends get no bars.
2. The path inside a session is that of ``shape`` (real crypto bars, e.g. Binance ETHUSDT
   5m) over the same UTC clock times: each synthetic bar takes the open of the first, the
   highest high, the lowest low, the close of the last and the summed volume of the shape
   bars that open inside it (an empty one stays flat at the previous close). When the shape
   does not cover a session, the session borrows the same UTC clock times of a date the
   shape does cover: the (day's ordinal mod N)-th of the N dates that cover it.
3. That path is moved onto the real day, in logarithms: the shape's own open-to-close drift
   is replaced by the straight line from the real open to the real close, and the moves
   above and below that line are scaled so the highest one reaches the real high's distance
   above max(open, close) and the lowest the real low's distance below min(open, close).
   The first bar opens at the real open and the last closes at the real close; every bar
   lies inside the real day's low and high (they are reached only when the shape's extreme
   falls where the line is highest or lowest).
4. Prices are rounded to cents and then to float32, as Yahoo sends them (so they cross the
   streamer's protobuf exactly); the real day's volume is split over its bars in proportion
   to the shape's volume (equally when the shape traded nothing), in whole units that add up
   to the day's volume.

The result is deterministic. Run it from the shell to write a CSV the fake Yahoo replays::

    python -m moodring.testing.equity_bars --daily RUT.csv --shape ETHUSDT-5m.csv \
        [--from 2023-03-20] [--to 2023-03-29] [--interval 5m] --out rut_5m.csv
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from collections.abc import Sequence
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np

from moodring.backtest.csvfile import CsvError, load_csv
from moodring.market.calendar import MarketCalendar
from moodring.market.frame import BarFrame
from moodring.market.timeframe import Timeframe
from moodring.times import iso_time

__all__ = ["bar_length_ms", "main", "session_bars", "write_csv"]

_DAY_MS = 86_400_000


def bar_length_ms(times: np.ndarray) -> int:
    """Return the most common step between consecutive bar times (the bar length)."""
    steps = np.diff(times)
    steps = steps[steps > 0]
    if steps.size == 0:
        raise ValueError("need at least two bars to tell their length")
    values, counts = np.unique(steps, return_counts=True)
    return int(values[np.argmax(counts)])


def _to_price(values: np.ndarray) -> np.ndarray:
    """Round prices to cents, then to float32 (returned as float64)."""
    return np.round(values, 2).astype(np.float32).astype(np.float64)


class _Shape:
    """The crypto bars a session's path is taken from, with the dates they cover."""

    def __init__(self, shape: BarFrame) -> None:
        if len(shape) < 2:
            raise ValueError("the shape needs at least two bars")
        if np.any(np.diff(shape.time) <= 0):
            raise ValueError("the shape's bar times must increase")
        self.bars = shape
        self.length_ms = bar_length_ms(shape.time)
        self.first_day = int(shape.time[0]) // _DAY_MS
        self.last_day = int(shape.time[-1]) // _DAY_MS

    def covers(self, start_ms: int, end_ms: int) -> bool:
        """Tell whether the shape has bars from ``start_ms`` to ``end_ms``."""
        return (
            int(self.bars.time[0]) <= start_ms
            and int(self.bars.time[-1]) + self.length_ms >= end_ms
        )

    def shift_for(self, open_ms: int, close_ms: int, ordinal: int) -> int:
        """Return the whole-day shift that maps a session onto times the shape covers."""
        if self.covers(open_ms, close_ms):
            return 0
        day = open_ms // _DAY_MS
        shifts = [
            (day - donor) * _DAY_MS
            for donor in range(self.first_day, self.last_day + 1)
            if self.covers(open_ms - (day - donor) * _DAY_MS, close_ms - (day - donor) * _DAY_MS)
        ]
        if not shifts:
            hours = (close_ms - open_ms) / 3_600_000
            raise ValueError(f"the shape covers no whole {hours:g} h session on any of its dates")
        return shifts[ordinal % len(shifts)]

    def slots(
        self, starts: np.ndarray, ends: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Aggregate the shape bars opening in each ``[start, end)``: o, h, l, c, volume."""
        bars = self.bars
        lo = np.searchsorted(bars.time, starts, "left")
        hi = np.searchsorted(bars.time, ends, "left")
        n = starts.size
        o, h, low, c, v = (np.empty(n) for _ in range(5))
        before = max(int(lo[0]) - 1, 0)
        last = float(bars.close[before]) if int(lo[0]) > 0 else float(bars.open[0])
        for j in range(n):
            a, b = int(lo[j]), int(hi[j])
            if a == b:
                o[j] = h[j] = low[j] = c[j] = last
                v[j] = 0.0
                continue
            o[j] = bars.open[a]
            h[j] = bars.high[a:b].max()
            low[j] = bars.low[a:b].min()
            c[j] = last = float(bars.close[b - 1])
            v[j] = bars.volume[a:b].sum()
        return o, h, low, c, v


def _fit_day(
    real: tuple[float, float, float, float],
    fraction_open: np.ndarray,
    fraction_close: np.ndarray,
    fraction_mid: np.ndarray,
    path: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Move a session's shape path onto the real day's open, high, low and close (step 3)."""
    day_open, day_high, day_low, day_close = (math.log(x) for x in real)
    yo, yh, yl, yc = (np.log(np.maximum(x, 1e-300)) for x in path)
    y_first, y_last = float(yo[0]), float(yc[-1])

    def detrended(y: np.ndarray, fraction: np.ndarray) -> np.ndarray:
        return y - (y_first + fraction * (y_last - y_first))

    uo, uc = detrended(yo, fraction_open), detrended(yc, fraction_close)
    uh, ul = detrended(yh, fraction_mid), detrended(yl, fraction_mid)
    moves = np.concatenate([uo, uh, ul, uc])
    up = max(day_high - max(day_open, day_close), 0.0)
    down = max(min(day_open, day_close) - day_low, 0.0)
    top, bottom = float(moves.max()), float(moves.min())
    scale_up = up / top if top > 0 else 0.0
    scale_down = down / -bottom if bottom < 0 else 0.0

    def placed(u: np.ndarray, fraction: np.ndarray) -> np.ndarray:
        line = day_open + fraction * (day_close - day_open)
        return np.exp(line + np.where(u >= 0, scale_up * u, scale_down * u))

    o, c = placed(uo, fraction_open), placed(uc, fraction_close)
    h = np.maximum(placed(uh, fraction_mid), np.maximum(o, c))
    low = np.minimum(placed(ul, fraction_mid), np.minimum(o, c))
    return o, h, low, c


def _split_volume(total: float, weights: np.ndarray) -> np.ndarray:
    """Split a volume over bars in proportion to ``weights``, in whole units adding up to it."""
    weights = np.where(weights > 0, weights, 0.0)
    if weights.sum() <= 0:
        weights = np.ones_like(weights)
    cumulative = np.round(total * np.cumsum(weights) / weights.sum())
    return np.diff(np.concatenate([[0.0], cumulative]))


def session_bars(
    daily: BarFrame,
    shape: BarFrame,
    *,
    length_ms: int = 300_000,
    calendar: MarketCalendar | None = None,
) -> BarFrame:
    """Synthesise intraday bars of each NYSE session in ``daily``, shaped by ``shape``."""
    if length_ms <= 0:
        raise ValueError("the bar length must be positive")
    if len(daily) and np.any(daily.time % _DAY_MS):
        raise ValueError("daily bars must open at 00:00 UTC (one row per date)")
    calendar = calendar or MarketCalendar()
    source = _Shape(shape)
    if source.length_ms > length_ms:
        raise ValueError(
            f"the shape's bars ({source.length_ms // 60_000} min) are longer than the "
            f"{length_ms // 60_000} min bars asked for"
        )
    columns: list[list[np.ndarray]] = [[] for _ in range(6)]
    for row in range(len(daily)):
        day = datetime.fromtimestamp(int(daily.time[row]) / 1000, UTC).date()
        bounds = calendar.session(day)
        if bounds is None:
            continue
        open_ms, close_ms = bounds
        starts = np.arange(open_ms, close_ms, length_ms, dtype=np.int64)
        ends = np.minimum(starts + length_ms, close_ms)
        shift = source.shift_for(open_ms, close_ms, day.toordinal())
        path = source.slots(starts - shift, ends - shift)
        span = float(close_ms - open_ms)
        real = tuple(float(x[row]) for x in (daily.open, daily.high, daily.low, daily.close))
        o, h, low, c = _fit_day(
            (real[0], real[1], real[2], real[3]),
            (starts - open_ms) / span,
            (ends - open_ms) / span,
            ((starts + ends) / 2 - open_ms) / span,
            path[:4],
        )
        volume = _split_volume(float(daily.volume[row]), path[4])
        for column, values in zip(columns, (starts, o, h, low, c, volume), strict=True):
            column.append(values)
    if not columns[0]:
        empty = np.zeros(0)
        return BarFrame(np.zeros(0, dtype=np.int64), empty, empty, empty, empty, empty)
    time = np.concatenate(columns[0]).astype(np.int64)
    o, h, low, c = (_to_price(np.concatenate(x)) for x in columns[1:5])
    return BarFrame(time, o, h, low, c, np.concatenate(columns[5]))


def write_csv(bars: BarFrame, path: str | Path) -> None:
    """Write bars as ``timestamp,open,high,low,close,volume`` (what ``load_csv`` reads)."""
    with Path(path).open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(("timestamp", "open", "high", "low", "close", "volume"))
        for row in zip(
            bars.time.tolist(),
            *(x.tolist() for x in (bars.open, bars.high, bars.low, bars.close, bars.volume)),
            strict=True,
        ):
            writer.writerow((iso_time(row[0]), *(repr(float(x)) for x in row[1:])))


def _day_ms(text: str) -> int:
    """Parse ``YYYY-MM-DD`` as 00:00 UTC of that date, in epoch ms."""
    day = date.fromisoformat(text)
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()) * 1000


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: write synthesised intraday equity bars to a CSV."""
    parser = argparse.ArgumentParser(
        prog="python -m moodring.testing.equity_bars",
        description="Synthesise intraday NYSE-session bars from real daily bars and the "
        "path of real crypto bars (see the module docstring for exactly how).",
    )
    parser.add_argument("--daily", required=True, type=Path, help="real daily equity bars")
    parser.add_argument("--shape", required=True, type=Path, help="real intraday crypto bars")
    parser.add_argument("--from", dest="start", help="first date (YYYY-MM-DD)")
    parser.add_argument("--to", dest="end", help="date after the last one (YYYY-MM-DD)")
    parser.add_argument("--interval", default="5m", help="bar length (default 5m)")
    parser.add_argument("--out", required=True, type=Path, help="CSV file to write")
    args = parser.parse_args(argv)
    try:
        start = _day_ms(args.start) if args.start else None
        end = _day_ms(args.end) if args.end else None
    except ValueError:
        parser.error("--from and --to take dates as YYYY-MM-DD")
    try:
        length = Timeframe.parse(args.interval).ms
    except ValueError as exc:
        parser.error(f"--interval: {exc}")
    try:
        daily = load_csv(args.daily).bars.between(start, end)
        shape = load_csv(args.shape).bars
        bars = session_bars(daily, shape, length_ms=length)
    except (CsvError, ValueError, OSError) as exc:
        print(f"equity_bars: {exc}", file=sys.stderr)
        return 2
    write_csv(bars, args.out)
    print(f"wrote {len(bars)} bars to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
