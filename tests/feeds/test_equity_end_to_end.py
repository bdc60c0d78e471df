"""End to end: ccxt.pro on the fake exchange and the Yahoo streamer on the fake Yahoo, one stretch.

Both fakes replay the same hours of 2025-07-03, a NYSE half day (close 13:00 New York,
17:00 UTC): ETH and BTC as trades made from real Binance 1h bars (``trade_capture``), the
Russell 2000 as 5-minute bars synthesised by ``equity_bars.session_bars`` from the real
daily ^RUT bars, shaped by real Binance ETHUSDT 5m bars of 2025-08 (the shape's clock times
borrowed, as session_bars documents): real intraday equity bars are not in ../shared/data.
The days before 12:00 New York are history both fakes serve for the warm-up; the replay
runs from there to 13:30, half an hour past the close; at 12:05 the fake Yahoo goes silent
(its clock running on) until the daemon reports ``stale.rut``. One replay serves every
assertion but two, which replay the fake Yahoo alone: a restart mid-session (the bars it
missed filled from the chart) and the silence from the half day's close through
Independence Day and a weekend into Monday (nothing stale).
"""

from __future__ import annotations

import asyncio
import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from moodring.backtest.csvfile import load_csv
from moodring.cli import main
from moodring.market.calendar import MarketCalendar
from moodring.market.frame import BarFrame
from moodring.rules.alert import Alert
from moodring.service.daemon import Daemon
from moodring.settings import Settings
from moodring.testing.equity_bars import session_bars
from moodring.testing.fake_exchange import FakeExchange
from moodring.testing.fake_yahoo import FakeYahoo
from moodring.testing.trade_capture import write_capture
from moodring.times import iso_time
from tests.support.paths import DATA
from tests.support.wait import until

H = 3_600_000
DAY = 24 * H
JUL3 = 1_751_500_800_000  # 2025-07-03 00:00 UTC, a half day: the close is 17:00 UTC
LIVE = JUL3 + 16 * H  # 12:00 New York: the replay starts, the history ends
CLOSE = JUL3 + 17 * H
END = JUL3 + 17 * H + 30 * 60_000  # the crypto trades run on half an hour past the close
SILENT = LIVE + 5 * 60_000  # 12:05 New York: the fake Yahoo goes silent until stale.rut
SPEED = 200.0  # 90 minutes in about 27 s
BARS = DATA / "intraday" / "binance_rocketalerts"
CONFIG: dict[str, Any] = {
    "metrics": {
        "corr": {"type": "correlation", "a": "eth", "b": "rut", "timeframe": "5m", "window": 12},
        "corr_1h": {"type": "correlation", "a": "eth", "b": "rut", "timeframe": "1h", "window": 5},
        "corr_1d": {"type": "correlation", "a": "eth", "b": "rut", "timeframe": "1d", "window": 5},
    },
    # the correlation climbs back from about -0.34 at 12:00 New York to -0.04 at 12:35
    "rules": [
        {
            "name": "recoupling",
            "metric": "corr",
            "condition": {"above": -0.1},
            "clear": {"below": -0.2},
        }
    ],
}


@dataclass
class Replay:
    rut: BarFrame  # the bars the fake Yahoo replays
    record: Path
    alerts: list[Alert]
    live: dict[str, list[tuple[int, float]]]  # the daemon's closed values of each metric
    config: Path
    muted: list[bool]  # whether the rule reading rut stood muted: once stale, at the end


def stale(alerts: list[Alert]) -> list[str]:
    return [a.state for a in alerts if a.rule == "stale.rut"]


def feeds(exchange: FakeExchange | None = None, yahoo: FakeYahoo | None = None) -> dict:
    ccxt = {"ws_url": exchange.ws_url, "rest_url": exchange.rest_url} if exchange else {}
    equity = {"ws_url": yahoo.ws_url, "rest_url": yahoo.rest_url} if yahoo else {}
    return {
        "eth": {"symbol": "ETH/USDT", **ccxt},
        "btc": {"symbol": "BTC/USDT", **ccxt},
        # silence past 5 s in session is stale: after the close none may be reported
        "rut": {"symbol": "^RUT", "source": "yahoo", "market": "equity", "stale_after": "5s"}
        | equity,
    }


@pytest.fixture(scope="module")
def replay(tmp_path_factory: pytest.TempPathFactory) -> Replay:
    tmp = tmp_path_factory.mktemp("equity_e2e")
    return asyncio.run(run_replay(tmp))


