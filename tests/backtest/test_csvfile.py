"""Tests for moodring.backtest.csvfile: real history files against pandas, and malformed files."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from moodring.backtest.csvfile import CsvError, LoadedCsv, load_csv
from tests.support.paths import DATA

# --------------------------------------------------------------------------- real files

# Row counts per file as documented in shared/data/README.md.
ALTS_YANNIEDOG = {
    "XRPUSDT": 2805,
    "ADAUSDT": 2822,
    "DOTUSDT": 1968,
    "TRXUSDT": 2767,
    "SHIBUSDT": 1703,
    "AVAXUSDT": 1933,
    "MATICUSDT": 1965,
    "LTCUSDT": 2947,
    "LINKUSDT": 2548,
    "XLMUSDT": 2778,
    "XMRUSDT": 1804,
    "BCHUSDT": 2232,
    "ETCUSDT": 2766,
}
ALTS_GNGUYENQUANT = {
    "XRPUSDT": 1519,
    "ADAUSDT": 1536,
    "DOTUSDT": 682,
    "TRXUSDT": 1481,
    "AVAXUSDT": 647,
    "MATICUSDT": 1162,
    "LTCUSDT": 1661,
    "FTTUSDT": 924,
    "LINKUSDT": 1262,
    "XLMUSDT": 1492,
    "NEARUSDT": 625,
    "ALGOUSDT": 1105,
    "XMRUSDT": 1204,
    "BCHUSDT": 946,
    "ETCUSDT": 1480,
    "VETUSDT": 1437,
    "MANAUSDT": 694,
    "APEUSDT": 106,
    "SANDUSDT": 686,
    "HBARUSDT": 1006,
    "XTZUSDT": 1011,
    "THETAUSDT": 1178,
    "FILUSDT": 624,
    "AXSUSDT": 604,
    "EGLDUSDT": 666,
    "HNTUSDT": 645,
    "MKRUSDT": 708,
    "ZECUSDT": 1198,
    "AAVEUSDT": 624,
    "IOTAUSDT": 1492,
    "KLAYUSDT": 372,
    "GRTUSDT": 561,
    "RUNEUSDT": 665,
    "BATUSDT": 1215,
    "CHZUSDT": 1029,
    "NEOUSDT": 1684,
    "LRCUSDT": 749,
    "ZILUSDT": 1228,
    "GMTUSDT": 114,
    "DASHUSDT": 1191,
    "ENJUSDT": 1170,
    "KSMUSDT": 665,
    "CELOUSDT": 542,
    "KAVAUSDT": 980,
    "ARUSDT": 413,
    "XEMUSDT": 584,
    "HOTUSDT": 1229,
    "COMPUSDT": 736,
    "1INCHUSDT": 553,
}
GAPLESS = "intraday/binance_5m_gapless/binance_spot_{}USDT-5m_20230320-20230328_v2.10.0.csv"
REAL_FILES: dict[str, int] = {
    "daily/binance_yanniedog/ETHUSDT_1d.csv": 3065,
    "daily/binance_yanniedog/BTCUSDT_1d.csv": 3065,
    "daily/yahoo_elvisbinks/ETH-USD.csv": 2945,
    "daily/yahoo_elvisbinks/BTC-USD.csv": 3623,
    "daily/yahoo_stell0/BTC-USD.csv": 624,
    "daily/yahoo_alitalbi/RUT.csv": 9686,
    "daily/yahoo_alitalbi/IWM.csv": 6473,
    "daily/close_only_corrcheck/ETH-USD.csv": 3203,
    "daily/close_only_corrcheck/BTC-USD.csv": 4245,
    "daily/close_only_corrcheck/IWM.csv": 2868,
    "daily/ethbtc_labdrian/ETH-BTC.csv": 1901 - 2,
    "intraday/kraken_1m_cnettlev/ETHUSD.csv": 49355,
    "intraday/kraken_1m_cnettlev/BTCUSD.csv": 49355,
    GAPLESS.format("ETH"): 2576,
    GAPLESS.format("BTC"): 2576,
    **{
        f"intraday/binance_rocketalerts/{pair}_{step}.csv": 1000
        for pair in ("ETHUSDT", "BTCUSDT")
        for step in ("1m", "5m", "1h")
    },
    **{f"daily/binance_alts/{sym}_1d.csv": rows for sym, rows in ALTS_YANNIEDOG.items()},
    **{
        f"daily/binance_alts_gnguyenquant/{sym}_1d.csv": rows
        for sym, rows in ALTS_GNGUYENQUANT.items()
    },
}
CLOSE_ONLY_DIR = "close_only_corrcheck"
OHLCV = ["open", "high", "low", "close", "volume"]


def _ms(times: pd.Series) -> np.ndarray:
    """Epoch milliseconds of a tz-aware pandas datetime series."""
    return times.dt.as_unit("ms").astype("int64").to_numpy()


def pandas_reference(path: Path) -> pd.DataFrame:
    """Read a real file with pandas alone: columns time (epoch ms) + open/high/low/close/volume."""
    name = path.as_posix()
    if "yahoo_elvisbinks" in name:
        df = pd.read_csv(path, skiprows=[1, 2]).rename(columns={"Price": "Date"})
        time = pd.to_datetime(df["Date"], utc=True)
    elif "kraken" in name:
        df = pd.read_csv(path)
        time = pd.to_datetime(df["time"], unit="s", utc=True)
        assert (time == pd.to_datetime(df["dtime"], utc=True)).all()
    elif "gnguyenquant" in name:
        df = pd.read_csv(path)
        time = pd.to_datetime(df["Open Time"], unit="ms", utc=True)
    elif "gapless" in name:
        df = pd.read_csv(path, comment="#")
        time = pd.to_datetime(df["date"], utc=True)
    elif "ethbtc" in name:
        df = pd.read_csv(path, na_values=["null"]).dropna(subset=["Close"])
        time = pd.to_datetime(df["Date"], utc=True)
    else:  # timestamp,open,... or Date,Close,High,... or Date,Open,... or Date,Close
        df = pd.read_csv(path)
        time = pd.to_datetime(df[df.columns[0]], utc=True)
    df = df.rename(columns=str.lower)
    out = pd.DataFrame({"time": _ms(time)}, index=df.index)
    if CLOSE_ONLY_DIR in name:
        out["close"] = df["close"]
        for column in ("open", "high", "low"):
            out[column] = df["close"]
        out["volume"] = 0.0
    else:
        for column in OHLCV:
            out[column] = df[column].astype("float64")
    return out.reset_index(drop=True)


@pytest.mark.parametrize("relative", sorted(REAL_FILES))
def test_real_file_matches_pandas(relative: str) -> None:
    path = DATA / relative
    loaded = load_csv(path)
    bars = loaded.bars
    expected = pandas_reference(path)
    assert len(bars) == REAL_FILES[relative] == len(expected)
    assert loaded.close_only == (CLOSE_ONLY_DIR in relative)
    assert bars.time.dtype == np.int64
    np.testing.assert_array_equal(bars.time, expected["time"].to_numpy())
    for column in OHLCV:
        got = getattr(bars, column)
        assert got.dtype == np.float64
        np.testing.assert_array_equal(got, expected[column].to_numpy(), err_msg=column)
    assert (np.diff(bars.time) > 0).all()


def test_real_file_count_covers_every_csv() -> None:
    on_disk = {
        p.relative_to(DATA).as_posix()
        for folder in ("daily", "intraday")
        for p in (DATA / folder).rglob("*.csv")
    }
    assert on_disk == set(REAL_FILES)


def test_ethbtc_null_rows_are_skipped_with_line_numbers() -> None:
    loaded = load_csv(DATA / "daily/ethbtc_labdrian/ETH-BTC.csv")
    assert [line for line, _ in loaded.skipped] == [207, 1314]
    assert all("no data" in reason for _, reason in loaded.skipped)
    day = 86_400_000
    june_3_2018 = int(datetime(2018, 6, 3, tzinfo=UTC).timestamp()) * 1000
    assert june_3_2018 not in set(loaded.bars.time.tolist())
    assert june_3_2018 - day in set(loaded.bars.time.tolist())


def test_ethbtc_uses_close_not_adj_close() -> None:
    path = DATA / "daily/ethbtc_labdrian/ETH-BTC.csv"
    df = pd.read_csv(path, na_values=["null"]).dropna()
    loaded = load_csv(path)
    np.testing.assert_array_equal(loaded.bars.close, df["Close"].to_numpy())


def test_kraken_uses_time_not_dtime_and_first_bar() -> None:
    bars = load_csv(DATA / "intraday/kraken_1m_cnettlev/BTCUSD.csv").bars
    assert bars.time[0] == 1680523260 * 1000
    assert (bars.open[0], bars.high[0], bars.low[0], bars.close[0]) == (
        28254.8,
        28260.9,
        28239.8,
        28239.8,
    )
    assert bars.volume[0] == 3.96893978


def test_close_only_real_file() -> None:
    loaded = load_csv(DATA / "daily/close_only_corrcheck/IWM.csv")
    bars = loaded.bars
    assert loaded.close_only
    for column in (bars.open, bars.high, bars.low):
        np.testing.assert_array_equal(column, bars.close)
        assert column is not bars.close
    assert (bars.volume == 0).all()


# --------------------------------------------------------------------------- synthetic helpers

ROWS = [
    ("2024-01-01", 100.0, 110.0, 90.0, 105.0, 1000.0),
    ("2024-01-02", 105.0, 120.0, 100.0, 115.5, 2000.5),
    ("2024-01-03", 115.5, 116.0, 95.25, 99.0, 0.0),
]
DAY0 = 1_704_067_200_000  # 2024-01-01T00:00:00Z
DAY = 86_400_000


@pytest.fixture
def write(tmp_path: Path) -> Callable[..., Path]:
    """Return a function writing text to a fresh CSV file in tmp_path."""
    counter = iter(range(10**6))

    def _write(text: str, *, name: str | None = None) -> Path:
        path = tmp_path / (name or f"bars{next(counter)}.csv")
        path.write_text(text, encoding="utf-8", newline="")
        return path

    return _write


def csv_text(header: list[str], rows: list[list[object]]) -> str:
    """Render a header and rows as CSV text."""
    return "\n".join(",".join(str(cell) for cell in line) for line in [header, *rows]) + "\n"


def assert_rows(bars: object, rows: list[tuple[str, float, float, float, float, float]]) -> None:
    """Compare loaded bars to (date, o, h, l, c, v) tuples with days from 2024-01-01."""
    assert len(bars) == len(rows)  # type: ignore[arg-type]
    for column, values in zip(OHLCV, list(zip(*rows, strict=True))[1:], strict=True):
        np.testing.assert_array_equal(getattr(bars, column), np.array(values))


def expect_error(path: Path, line: int | None, *fragments: str) -> CsvError:
    """Load path expecting a CsvError at line whose message contains every fragment."""
    with pytest.raises(CsvError) as info:
        load_csv(path)
    err = info.value
    text = str(err)
    assert err.path == path
    assert err.line == line, text
    prefix = f"{path}:{line}: " if line is not None else f"{path}: "
    assert text.startswith(prefix), text
    assert path.name in text
    for fragment in fragments:
        assert fragment in text, (fragment, text)
    return err


# --------------------------------------------------------------------------- headers


@pytest.mark.parametrize(
    "header",
    [
        ["timestamp", "open", "high", "low", "close", "volume"],
        ["Date", "Close", "High", "Low", "Open", "Volume"],
        ["DATE", "VOLUME", "LOW", "HIGH", "OPEN", "CLOSE"],
        ["Open Time", "Open", "High", "Low", "Close", "Volume", "Quote Asset Volume", "TWAP_price"],
        ["open-time", "open", "high", "low", "close", "volume"],
        ["Date", "Open", "High", "Low", "Close", "Adj Close", "Volume"],
        ["volume", "close", "close_time", "datetime", "low", "high", "open", "count"],
        [" Date ", " Open", "High ", "Low", "Close", "Volume"],
    ],
    ids=lambda h: "|".join(h),
)
def test_header_permutations(write: Callable[..., Path], header: list[str]) -> None:
    rows = []
    for date, o, h, lo, c, v in ROWS:
        by_name = {"open": o, "high": h, "low": lo, "close": c, "volume": v}
        cells: list[object] = []
        for name in header:
            key = name.strip().lower().replace(" ", "_").replace("-", "_")
            if key in {"timestamp", "open_time", "date", "datetime"}:
                cells.append(date)
            elif key in by_name:
                cells.append(by_name[key])
            elif key == "adj_close":
                cells.append(-1.0)  # must never be used as the close
            else:
                cells.append("junk")
        rows.append(cells)
    loaded = load_csv(write(csv_text(header, rows)))
    assert not loaded.close_only
    assert loaded.skipped == ()
    assert_rows(loaded.bars, ROWS)
    np.testing.assert_array_equal(loaded.bars.time, [DAY0, DAY0 + DAY, DAY0 + 2 * DAY])


def test_time_column_priority(write: Callable[..., Path]) -> None:
    # Kraken-style: dtime is not a time column, time is; timestamp beats date.
    text = (
        "dtime,time,open,high,low,close,vwap,volume,count\n1999-01-01,1704067200,1,2,1,2,1.5,3,4\n"
    )
    assert load_csv(write(text)).bars.time.tolist() == [DAY0]
    text = "date,timestamp,open,high,low,close,volume\n1999-01-01,2024-01-01,1,2,1,2,3\n"
    assert load_csv(write(text)).bars.time.tolist() == [DAY0]


def test_yfinance_three_row_header(write: Callable[..., Path]) -> None:
    text = (
        "Price,Adj Close,Close,High,Low,Open,Volume\n"
        "Ticker,Eth-Usd,Eth-Usd,Eth-Usd,Eth-Usd,Eth-Usd,Eth-Usd\n"
        "Date,,,,,,\n"
        "2024-01-01,1.0,105.0,110.0,90.0,100.0,1000\n"
        "2024-01-02,1.0,115.5,120.0,100.0,105.0,2000.5\n"
        "2024-01-02,1.0,115.5,120.0,100.0,105.0,2000.5\n"
    )
    path = write(text)
    expect_error(path, 6, "'Date'", "repeats", "line 5", "2024-01-02T00:00:00Z")
    loaded = load_csv(write(text.rsplit("2024-01-02", 1)[0]))
    assert_rows(loaded.bars, ROWS[:2])


def test_close_only(write: Callable[..., Path]) -> None:
    loaded = load_csv(write("Date,Close\n2024-01-01,105\n2024-01-02,115.5\n"))
    assert isinstance(loaded, LoadedCsv)
    assert loaded.close_only
    bars = loaded.bars
    assert bars.time.tolist() == [DAY0, DAY0 + DAY]
    for column in (bars.open, bars.high, bars.low, bars.close):
        assert column.tolist() == [105.0, 115.5]
    assert bars.volume.tolist() == [0.0, 0.0]


@pytest.mark.parametrize(
    ("header", "fragments"),
    [
        ("Date,Open,High,Low,Volume", ["lacks 'close'", "'Date'", "'Volume'"]),
        ("Day,Open,High,Low,Close,Volume", ["lacks a time column", "'Day'"]),
        ("dtime,open,high,low,close,volume", ["lacks a time column", "'dtime'"]),
        ("Open,High", ["a time column", "'close'", "'Open', 'High'"]),
        ("Date,Open,High,Low,Close", ["lacks 'volume'", "'Close'"]),
        ("Date,Close,Volume", ["lacks 'open', 'high', 'low'"]),
        ("Date,Open,High,Low,Close,Volume,close", ["'close' appears 2 times"]),
    ],
)
def test_bad_header(write: Callable[..., Path], header: str, fragments: list[str]) -> None:
    path = write(f"# a comment first\n\n{header}\n2024-01-01,1,2,3,4,5\n")
    expect_error(path, 3, *fragments)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "empty file"),
        ("\n\n# only comments\n", "empty file"),
        ("date,open,high,low,close,volume\n", "no data rows"),
        ("date,open,high,low,close,volume\n# nothing\n\n", "no data rows"),
        (
            "date,open,high,low,close,volume\n2024-01-01,null,null,null,null,null\n",
            "1 rows skipped",
        ),
    ],
)
def test_no_data(write: Callable[..., Path], text: str, fragment: str) -> None:
    expect_error(write(text), None, fragment)


# --------------------------------------------------------------------------- times


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-01-01", DAY0),
        ("2024-01-01 00:00:00", DAY0),
        ("2024-01-01T00:00:00", DAY0),
        ("2024-01-01T00:00:00Z", DAY0),
        ("2024-01-01T02:00:00+02:00", DAY0),
        ("2023-12-31T19:00:00-05:00", DAY0),
        ("2024-01-01 00:00:00.250", DAY0 + 250),
        ("2024-01-01T00:01", DAY0 + 60_000),
        (" 2024-01-01 ", DAY0),
        ("1704067200", DAY0),
        ("1704067200.5", DAY0 + 500),
        ("1704067200000", DAY0),
        ("1704067200000.0", DAY0),
        ("1704067200000000", DAY0),
        ("1704067200123456", DAY0 + 123),
        ("0", 0),
        ("-86400", -DAY),
        ("1970-01-01", 0),
        ("1969-12-31 23:59:59", -1000),
        ("1600-02-29", (datetime(1600, 2, 29) - datetime(1970, 1, 1)) // timedelta(milliseconds=1)),
    ],
)
def test_time_formats(write: Callable[..., Path], text: str, expected: int) -> None:
    path = write(f"time,open,high,low,close,volume\n{text},1,1,1,1,1\n")
    assert load_csv(path).bars.time.tolist() == [expected]


def test_epoch_seconds_and_milliseconds_agree(write: Callable[..., Path]) -> None:
    def file_with(times: list[int]) -> Path:
        rows = [[t, *row[1:]] for t, row in zip(times, ROWS, strict=True)]
        return write(csv_text(["open_time", *OHLCV], rows))

    seconds = load_csv(file_with([DAY0 // 1000 + i * 86_400 for i in range(3)])).bars
    millis = load_csv(file_with([DAY0 + i * DAY for i in range(3)])).bars
    dates = load_csv(write(csv_text(["date", *OHLCV], [list(r) for r in ROWS]))).bars
    for column in ("time", *OHLCV):
        np.testing.assert_array_equal(getattr(seconds, column), getattr(millis, column))
        np.testing.assert_array_equal(getattr(dates, column), getattr(millis, column))


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    stamps=st.lists(
        st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59)),
        min_size=1,
        max_size=60,
        unique_by=lambda d: d.replace(microsecond=0),
    ),
    separator=st.sampled_from([" ", "T"]),
    date_only=st.booleans(),
)
def test_iso_times_match_datetime(
    write: Callable[..., Path], stamps: list[datetime], separator: str, date_only: bool
) -> None:
    stamps = sorted({s.replace(microsecond=0) for s in stamps})
    if date_only:
        stamps = sorted({datetime(s.year, s.month, s.day) for s in stamps})
    texts = [f"{s.year:04d}-{s.month:02d}-{s.day:02d}" for s in stamps]
    if not date_only:
        clocks = [f"{separator}{s.hour:02d}:{s.minute:02d}:{s.second:02d}" for s in stamps]
        texts = [day + clock for day, clock in zip(texts, clocks, strict=True)]
    rows = "".join(f"{t},1,1,1,1,1\n" for t in texts)
    bars = load_csv(write("date,open,high,low,close,volume\n" + rows)).bars
    epoch = datetime(1970, 1, 1)
    assert bars.time.tolist() == [(s - epoch) // timedelta(milliseconds=1) for s in stamps]


@pytest.mark.parametrize(
    "bad",
    [
        "2023-02-29",
        "2024-13-01",
        "2024-00-10",
        "2024-04-31",
        "0000-01-01",
        "2024-01-01 24:00:00",
        "2024-01-01 23:60:00",
        "2024-01-01 23:59:60",
        "2024-01-01 00:00:00+25:00",
        "2024/01/01",
        "2024-1-1",
        "yesterday",
        "nan",
        "inf",
        "",
        "1e30",
        "99999999999999999999999",
    ],
)
def test_bad_time(write: Callable[..., Path], bad: str) -> None:
    path = write(f"date,open,high,low,close,volume\n2023-01-01,1,1,1,1,1\n{bad},1,1,1,1,1\n")
    expect_error(path, 3, "'date'", f"cannot parse {bad!r} as a time")


# --------------------------------------------------------------------------- values and rows

HEADER = "Date,Open,High,Low,Close,Volume\n"
GOOD_1 = "2024-01-01,100,110,90,105,1000\n"
GOOD_2 = "2024-01-02,105,120,100,115.5,2000.5\n"


@pytest.mark.parametrize(
    ("row", "fragments"),
    [
        ("2024-01-03,100,abc,90,105,1000", ["'High'", "cannot parse 'abc' as a number"]),
        ("2024-01-03,100,110,90,1.0.5,1000", ["'Close'", "'1.0.5'"]),
        ("2024-01-03,100,110,90,105,1000,7", ["expected 6 cells", "found 7"]),
        ("2024-01-03,100,110,90,105", ["expected 6 cells", "found 5"]),
        ("2024-01-03,100,110,-90,105,1000", ["'Low'", "'-90'", "price must be > 0"]),
        ("2024-01-03,0,110,90,105,1000", ["'Open'", "'0'", "price must be > 0"]),
        ("2024-01-03,100,110,90,105,-1", ["'Volume'", "'-1'", "volume must be >= 0"]),
        ("2024-01-03,100,110,90,inf,1000", ["'Close'", "'inf'", "not a finite number"]),
        ("2024-01-03,100,110,90,105,-Infinity", ["'Volume'", "'-Infinity'", "not a finite"]),
        ("2024-01-03,100,NaN,90,105,1000", ["'High'", "'NaN'", "no value"]),
        ("2024-01-03,100,110,,105,1000", ["'Low'", "''", "no value"]),
        ("2024-01-03,null,null,null,null,1000", ["'Open'", "'null'", "no value"]),
        ("2024-01-03,100,110,90,105,-nan", ["'Volume'", "'-nan'", "not a finite"]),
        ('2024-01-03,"100,110,90,105,1000', ["malformed CSV"]),
        ("2024-01-02,100,110,90,105,1000", ["'Date'", "'2024-01-02'", "repeats", "line 3"]),
        ("2023-12-31,100,110,90,105,1000", ["is before", "2024-01-02T00:00:00Z", "(line 3)"]),
    ],
)
def test_bad_row(write: Callable[..., Path], row: str, fragments: list[str]) -> None:
    path = write(HEADER + GOOD_1 + GOOD_2 + row + "\n" + GOOD_2)
    expect_error(path, 4, *fragments)


def test_bad_close_only_row(write: Callable[..., Path]) -> None:
    path = write("Date,Close\n2024-01-01,1\n2024-01-02,0\n")
    expect_error(path, 3, "'Close'", "'0'", "price must be > 0")


def test_first_error_in_file_wins(write: Callable[..., Path]) -> None:
    # A range error (line 3) comes before a parse error (line 5) and a time error (line 6).
    text = HEADER + GOOD_1 + "2024-01-02,1,1,1,-1,1\n" + GOOD_2 + "2024-01-04,x,1,1,1,1\n"
    expect_error(write(text), 3, "'Close'", "'-1'")
    text = HEADER + GOOD_2 + GOOD_1 + "2024-01-04,1,1,1,1\n"
    expect_error(write(text), 3, "is before")
    text = HEADER + GOOD_1 + "2024-01-04,1,1,1,1\n" + "2024-01-03,x,1,1,1,1\n"
    expect_error(write(text), 3, "expected 6 cells")


def test_ohlc_inconsistency_is_not_an_error(write: Callable[..., Path]) -> None:
    bars = load_csv(write(HEADER + "2024-01-01,100,50,200,300,0\n")).bars
    assert (bars.open[0], bars.high[0], bars.low[0], bars.close[0]) == (100, 50, 200, 300)


def test_no_data_rows_are_skipped(write: Callable[..., Path]) -> None:
    text = (
        HEADER
        + GOOD_1
        + "2024-01-02,null,null,null,null,null\n"
        + "2024-01-03,NaN,nan,NULL,,  \n"
        + "2024-01-04,1,2,0.5,1.5,3\n"
    )
    loaded = load_csv(write(text))
    assert [line for line, _ in loaded.skipped] == [3, 4]
    assert loaded.skipped[0][1].startswith("no data")
    assert loaded.bars.time.tolist() == [DAY0, DAY0 + 3 * DAY]


def test_comments_blank_lines_crlf_bom_and_quotes(write: Callable[..., Path]) -> None:
    text = (
        '\ufeff# leading comment, with "quotes\n'
        "   # indented comment\r\n"
        '"Date","Open","High","Low","Close","Volume"\r\n'
        "2024-01-01,100,110,90,105,1000\r\n"
        "\r\n"
        "  # a comment in the middle\r\n"
        '"2024-01-02","105","120","100","115.5","2000.5"\r\n'
        "\t\r\n"
        "2024-01-03, 115.5 ,116,95.25,99,0\r\n"
        "2024-01-03,bad,1,1,1,1\r\n"
    )
    path = write(text)
    # Physical line numbers count comments and blank lines.
    expect_error(path, 10, "'Open'", "'bad'")
    loaded = load_csv(write(text.rsplit("2024-01-03,bad", 1)[0]))
    assert_rows(loaded.bars, ROWS)


def test_error_line_numbers_in_later_chunks(write: Callable[..., Path]) -> None:
    # More rows than one conversion batch (65536); a comment and errors in the second batch.
    count = 70_000
    lines = [f"{DAY0 // 1000 + 60 * i},1,2,0.5,1.5,{i}" for i in range(count)]
    lines.insert(66_000, "# a comment in the second batch")

    def text() -> str:
        return "time,open,high,low,close,volume\n" + "\n".join(lines) + "\n"

    bars = load_csv(write(text())).bars
    assert len(bars) == count
    assert bars.time[-1] == DAY0 + 60_000 * (count - 1)
    assert bars.volume[-1] == count - 1
    lines[69_000] = lines[69_000].replace(",1.5,", ",oops,")
    expect_error(write(text()), 69_002, "'close'", "'oops'")
    lines[68_000] = lines[67_999]
    expect_error(write(text()), 68_002, "repeats", "(line 68001)")
    lines[1000] = lines[1000].replace(",0.5,", ",null,")
    expect_error(write(text()), 1002, "'low'", "'null'", "no value")


def test_not_utf8(write: Callable[..., Path], tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes(b"date,open,high,low,close,volume\n2024-01-01,\xff,1,1,1,1\n")
    expect_error(path, None, "not UTF-8")


def test_csv_error_pickles_and_accepts_str_path(write: Callable[..., Path]) -> None:
    path = write(HEADER + GOOD_1 + "2024-01-02,x,1,1,1,1\n")
    with pytest.raises(CsvError) as info:
        load_csv(str(path))
    err = info.value
    assert isinstance(err, ValueError)
    assert str(err) == f"{path}:3: {err.message}"
    again = pickle.loads(pickle.dumps(err))
    assert (again.path, again.line, str(again)) == (err.path, err.line, str(err))
    assert str(CsvError(path, None, "boom")) == f"{path}: boom"


def test_loaded_csv_is_frozen(write: Callable[..., Path]) -> None:
    loaded = load_csv(write(HEADER + GOOD_1))
    with pytest.raises(AttributeError):
        loaded.close_only = True  # type: ignore[misc]
