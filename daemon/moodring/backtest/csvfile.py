"""Load OHLCV history CSV files (Binance, Yahoo/yfinance, Kraken and similar) into a BarFrame."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import repeat
from operator import itemgetter
from pathlib import Path

import numpy as np

from moodring.errors import MoodringError
from moodring.market.frame import BarFrame

__all__ = ["CsvError", "LoadedCsv", "load_csv"]

# Time column names (after normalisation), best first.
_TIME_COLUMNS = ("timestamp", "open_time", "date", "datetime", "time")
# The value columns of a full OHLCV file, in BarFrame order.
_VALUE_COLUMNS = ("open", "high", "low", "close", "volume")
# Cell texts (stripped, lower-cased) that mean "no value" in Yahoo's no-data rows.
_NO_DATA = frozenset({"", "null", "nan"})
# First characters that make a data line need a closer look (blank, comment, indented).
_SPECIAL_START = frozenset({"", "#", " ", "\t", "\r"})
_FIRST_CHAR = itemgetter(slice(0, 1))
# Rows converted per batch: bounds the memory held as text.
_CHUNK = 1 << 16
# Rows per block when a batch has a problem to find, before going row by row.
_BLOCK = 1 << 10

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)
_DAY_MS = 86_400_000
# The datetime range (years 1..9999) in epoch ms; epoch numbers must land inside it.
_MIN_MS = (datetime(1, 1, 1, tzinfo=UTC) - _EPOCH) // _ONE_MS
_MAX_MS = (datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=UTC) - _EPOCH) // _ONE_MS
_MONTH_DAYS = np.array([31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], dtype=np.int64)
_DATE_DIGITS = [0, 1, 2, 3, 5, 6, 8, 9]
_CLOCK_DIGITS = [11, 12, 14, 15, 17, 18]


class CsvError(MoodringError, ValueError):
    """A CSV file that cannot be read as bars; names the file and, when known, the line."""

    path: Path
    line: int | None
    message: str

    def __init__(self, path: Path, line: int | None, message: str) -> None:
        self.path = path
        self.line = line
        self.message = message
        where = f"{path}" if line is None else f"{path}:{line}"
        super().__init__(f"{where}: {message}")

    def __reduce__(self) -> tuple[type[CsvError], tuple[Path, int | None, str]]:
        """Pickle by the constructor arguments."""
        return (CsvError, (self.path, self.line, self.message))


@dataclass(frozen=True, slots=True)
class LoadedCsv:
    """The bars of a CSV file, the rows skipped as "no data", and whether it gave only closes."""

    bars: BarFrame
    skipped: tuple[tuple[int, str], ...]
    close_only: bool = False


def load_csv(path: str | Path) -> LoadedCsv:
    """Load an OHLCV (or close-only) CSV file into bars; raise CsvError on anything malformed."""
    path = Path(path)
    lines = _read_lines(path)
    layout = _find_layout(path, lines)
    end = len(lines)
    while end > layout.data_start and not lines[end - 1].strip():
        end -= 1  # trailing blank lines (at least the "" after the final newline)
    batches = [_Batch.empty(len(layout.value_indices))]
    skipped: list[tuple[int, str]] = []
    pending: CsvError | None = None
    for start in range(layout.data_start, end, _CHUNK):
        chunk = lines[start : min(start + _CHUNK, end)]
        split = _split_clean(chunk, layout)
        if split is not None:
            times, texts = split
            row_lines = np.arange(start + 1, start + 1 + len(chunk), dtype=np.int64)
            broken = None
        else:
            times, texts, row_lines, broken = _split_rows(path, chunk, start, layout)
        batch, skips, error = _convert(path, lines, times, texts, row_lines, layout)
        batches.append(batch)
        skipped.extend(skips)
        # A bad value comes before the line that broke the chunk's splitting.
        pending = error or broken
        if pending is not None:
            break

    whole = _Batch.concat(batches)
    stamp, values = whole.time, whole.values
    earlier = _first_range_error(path, lines, whole.lines, stamp, values, layout)
    if earlier is not None:
        raise earlier
    if pending is not None:
        raise pending
    if stamp.size == 0:
        extra = f" ({len(skipped)} rows skipped as no data)" if skipped else ""
        message = f"no data rows after the header on line {layout.header_line}{extra}"
        raise CsvError(path, None, message)
    if layout.close_only:
        (close,) = values
        values = [close.copy(), close.copy(), close.copy(), close, np.zeros_like(close)]
    return LoadedCsv(BarFrame(stamp, *values), tuple(skipped), layout.close_only)


# --------------------------------------------------------------------------- reading the header


@dataclass(frozen=True, slots=True)
class _Layout:
    """Where the header and the needed columns are."""

    header_line: int  # 1-based line of the row that names the columns
    data_start: int  # 0-based index of the first line after the header rows
    width: int
    names: tuple[str, ...]
    time_index: int
    value_indices: tuple[int, ...]  # open, high, low, close, volume; or close alone
    close_only: bool


def _read_lines(path: Path) -> list[str]:
    """Read the file as text lines (universal newlines, BOM dropped)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CsvError(path, None, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise CsvError(path, None, f"cannot read it: {reason[:1].lower()}{reason[1:]}") from None
    return text.split("\n")


def _is_skippable(line: str) -> bool:
    """Tell whether a line is blank or a ``#`` comment."""
    stripped = line.strip()
    return not stripped or stripped[0] == "#"


def _split(line: str) -> list[str]:
    """Split one CSV line into cells (the csv module handles quoted cells)."""
    if '"' not in line:
        return line.split(",")
    return next(csv.reader([line], strict=True))


def _normalise(name: str) -> str:
    """Normalise a header cell: strip, lower-case, spaces and dashes to underscores."""
    return name.strip().lower().replace(" ", "_").replace("-", "_")


def _find_layout(path: Path, lines: list[str]) -> _Layout:
    """Locate the header (plain or yfinance three-row) and resolve the needed columns."""
    header: list[tuple[int, list[str]]] = []
    for index, line in enumerate(lines):
        if _is_skippable(line):
            continue
        try:
            header.append((index, _split(line)))
        except csv.Error as exc:
            raise CsvError(path, index + 1, f"malformed CSV: {exc}") from None
        if len(header) == 3:
            break
    if not header:
        raise CsvError(path, None, "empty file: no header row")

    header_index, first = header[0]
    header_line = header_index + 1
    names = tuple(cell.strip() for cell in first)
    normalised = [_normalise(cell) for cell in first]
    data_start = header_line
    time_index: int | None = None
    if (
        len(header) == 3
        and _normalise(header[1][1][0]) == "ticker"
        and _normalise(header[2][1][0]) in _TIME_COLUMNS
        and not any(cell.strip() for cell in header[2][1][1:])
    ):
        # yfinance multi-index CSV: names on row 1, tickers on row 2, the index name on row 3.
        time_index = 0
        names = (header[2][1][0].strip(), *names[1:])
        normalised[0] = _normalise(header[2][1][0])
        data_start = header[2][0] + 1

    positions: dict[str, list[int]] = {}
    for column, name in enumerate(normalised):
        positions.setdefault(name, []).append(column)
    found = ", ".join(repr(name) for name in names)

    def single(name: str) -> int:
        where = positions[name]
        if len(where) > 1:
            message = f"column {name!r} appears {len(where)} times; columns found: {found}"
            raise CsvError(path, header_line, message)
        return where[0]

    if time_index is None:
        time_index = next((single(n) for n in _TIME_COLUMNS if n in positions), None)
    missing = [name for name in _VALUE_COLUMNS if name not in positions]
    if time_index is None or "close" in missing:
        lacks = [] if time_index is not None else [f"a time column ({'/'.join(_TIME_COLUMNS)})"]
        lacks += ["'close'"] if "close" in missing else []
        message = f"header lacks {' and '.join(lacks)}; columns found: {found}"
        raise CsvError(path, header_line, message)
    close_only = len(missing) == 4
    if missing and not close_only:
        message = (
            f"header lacks {', '.join(map(repr, missing))} (give all of open, high, low, close "
            f"and volume, or only close); columns found: {found}"
        )
        raise CsvError(path, header_line, message)
    return _Layout(
        header_line=header_line,
        data_start=data_start,
        width=len(names),
        names=names,
        time_index=time_index,
        value_indices=tuple(single(n) for n in (("close",) if close_only else _VALUE_COLUMNS)),
        close_only=close_only,
    )


# --------------------------------------------------------------------------- times


def _epoch_ms(value: int | float) -> int:
    """Epoch ms of an epoch number in seconds (< 1e11), milliseconds (< 1e14) or microseconds."""
    size = abs(value)
    if isinstance(value, int):
        ms = value * 1000 if size < 10**11 else value if size < 10**14 else value // 1000
    elif size < 1e11:
        ms = round(value * 1000)
    elif size < 1e14:
        ms = round(value)
    else:
        ms = round(value / 1000)
    if not _MIN_MS <= ms <= _MAX_MS:
        raise ValueError("epoch number out of range")
    return ms


def _parse_time(text: str) -> int:
    """Parse an ISO date/datetime (naive means UTC) or an epoch number to epoch ms UTC."""
    text = text.strip()
    if text[4:5] != "-":
        try:
            return _epoch_ms(int(text))
        except ValueError:
            pass
        try:
            number = float(text)
        except ValueError:
            pass
        else:
            if number - number:  # nan or inf
                raise ValueError("not a finite number")
            return _epoch_ms(number)
    stamp = datetime.fromisoformat(text)
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return (stamp - _EPOCH) // _ONE_MS


def _iso_times(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised ``YYYY-MM-DD`` / ``YYYY-MM-DD[ T]HH:MM:SS`` parse: (epoch ms, parsed mask)."""
    array = np.array(texts)
    width = array.dtype.itemsize // 4
    if array.dtype.kind != "U" or width not in (10, 19):
        return np.zeros(len(texts), np.int64), np.zeros(len(texts), bool)
    code = array.view(np.uint32).reshape(len(texts), width).astype(np.int64)
    digit = code - 48
    ok = ((digit[:, _DATE_DIGITS] >= 0) & (digit[:, _DATE_DIGITS] <= 9)).all(axis=1)
    ok &= (code[:, 4] == 45) & (code[:, 7] == 45)  # "-"
    year = digit[:, 0] * 1000 + digit[:, 1] * 100 + digit[:, 2] * 10 + digit[:, 3]
    month = digit[:, 5] * 10 + digit[:, 6]
    day = digit[:, 8] * 10 + digit[:, 9]
    leap = ((year % 4 == 0) & (year % 100 != 0)) | (year % 400 == 0)
    month_days = _MONTH_DAYS[np.clip(month, 1, 12) - 1] + ((month == 2) & leap)
    ok &= (year >= 1) & (month >= 1) & (month <= 12) & (day >= 1) & (day <= month_days)
    # Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil).
    shifted = year - (month <= 2)
    era = shifted // 400
    year_of_era = shifted - era * 400
    day_of_year = (153 * ((month + 9) % 12) + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    ms = (era * 146_097 + day_of_era - 719_468) * _DAY_MS
    if width == 19:
        ok &= ((digit[:, _CLOCK_DIGITS] >= 0) & (digit[:, _CLOCK_DIGITS] <= 9)).all(axis=1)
        ok &= (
            ((code[:, 10] == 32) | (code[:, 10] == 84)) & (code[:, 13] == 58) & (code[:, 16] == 58)
        )
        hour = digit[:, 11] * 10 + digit[:, 12]
        minute = digit[:, 14] * 10 + digit[:, 15]
        second = digit[:, 17] * 10 + digit[:, 18]
        ok &= (hour < 24) & (minute < 60) & (second < 60)
        ms += ((hour * 60 + minute) * 60 + second) * 1000
    return ms, ok


def _integer_times(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised parse of integer epoch numbers: (epoch ms, parsed mask)."""
    number = np.fromiter(map(int, texts), dtype=np.int64, count=len(texts))
    size = np.abs(number)
    ms = np.where(size < 10**11, number * 1000, np.where(size < 10**14, number, number // 1000))
    ok = (number > -(10**18)) & (number < 10**18) & (ms >= _MIN_MS) & (ms <= _MAX_MS)
    return ms, ok


def _parse_times(texts: Sequence[str]) -> np.ndarray:
    """Parse a column of time texts to epoch ms, as ``_parse_time`` would; ValueError if bad."""
    if not texts:
        return np.zeros(0, dtype=np.int64)
    try:
        vectorised = _integer_times if texts[0][4:5] != "-" else _iso_times
        ms, ok = vectorised(texts)
    except (ValueError, OverflowError):
        ms, ok = np.zeros(len(texts), np.int64), np.zeros(len(texts), bool)
    for index in np.flatnonzero(~ok).tolist():
        ms[index] = _parse_time(texts[index])
    return ms


# --------------------------------------------------------------------------- rows


@dataclass(frozen=True, slots=True)
class _Batch:
    """Converted rows: times, value columns (as in ``_Layout.value_indices``) and line numbers."""

    time: np.ndarray
    values: list[np.ndarray]
    lines: np.ndarray

    @staticmethod
    def empty(count: int) -> _Batch:
        """Return a batch of no rows with ``count`` value columns."""
        nothing = np.zeros(0, dtype=np.int64)
        return _Batch(nothing, [np.zeros(0, dtype=np.float64) for _ in range(count)], nothing)

    @staticmethod
    def concat(batches: list[_Batch]) -> _Batch:
        """Join batches (at least one) in order."""
        values = [
            np.concatenate(column) for column in zip(*(b.values for b in batches), strict=True)
        ]
        return _Batch(
            np.concatenate([b.time for b in batches]),
            values,
            np.concatenate([b.lines for b in batches]),
        )


def _split_clean(chunk: list[str], layout: _Layout) -> tuple[list[str], list[list[str]]] | None:
    """Split a chunk of plain data lines at C speed: (times, value texts); None if not plain.

    Plain means no blank, comment or indented line, no quotes and the header's cell count on
    every line; anything else goes through ``_split_rows``.
    """
    width = layout.width
    if not _SPECIAL_START.isdisjoint(map(_FIRST_CHAR, chunk)):
        return None
    if any(count != width - 1 for count in set(map(str.count, chunk, repeat(",")))):
        return None
    joined = ",".join(chunk)
    if '"' in joined:
        return None
    cells = joined.split(",")
    times = cells[layout.time_index :: width]
    return times, [cells[index::width] for index in layout.value_indices]


def _split_rows(
    path: Path, chunk: list[str], start: int, layout: _Layout
) -> tuple[list[str], list[list[str]], np.ndarray, CsvError | None]:
    """Split a chunk line by line: (times, value texts, line numbers, error that stopped it)."""
    width = layout.width
    time_index = layout.time_index
    times: list[str] = []
    texts: list[list[str]] = [[] for _ in layout.value_indices]
    columns = list(zip(layout.value_indices, texts, strict=True))
    row_lines: list[int] = []
    error: CsvError | None = None
    for line, text in enumerate(chunk, start + 1):
        if _is_skippable(text):
            continue
        try:
            cells = _split(text)
        except csv.Error as exc:
            error = CsvError(path, line, f"malformed CSV: {exc}")
            break
        if len(cells) != width:
            message = f"expected {width} cells as in the header, found {len(cells)}"
            error = CsvError(path, line, message)
            break
        times.append(cells[time_index])
        for index, column in columns:
            column.append(cells[index])
        row_lines.append(line)
    return times, texts, np.array(row_lines, dtype=np.int64), error


def _convert(
    path: Path,
    lines: list[str],
    times: list[str],
    texts: list[list[str]],
    row_lines: np.ndarray,
    layout: _Layout,
) -> tuple[_Batch, list[tuple[int, str]], CsvError | None]:
    """Convert a batch of cell texts: the bars, rows skipped as no data, the first bad row."""
    try:
        stamp = _parse_times(times)
        values = [np.array(column, dtype=np.float64) for column in texts]
        finite = all(np.isfinite(column).all() for column in values)
    except (ValueError, OverflowError):
        finite = False
    if finite:
        return _Batch(stamp, values, row_lines), [], None
    if len(times) > _BLOCK:
        # Something is off somewhere: narrow it down to blocks before going row by row.
        batches: list[_Batch] = []
        skipped_rows: list[tuple[int, str]] = []
        problem: CsvError | None = None
        for start in range(0, len(times), _BLOCK):
            part = slice(start, start + _BLOCK)
            batch, skips, problem = _convert(
                path, lines, times[part], [c[part] for c in texts], row_lines[part], layout
            )
            batches.append(batch)
            skipped_rows.extend(skips)
            if problem is not None:
                break
        return _Batch.concat(batches), skipped_rows, problem
    # Something is off (no-data rows, bad cells): redo row by row to find exactly what.
    kept_times: list[int] = []
    parsed: list[list[float]] = []
    kept: list[int] = []
    skipped: list[tuple[int, str]] = []
    error: CsvError | None = None
    for line in row_lines.tolist():
        try:
            row = _parse_row(path, line, _split(lines[line - 1]), layout)
        except CsvError as exc:
            error = exc
            break
        if row is None:
            names = "close is" if layout.close_only else "open, high, low, close and volume are"
            skipped.append((line, f"no data: {names} all null/NaN/empty"))
            continue
        kept_times.append(row[0])
        parsed.append(row[1])
        kept.append(line)
    count = len(texts)
    matrix = np.array(parsed, dtype=np.float64).reshape(len(parsed), count)
    batch = _Batch(
        np.array(kept_times, dtype=np.int64),
        [matrix[:, column].copy() for column in range(count)],
        np.array(kept, dtype=np.int64),
    )
    return batch, skipped, error


def _parse_row(
    path: Path, line: int, cells: list[str], layout: _Layout
) -> tuple[int, list[float]] | None:
    """Parse one row to (time, values); None for a no-data row; CsvError if it is bad."""
    time_text = cells[layout.time_index]
    try:
        stamp = _parse_time(time_text)
    except (ValueError, OverflowError):
        name = layout.names[layout.time_index]
        raise CsvError(
            path, line, f"column {name!r}: cannot parse {time_text!r} as a time"
        ) from None
    texts = [cells[index].strip() for index in layout.value_indices]
    if all(text.lower() in _NO_DATA for text in texts):
        return None
    values: list[float] = []
    for index, text in zip(layout.value_indices, texts, strict=True):
        name = layout.names[index]
        if text.lower() in _NO_DATA:
            message = f"column {name!r}: no value ({text!r}) while the row has others"
            raise CsvError(path, line, message)
        try:
            value = float(text)
        except ValueError:
            message = f"column {name!r}: cannot parse {text!r} as a number"
            raise CsvError(path, line, message) from None
        if value - value:  # inf
            raise CsvError(path, line, f"column {name!r}: {text!r} is not a finite number")
        values.append(value)
    return stamp, values


def _format_ms(ms: int) -> str:
    """Render epoch ms as an ISO UTC datetime for messages."""
    stamp = _EPOCH + timedelta(milliseconds=ms)
    spec = "milliseconds" if ms % 1000 else "seconds"
    return stamp.isoformat(timespec=spec).replace("+00:00", "Z")


def _first_range_error(
    path: Path,
    lines: list[str],
    where: np.ndarray,
    stamp: np.ndarray,
    values: list[np.ndarray],
    layout: _Layout,
) -> CsvError | None:
    """Find the earliest row with a price <= 0, a negative volume or a non-increasing time."""
    names = ("close",) if layout.close_only else _VALUE_COLUMNS
    candidates: list[tuple[int, int]] = []  # (row, check): check k < 5 is value column k, 5 time
    for check, (name, column) in enumerate(zip(names, values, strict=True)):
        bad = column < 0 if name == "volume" else column <= 0
        if bad.any():
            candidates.append((int(np.argmax(bad)), check))
    backwards = np.diff(stamp) <= 0
    if backwards.any():
        candidates.append((int(np.argmax(backwards)) + 1, 5))
    if not candidates:
        return None
    row, check = min(candidates)
    line = int(where[row])
    if check == 5:
        name = layout.names[layout.time_index]
        text = _split(lines[line - 1])[layout.time_index].strip()
        current, previous = int(stamp[row]), int(stamp[row - 1])
        relation = "repeats" if current == previous else "is before"
        message = (
            f"column {name!r}: time {text!r} ({_format_ms(current)}) {relation} the previous "
            f"row's time {_format_ms(previous)} (line {int(where[row - 1])}); "
            "rows must be strictly increasing in time"
        )
        return CsvError(path, line, message)
    index = layout.value_indices[check]
    text = _split(lines[line - 1])[index].strip()
    rule = "a volume must be >= 0" if names[check] == "volume" else "a price must be > 0"
    return CsvError(
        path, line, f"column {layout.names[index]!r}: {text!r} is out of range ({rule})"
    )
