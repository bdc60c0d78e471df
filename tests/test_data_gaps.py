"""Windows a data gap cannot fool; closed-market rows, two rows in one bar, price jumps.

Each case runs on real data (a gap cut out, a real futures file, real 5-minute bars
written as an hourly export, a real series with a split-like halving) through both
backtest paths, and on the live engine where it has a live side.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import talib
import yaml

from moodring.backtest.csvfile import load_csv
from moodring.cli import main
from moodring.configfile import load_settings
from moodring.market.bar import Bar
from moodring.market.calendar import MarketCalendar
from moodring.market.jumps import Jump
from moodring.market.sessions import Cadence, meets_session
from moodring.market.timeframe import Timeframe
from moodring.pipeline import Pipeline
from moodring.service.telemetry import Telemetry
from tests.support import oracles
from tests.support.oracles import read_ohlcv
from tests.support.paths import DATA, TEST_DATA

ETH_1D = DATA / "daily/binance_yanniedog/ETHUSDT_1d.csv"
RUT_1D = DATA / "daily/yahoo_alitalbi/RUT.csv"
ETH_5M = DATA / "intraday/binance_5m_gapless/binance_spot_ETHUSDT-5m_20230320-20230328_v2.10.0.csv"
RTY_F = TEST_DATA / "yahoo_rty_f/RTY=F.csv"
DAY = 86_400_000
HOUR = 3_600_000
MODES = [pytest.param([], id="batch"), pytest.param(["--streaming"], id="streaming")]
# The gap: one week of ETH bars deleted, ending the Friday before the 2025-10-10 crash.
CUT = pd.date_range("2025-10-04", "2025-10-10", tz="UTC")
AFTER_GAP = pd.Timestamp("2025-10-13", tz="UTC")  # the first joined bar after the gap


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


def write_config(tmp_path: Path, config: dict) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def backtest(
    tmp_path: Path, config: dict, data: dict[str, Path], mode: list[str], *extra: str
) -> tuple[pd.DataFrame, list[dict]]:
    """Run ``moodring backtest``; return its metrics table and its alerts."""
    out = tmp_path / "metrics.csv"
    args = ["backtest", "-c", str(write_config(tmp_path, config)), "--metrics-out", str(out)]
    args += [f"--data={feed}={file}" for feed, file in data.items()] + [*mode, *extra]
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        assert main(args) == 0
    table = pd.read_csv(out)
    table.index = pd.to_datetime(table.pop("time"), utc=True)
    return table, [json.loads(line) for line in buffer.getvalue().splitlines()]


def eth_without_a_week(tmp_path: Path) -> Path:
    """The real Binance ETH daily file with the issue's week of rows deleted."""
    lines = ETH_1D.read_text().splitlines(keepends=True)
    cut = {day.strftime("%Y-%m-%d") for day in CUT}
    path = tmp_path / "ETHUSDT_1d_cut.csv"
    path.write_text("".join(line for line in lines if line[:10] not in cut))
    return path


# ------------------------------------------------------------------------------- gaps

DECOUPLING = {
    "feeds": {
        "eth": {"symbol": "ETH/USDT"},
        "rut": {"symbol": "^RUT", "source": "yahoo", "market": "equity"},
    },
    "metrics": {
        "corr": {"type": "correlation", "a": "eth", "b": "rut", "window": 30},
        "div": {"type": "divergence", "a": "eth", "b": "rut", "window": 30},
    },
    "rules": [
        {
            "name": "decoupling",
            "metric": "corr",
            "condition": {"below": 0.3},
            "clear": {"above": 0.45},
            "for": 2,
            "send_resolved": True,
        },
        {"name": "residual", "metric": "div.residual_z", "condition": {"below": -2.5}},
    ],
}