async def run_replay(tmp: Path) -> Replay:
    captures, first_id = [], 1
    for symbol in ("ETHUSDT", "BTCUSDT"):
        hourly = load_csv(BARS / f"{symbol}_1h.csv").bars.between(JUL3 - 8 * DAY, END)
        path = tmp / f"{symbol}.gz"
        first_id += write_capture(hourly, symbol, path, per_bar=60, length_ms=H, first_id=first_id)
        captures.append(path)
    daily = load_csv(DATA / "daily" / "yahoo_alitalbi" / "RUT.csv").bars
    rut = session_bars(
        daily.between(JUL3 - 10 * DAY, JUL3 + DAY), load_csv(BARS / "ETHUSDT_5m.csv").bars
    )
    alerts: list[Alert] = []
    muted: list[bool] = []
    live: dict[str, list[tuple[int, float]]] = {name: [] for name in CONFIG["metrics"]}
    async with FakeExchange(captures, speed=SPEED, start=LIVE) as exchange:
        # keep-alives every 0.5 s (100 s of data) tell the streamer the close in time
        yahoo = FakeYahoo(
            {"^RUT": rut}, speed=SPEED, start=LIVE, tick_every=30.0, heartbeat_every=0.5
        )
        await yahoo.start()
        try:
            settings = Settings(
                feeds=feeds(exchange, yahoo), state_dir=tmp / "state", http={"port": 0}, **CONFIG
            )
            async with Daemon(settings, record=tmp / "record") as daemon:
                rules = daemon.engine.rules

                def take(alert: Alert) -> None:
                    alerts.append(alert)
                    if alert.rule == "stale.rut" and alert.state == "firing":
                        muted.append(rules.status("recoupling").muted_since is not None)

                rules.subscribe(take)
                names = {id(node): name for name, node in daemon.engine.metrics.items()}
                daemon.engine.subscribe(
                    lambda node, t: live[names[id(node)]].append((t, float(node.values[0])))
                )
                # silence the equity feed in session (its clock runs on): stale, then back
                await until(lambda: yahoo.clock_ms >= SILENT, "the silent stretch", timeout=60)
                yahoo.pause(keep_clock=True)
                await until(lambda: stale(alerts) == ["firing"], "stale.rut", timeout=60)
                yahoo.resume()
                await asyncio.wait_for(exchange.replay_done.wait(), 180)
                eth = daemon.engine.builders("eth")
                await until(lambda: not any(b.holding for b in eth), timeout=30)
                muted.append(rules.status("recoupling").muted_since is not None)
        finally:
            await yahoo.stop()
    config = tmp / "backtest.yaml"
    config.write_text(yaml.safe_dump({"feeds": feeds(), **CONFIG}))
    return Replay(rut, tmp / "record", alerts, live, config, muted)


def recorded(path: Path) -> dict[int, tuple[float, ...]]:
    bars = load_csv(path).bars
    return {
        int(t): (float(o), float(h), float(lo), float(c), float(v))
        for t, o, h, lo, c, v in zip(
            bars.time, bars.open, bars.high, bars.low, bars.close, bars.volume, strict=True
        )
    }


def test_recorded_equity_bars_are_the_input_bars_in_session_only(replay: Replay) -> None:
    got = recorded(replay.record / "rut_5m.csv")
    rut = replay.rut
    given = {
        int(t): (float(o), float(h), float(lo), float(c), float(v))
        for t, o, h, lo, c, v in zip(
            rut.time, rut.open, rut.high, rut.low, rut.close, rut.volume, strict=True
        )
        if t < CLOSE
    }
    assert got == {t: given[t] for t in got}, "every recorded bar is the bar replayed"
    assert set(got) >= {t for t in given if t >= LIVE}, "no bar of the live stretch is missing"
    calendar = MarketCalendar()
    assert all(calendar.is_open(t) for t in got)
    # the half day's last bar opens 12:55 New York: it ends at the 13:00 close
    assert max(got) == CLOSE - 300_000
    hourly = recorded(replay.record / "rut_1h.csv")
    for t, (o, h, lo, c, v) in hourly.items():
        five = [given[k] for k in sorted(given) if t <= k < t + H]
        assert (o, h, lo, c) == (
            five[0][0],
            max(x[1] for x in five),
            min(x[2] for x in five),
            five[-1][3],
        )
        assert v == pytest.approx(sum(x[4] for x in five), rel=1e-12)
    assert max(hourly) == CLOSE - H  # 12:00 to the 13:00 close


def test_crypto_bars_run_on_past_the_equity_close(replay: Replay) -> None:
    eth = recorded(replay.record / "eth_5m.csv")
    assert {t for t in eth if t >= CLOSE} >= set(range(CLOSE, END - 300_000, 300_000))