@pytest.mark.parametrize("mode", MODES)
def test_a_week_cut_out_leaves_the_windows_undefined_until_it_has_left_them(
    tmp_path: Path, mode: list[str]
) -> None:
    cut_file = eth_without_a_week(tmp_path)
    cut, cut_alerts = backtest(tmp_path, DECOUPLING, {"eth": cut_file, "rut": RUT_1D}, mode)
    full, full_alerts = backtest(tmp_path, DECOUPLING, {"eth": ETH_1D, "rut": RUT_1D}, mode)
    day = pd.Timestamp("2025-10-14", tz="UTC")
    assert full.loc[day, "corr"] == pytest.approx(0.557, abs=5e-4)
    # before: the 7-day return across the gap entered the window as one bar (0.153)
    assert math.isnan(cut.loc[day, "corr"])
    # undefined from the first bar after the gap until 30 one-bar returns follow it ...
    rows = cut.index[cut.index >= AFTER_GAP]
    for column in ("corr", "div.residual_z", "div.beta"):
        assert cut.loc[rows[:30], column].isna().all(), column
        assert cut.loc[rows[30:], column].notna().all(), column
    # ... and from then on exactly the complete data's values
    later = rows[30:]
    for column in ("corr", "div.residual_z", "div.beta"):
        np.testing.assert_allclose(cut.loc[later, column], full.loc[later, column], rtol=1e-9)
    # the oracle: pandas, whose rolling windows skip any holding a return across a gap
    eth, rut = read_ohlcv(cut_file)["close"], read_ohlcv(RUT_1D)["close"]
    sessions = oracles.nyse_sessions()
    expected = oracles.log_returns_corr(eth, rut, 30, sessions=sessions)
    ours = cut["corr"].reindex(expected.index)
    np.testing.assert_array_equal(ours.isna(), expected.isna())
    np.testing.assert_allclose(ours, expected, rtol=1e-9)
    z, beta = oracles.ols_residual_z(eth, rut, 30, sessions=sessions)
    np.testing.assert_allclose(cut["div.residual_z"].reindex(z.index), z, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(cut["div.beta"].reindex(beta.index), beta, rtol=1e-9, atol=1e-9)
    # no alert comes from the gap: the cut data alerts as the complete data does, but for
    # the alerts of the week that is missing and of the bars whose window is not full
    blind = (CUT[0], rows[30])
    kept = [a for a in full_alerts if not blind[0] <= pd.Timestamp(a["time"]) < blind[1]]
    assert told(cut_alerts) == told(kept)
    assert len(full_alerts) > len(kept) > 10


def told(alerts: list[dict]) -> list[tuple]:
    """What alerts say, but the template's previous value (undefined just after a gap)."""
    return [(a["time"], a["rule"], a["state"], a["value"]) for a in alerts]


@pytest.mark.parametrize("mode", MODES)
def test_a_missing_session_of_the_equity_leg_is_a_gap_too(tmp_path: Path, mode: list[str]) -> None:
    """RUT without 2025-10-08 (a Wednesday): the Tuesday → Thursday return spans two sessions."""
    lines = RUT_1D.read_text().splitlines(keepends=True)
    rut = tmp_path / "RUT_cut.csv"
    rut.write_text("".join(line for line in lines if not line.startswith("2025-10-08")))
    table, _ = backtest(tmp_path, DECOUPLING, {"eth": ETH_1D, "rut": rut}, mode)
    rows = table.index[table.index >= pd.Timestamp("2025-10-09", tz="UTC")]
    assert table.loc[rows[:30], "corr"].isna().all()
    assert table.loc[rows[30:], "corr"].notna().all()
    # weekends and holidays are no gaps: the complete data has a value on every joined bar
    full, _ = backtest(tmp_path, DECOUPLING, {"eth": ETH_1D, "rut": RUT_1D}, mode)
    assert full.loc["2020":, "corr"].notna().all()


def test_the_live_engine_peeks_no_value_across_a_gap(tmp_path: Path) -> None:
    """The forming pair after a gap has no return to add: its peek is undefined, like its close."""
    settings = load_settings(write_config(tmp_path, DECOUPLING))
    eth = {int(t): bar for t, bar in bars_of(load_csv(ETH_1D).bars)}
    rut = {int(t): bar for t, bar in bars_of(load_csv(RUT_1D).bars)}
    start, gap_from, after = ms("2025-06-02"), ms("2025-10-04"), ms("2025-10-13")
    for with_gap in (False, True):
        engine = Pipeline(settings)
        for t in sorted(t for t in eth if start <= t < after):
            if with_gap and gap_from <= t:
                continue
            with engine.deferred():
                engine.on_candle("eth", t, eth[t], closed=True, length_ms=DAY)
                if t in rut:
                    engine.on_candle("rut", t, rut[t], closed=True, length_ms=DAY)
        engine.on_candle("eth", after, eth[after], closed=False, length_ms=DAY)
        engine.on_candle("rut", after, rut[after], closed=False, length_ms=DAY)
        forming = engine.peek_values()
        peeked = (forming["corr"], forming["div.residual_z"], forming["div.beta"])
        assert all(math.isnan(v) for v in peeked) == with_gap, peeked
        engine.on_candle("eth", after, eth[after], closed=True, length_ms=DAY)
        engine.on_candle("rut", after, rut[after], closed=True, length_ms=DAY)
        closed = engine.values()
        for name, value in zip(("corr", "div.residual_z", "div.beta"), peeked, strict=True):
            assert closed[name] == pytest.approx(value, rel=1e-9, nan_ok=True)


def bars_of(frame) -> list[tuple[int, Bar]]:
    columns = (frame.time, frame.open, frame.high, frame.low, frame.close, frame.volume)
    return [(row[0], Bar(*row)) for row in zip(*(c.tolist() for c in columns), strict=True)]


def test_cadence_follows_the_nyse_calendar() -> None:
    nyse = MarketCalendar()
    daily = Cadence(Timeframe.parse("1d"), nyse)
    assert daily.next_bar(ms("2025-07-03")) == ms("2025-07-07")  # Independence Day, weekend
    assert daily.next_bar(ms("2025-01-08")) == ms("2025-01-10")  # the day of mourning
    assert daily.next_bar(ms("2025-10-13")) == ms("2025-10-14")
    hourly = Cadence(Timeframe.parse("1h"), nyse)
    # 15:00-16:00 New York is the last bar of 2024-07-17; the next opens 09:30 → bar 13:00 UTC
    assert hourly.next_bar(ms("2024-07-17T19:00")) == ms("2024-07-18T13:00")
    assert hourly.next_bar(ms("2024-07-18T13:00")) == ms("2024-07-18T14:00")
    # the 2024-11-29 half day closes 13:00 New York (18:00 UTC): its last bar opens 17:00
    assert hourly.next_bar(ms("2024-11-29T17:00")) == ms("2024-12-02T14:00")
    assert Cadence(Timeframe.parse("1d")).next_bar(ms("2025-07-03")) == ms("2025-07-04")
    # Yahoo's ^RUT since 1987: every session there, none missing, so no bar is after a gap
    rut = load_csv(RUT_1D).bars.time
    assert not daily.after_gap(rut).any()
    assert daily.after_gap(np.delete(rut, 5000)).sum() == 1


@pytest.mark.parametrize("timeframe", ["1h", "1d", "1w"])
def test_vectorised_gaps_equal_bar_by_bar_gaps(timeframe: str) -> None:
    """``after_gap`` (the batch path) agrees with ``next_bar`` (the live join) bar for bar."""
    tf = Timeframe.parse(timeframe)
    rng = np.random.default_rng(11)
    every = np.arange(ms("2023-12-20"), ms("2025-01-10"), tf.ms, dtype=np.int64)
    every = every - (every - tf.offset_ms) % tf.ms
    times = np.unique(every[rng.random(every.shape[0]) > 0.2])
    for calendar in (None, MarketCalendar()):
        cadence = Cadence(tf, calendar)
        due = [cadence.next_bar(t) for t in times[:-1].tolist()]
        expected = np.r_[False, times[1:] > np.asarray(due)]
        np.testing.assert_array_equal(cadence.after_gap(times), expected)
        assert expected.any() and not expected.all()


# ------------------------------------------------------------------ closed-market rows

FUTURES = {
    "feeds": {
        "eth": {"symbol": "ETH/USDT"},
        "rty": {"symbol": "RTY=F", "source": "yahoo", "market": "equity"},
    },
    "metrics": {
        "corr": {"type": "correlation", "a": "eth", "b": "rty", "window": 30},
        "mfi": {"type": "mfi", "series": "rty", "period": 14},
    },
}
CLOSED_DAYS = ["2023-11-23", "2025-01-09", "2025-07-04", "2025-07-13", "2025-09-01"]


def test_the_futures_file_has_rows_on_five_closed_days() -> None:
    bars = load_csv(RTY_F).bars
    open_ = meets_session(bars.time, DAY, MarketCalendar())
    closed = pd.to_datetime(bars.time[~open_], unit="ms").strftime("%Y-%m-%d").tolist()
    assert closed == CLOSED_DAYS


@pytest.mark.parametrize("mode", MODES)
def test_equity_backtests_drop_rows_outside_the_calendar_and_say_so(
    tmp_path: Path, mode: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "moodring")
    data = {"eth": ETH_1D, "rty": RTY_F}
    table, _ = backtest(tmp_path, FUTURES, data, mode)
    closed = pd.DatetimeIndex(CLOSED_DAYS, tz="UTC")
    assert not table.index.isin(closed).any()
    # the MFI is TA-Lib's on the file without those rows
    rty = read_ohlcv(RTY_F)
    rty = rty[~rty.index.isin(closed)]
    expected = talib.MFI(*(rty[c].to_numpy() for c in ("high", "low", "close", "volume")), 14)
    ours = table["mfi"].dropna()
    np.testing.assert_allclose(ours, pd.Series(expected, rty.index).reindex(ours.index), atol=1e-9)
    assert ours.index.equals(rty.index[14:])
    said = [r.getMessage() for r in caplog.records if "session dropped" in r.getMessage()]
    assert said == [
        f"rty: 5 row(s) of {RTY_F} on no NYSE session dropped: {', '.join(CLOSED_DAYS)} "
        "(calendar: none on the feed keeps them)"
    ]
    # calendar: none keeps every row (and says nothing)
    caplog.clear()
    keep = yaml.safe_load(yaml.safe_dump(FUTURES))
    keep["feeds"]["rty"]["calendar"] = "none"
    kept, _ = backtest(tmp_path, keep, data, mode)
    assert not [r for r in caplog.records if "session dropped" in r.getMessage()]
    assert kept["mfi"].dropna().index.equals(read_ohlcv(RTY_F).index[14:])


# ------------------------------------------------------------------ two rows in one bar


def hourly_export(tmp_path: Path, split_every: int) -> tuple[Path, pd.DataFrame]:
    """Real Binance 5-minute ETH bars written as an hourly export stamped at bar close times.

    Every ``split_every``-th hour is written as two rows (its two half hours, stamped at
    each one's close), as such exports are where a row is missing or doubled. Returns the
    file and the true hourly bars.
    """
    five = read_ohlcv(ETH_5M)
    rows = []
    for i, (_, part) in enumerate(five.groupby(five.index.floor("1h"))):
        split = i % split_every == split_every - 1 and len(part) == 12
        pieces = [part.iloc[:6], part.iloc[6:]] if split else [part]
        for piece in pieces:
            bar = (
                piece["open"].iloc[0],
                piece["high"].max(),
                piece["low"].min(),
                piece["close"].iloc[-1],
                piece["volume"].sum(),
            )
            end = piece.index[-1] + pd.Timedelta("5min") - pd.Timedelta("1ms")
            rows.append((end.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3], *bar))
    path = tmp_path / "ETHUSDT_1h_close_stamped.csv"
    lines = ["timestamp,open,high,low,close,volume"]
    lines += [",".join([t, *(repr(float(v)) for v in values)]) for t, *values in rows]
    path.write_text("\n".join(lines) + "\n")
    return path, oracles.resample(five, "1h")