def test_live_correlation_equals_the_backtest_of_the_recorded_bars(
    replay: Replay, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "metrics.csv"
    data = [f"{f}={replay.record / f'{f}_5m.csv'}" for f in ("eth", "rut")]
    argv = ["backtest", "--config", str(replay.config), "--metrics-out", str(out)]
    assert main([*argv, "--data", data[0], "--data", data[1]]) == 0
    with out.open() as rows:
        table = list(csv.DictReader(rows))
    for metric in ("corr", "corr_1h"):
        values = replay.live[metric]
        backtest = {row["time"]: float(row[metric]) for row in table if row[metric]}
        live = {t: v for t, v in values if t >= LIVE}
        # warmed up from the fakes' history: valid from the first bar of the replay on
        assert live and not any(math.isnan(v) for v in live.values()), metric
        for t, value in live.items():
            assert backtest[iso_time(t)] == pytest.approx(value, abs=1e-9), (metric, iso_time(t))
    # the rule on the cross-market correlation fires where the backtest says
    alerts = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    expected = [(a["time"], a["state"]) for a in alerts if a["time"] >= iso_time(LIVE)]
    fired = [
        (iso_time(a.time), a.state)
        for a in replay.alerts
        if a.rule == "recoupling" and a.time >= LIVE
    ]
    assert fired == expected and expected


def test_daily_bars_and_correlation_equal_the_backtest(
    replay: Replay, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # the daily bars come from both fakes' history (the warm-up), the same way as live closes
    rut = replay.rut
    daily = recorded(replay.record / "rut_1d.csv")
    for day, (o, h, lo, c, v) in daily.items():
        rows = (rut.time >= day) & (rut.time < day + DAY)
        assert (o, h, lo, c) == (
            float(rut.open[rows][0]),
            float(rut.high[rows].max()),
            float(rut.low[rows].min()),
            float(rut.close[rows][-1]),
        )
        assert v == pytest.approx(float(rut.volume[rows].sum()), rel=1e-12)
    sessions = {int(t) - int(t) % DAY for t in rut.time if t < JUL3}
    assert set(daily) == sessions and len(daily) >= 6
    out = tmp_path / "daily.csv"
    config = tmp_path / "daily.yaml"
    config.write_text(
        yaml.safe_dump({"feeds": feeds(), "metrics": {"corr_1d": CONFIG["metrics"]["corr_1d"]}})
    )
    data = [f"--data={f}={replay.record / f'{f}_1d.csv'}" for f in ("eth", "rut")]
    assert main(["backtest", "--config", str(config), "--metrics-out", str(out), *data]) == 0
    capsys.readouterr()
    with out.open() as metrics:
        table = csv.DictReader(metrics)
        backtest = {r["time"]: float(r["corr_1d"]) for r in table if r["corr_1d"]}
    live = {iso_time(t): v for t, v in replay.live["corr_1d"] if not math.isnan(v)}
    assert live, "no daily correlation"
    assert {t: pytest.approx(v, abs=1e-9) for t, v in backtest.items()} == live


def test_a_silent_equity_feed_is_stale_in_session_only(replay: Replay) -> None:
    # silent in session: stale, then back; silent from the close on: nothing
    times = [(a.state, a.time) for a in replay.alerts if a.rule == "stale.rut"]
    assert [state for state, _ in times] == ["firing", "resolved"]
    assert all(LIVE < t < CLOSE for _, t in times), [iso_time(t) for _, t in times]
    # the rule reading rut is muted while it is stale, and no longer once it is back
    assert replay.muted == [True, False]
    firing, back = (t for _, t in times)
    assert not [a for a in replay.alerts if a.rule == "recoupling" and firing <= a.time < back]


def test_silence_over_a_holiday_and_a_weekend_raises_nothing(tmp_path: Path) -> None:
    # from the half day's last minutes through Friday 4 July (Independence Day) and the
    # weekend into Monday's open: silent 3.8 days, about 13 s here, past stale_after many times
    daily = load_csv(DATA / "daily" / "yahoo_alitalbi" / "RUT.csv").bars
    shape = load_csv(BARS / "ETHUSDT_5m.csv").bars
    rut = session_bars(daily.between(JUL3 - DAY, JUL3 + 5 * DAY), shape)
    monday = JUL3 + 4 * DAY + 13 * H + 30 * 60_000  # 7 July 09:30 New York
    assert not MarketCalendar().is_open(JUL3 + DAY + 15 * H)  # the holiday, in session hours
    # only the closed days are judged: a loaded machine that stalls past 0.3 s in the half
    # day's last minutes or Monday's first ones is stale there, rightly
    alerts = asyncio.run(closed_days(tmp_path, rut, monday))
    fired = [a.time for a in alerts if a.state == "firing"]
    assert [iso_time(t) for t in fired if CLOSE <= t < monday] == []


async def closed_days(tmp: Path, rut: BarFrame, monday: int) -> list[Alert]:
    alerts: list[Alert] = []
    # the clock told every 0.1 s (2500 s of data): a session the daemon wrongly took for one
    # (the holiday's 6.5 h are about 0.9 s here) would go stale past 0.3 s of silence
    yahoo = FakeYahoo(
        {"^RUT": rut}, speed=25_000.0, start=CLOSE - 300_000, tick_every=30.0, heartbeat_every=0.1
    )
    await yahoo.start()
    try:
        rut_feed = feeds(yahoo=yahoo)["rut"] | {"stale_after": "0.3s"}
        metric = {"type": "sma", "series": "rut", "timeframe": "5m", "period": 3}
        settings = Settings(
            feeds={"rut": rut_feed},
            metrics={"sma": metric},
            state_dir=tmp / "state",
            http={"port": 0},
        )
        async with Daemon(settings) as daemon:
            daemon.engine.rules.subscribe(alerts.append)
            # Monday's first 5-minute bar closed: the stream ran through the closed days
            five = daemon.engine.builders("rut")[0]
            await until(
                lambda: (last := five.bars.last()) is not None and last.time >= monday,
                "Monday's first bar",
                timeout=90,
            )
    finally:
        await yahoo.stop()
    return [a for a in alerts if a.rule == "stale.rut"]


def test_a_restart_mid_session_fills_the_equity_bars_it_missed(tmp_path: Path) -> None:
    # the daemon stops at 12:15 New York and starts again at 12:35, the fake Yahoo running
    # on: its record holds every bar to the close as replayed, the missed ones from the chart
    daily = load_csv(DATA / "daily" / "yahoo_alitalbi" / "RUT.csv").bars
    shape = load_csv(BARS / "ETHUSDT_5m.csv").bars
    rut = session_bars(daily.between(JUL3 - 3 * DAY, JUL3 + DAY), shape)
    asyncio.run(restarted(tmp_path, rut))
    given = {
        int(t): (float(o), float(h), float(lo), float(c), float(v))
        for t, o, h, lo, c, v in zip(
            rut.time, rut.open, rut.high, rut.low, rut.close, rut.volume, strict=True
        )
    }
    five = recorded(tmp_path / "record" / "rut_5m.csv")
    assert set(five) >= set(range(LIVE, CLOSE, 300_000)), "a bar of the session is missing"
    assert five == {t: given[t] for t in five}
    hourly = recorded(tmp_path / "record" / "rut_1h.csv")
    o, h, lo, c, v = hourly[LIVE]  # the hour to the close, 20 of its minutes missed
    hour = [given[t] for t in range(LIVE, CLOSE, 300_000)]
    assert max(hourly) == LIVE and (o, h, lo, c) == (
        hour[0][0],
        max(x[1] for x in hour),
        min(x[2] for x in hour),
        hour[-1][3],
    )
    assert v == pytest.approx(sum(x[4] for x in hour), rel=1e-12)


async def restarted(tmp: Path, rut: BarFrame) -> None:
    metrics = {
        f"sma_{tf}": {"type": "sma", "series": "rut", "timeframe": tf, "period": 2}
        for tf in ("5m", "1h")
    }
    yahoo = FakeYahoo({"^RUT": rut}, speed=600.0, start=LIVE, tick_every=30.0, heartbeat_every=0.5)
    await yahoo.start()
    try:
        settings = Settings(
            feeds={"rut": feeds(yahoo=yahoo)["rut"]},
            metrics=metrics,
            state_dir=tmp / "state",
            http={"port": 0},
        )
        async with Daemon(settings, record=tmp / "record"):
            await until(lambda: yahoo.clock_ms >= LIVE + 15 * 60_000, "12:15", timeout=60)
        await until(lambda: yahoo.clock_ms >= LIVE + 35 * 60_000, "12:35", timeout=60)
        async with Daemon(settings, record=tmp / "record") as daemon:
            hourly = daemon.engine.builders("rut")[-1]
            await until(
                lambda: (last := hourly.bars.last()) is not None and last.time >= LIVE,
                "the hour to the close",
                timeout=60,
            )
    finally:
        await yahoo.stop()