@pytest.mark.parametrize("mode", MODES)
def test_rows_in_one_bar_merge_as_an_exchange_aggregates(
    tmp_path: Path, mode: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "moodring")
    path, hourly = hourly_export(tmp_path, split_every=5)
    config = {
        "feeds": {"eth": {"symbol": "ETH/USDT"}},
        "metrics": {
            "mfi": {"type": "mfi", "series": "eth", "timeframe": "1h", "period": 14},
            "z": {"type": "zscore", "series": "eth", "timeframe": "1h", "window": 24},
        },
    }
    table, _ = backtest(tmp_path, config, {"eth": path}, mode)
    expected = talib.MFI(*(hourly[c].to_numpy() for c in ("high", "low", "close", "volume")), 14)
    oracles_mfi = pd.Series(expected, hourly.index)
    ours = table["mfi"]
    np.testing.assert_array_equal(ours.isna(), oracles_mfi.reindex(ours.index).isna())
    np.testing.assert_allclose(ours, oracles_mfi.reindex(ours.index), atol=1e-9)
    close = hourly["close"]
    z = (close - close.rolling(24).mean()) / close.rolling(24).std()
    np.testing.assert_allclose(table["z"], z.reindex(table.index), rtol=1e-9)
    assert table.index.equals(hourly.index)
    # and it says so, once
    merged = [r.getMessage() for r in caplog.records if "were merged" in r.getMessage()]
    assert merged == [
        f"eth: 43 row(s) of {path} fell into a 1h bar another row had opened and were merged "
        "into it (first open, highest high, lowest low, last close, summed volume): "
        "2023-03-20T04:00:00Z, 2023-03-20T09:00:00Z, 2023-03-20T14:00:00Z, "
        "2023-03-20T19:00:00Z, 2023-03-21T00:00:00Z and 38 more"
    ]


# --------------------------------------------------------------------------- jumps

JUMPY = {
    "feeds": {
        # 0.4 would also flag ETH's real fall of 44.6 % on 2020-03-12
        "eth": {"symbol": "ETH/USDT", "max_jump": 0.45},
        "rut": {"symbol": "^RUT", "source": "yahoo", "market": "equity"},
    },
    "metrics": {
        "chg": {"type": "pct_change", "series": "eth", "lookback": 1},
        "div": {"type": "divergence", "a": "eth", "b": "rut", "window": 30},
    },
    "rules": [
        {"name": "crash", "metric": "chg", "condition": {"below": -30}},
        {"name": "residual", "metric": "div.residual_z", "condition": {"crosses_below": -4}},
    ],
}
SPLIT = "2025-03-12"  # a Wednesday: ETH and RUT both have the bar


def halved_eth(tmp_path: Path) -> Path:
    """Real ETH daily bars with a split-like halving from SPLIT on (prices /2, volume x2)."""
    df = pd.read_csv(ETH_1D)
    after = df["timestamp"] >= SPLIT
    for column in ("open", "high", "low", "close"):
        df.loc[after, column] = df.loc[after, column] / 2
    df.loc[after, "volume"] = df.loc[after, "volume"] * 2
    path = tmp_path / "ETHUSDT_1d_halved.csv"
    df.to_csv(path, index=False)
    return path


@pytest.mark.parametrize("mode", MODES)
def test_a_split_like_halving_is_suspect_logged_and_mutes_its_rules_for_that_bar(
    tmp_path: Path, mode: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "moodring")
    data = {"eth": halved_eth(tmp_path), "rut": RUT_1D}
    range_ = ("--from", "2025-01-01", "--to", "2025-06-30")
    table, alerts = backtest(tmp_path, JUMPY, data, mode, *range_)
    split = pd.Timestamp(SPLIT, tz="UTC")
    assert table.loc[split, "chg"] == pytest.approx(-50.4, abs=0.05)  # the values stay as they are
    assert table.loc[split, "div.residual_z"] < -5
    said = [r.getMessage() for r in caplog.records if "suspect" in r.getMessage()]
    assert said == [
        "eth 1d bar 2025-03-12T00:00:00Z: close 954.1 is -50.4% from the previous close "
        "1923.43 (max_jump 45%): suspect bar, rules reading it are muted for this bar"
    ]
    assert [a for a in alerts if a["time"].startswith(SPLIT)] == []
    # without max_jump both rules fire on that bar
    plain = yaml.safe_load(yaml.safe_dump(JUMPY))
    del plain["feeds"]["eth"]["max_jump"]
    _, unguarded = backtest(tmp_path, plain, data, mode, *range_)
    fired = sorted(a["rule"] for a in unguarded if a["time"].startswith(SPLIT))
    assert fired == ["crash", "residual"]
    assert [a for a in unguarded if not a["time"].startswith(SPLIT)] == alerts


def test_the_live_engine_reports_a_jump_and_the_daemon_counts_it(tmp_path: Path) -> None:
    settings = load_settings(write_config(tmp_path, JUMPY))
    engine = Pipeline(settings)
    telemetry = Telemetry()
    jumps: list[Jump] = []
    engine.subscribe_jumps(jumps.append)
    engine.subscribe_jumps(lambda jump: telemetry.suspect_bar(jump.feed))
    alerts = []
    engine.rules.subscribe(alerts.append)
    prices = [1907.05, 959.33, 960.0, 2000.0]
    for i, close in enumerate(prices):
        t = ms("2025-03-11") + i * DAY
        engine.on_candle(
            "eth", t, Bar(t, close, close, close, close, 1.0), closed=True, length_ms=DAY
        )
    assert [(j.time, j.previous, j.close) for j in jumps] == [
        (ms("2025-03-12"), 1907.05, 959.33),
        (ms("2025-03-14"), 960.0, 2000.0),
    ]
    assert alerts == []  # the crash rule read only suspect bars below -30 %
    scrape = telemetry.registry.get_sample_value("moodring_suspect_bars_total", {"feed": "eth"})
    assert scrape == 2
