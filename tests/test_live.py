"""``moodring run`` for real: ccxt.pro against the fake exchange replaying real captures."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from moodring.cli import main
from moodring.feeds import ccxt_feed
from moodring.service.daemon import Daemon
from moodring.settings import Settings
from moodring.testing.fake_exchange import FakeExchange
from tests.oracles import DATA

CAPTURES = [
    DATA / "ws/hftbacktest_binance_spot/ethusdt_20240808.gz",
    DATA / "ws/hftbacktest_binance_spot/btcusdt_20240808.gz",
]


def settings_for(fake: FakeExchange, tmp_path: Path, **feed: object) -> Settings:
    urls = {"ws_url": fake.ws_url, "rest_url": fake.rest_url, **feed}
    return Settings(
        feeds={"eth": {"symbol": "ETH/USDT", **urls}, "btc": {"symbol": "BTC/USDT", **urls}},
        series={"ethbtc": {"ratio": ["eth", "btc"]}},
        metrics={
            "mfi": {"type": "mfi", "series": "eth", "timeframe": "1m", "period": 2},
            "corr": {"type": "correlation", "a": "eth", "b": "btc", "timeframe": "1m", "window": 2},
            "brk": {"type": "breakout", "series": "ethbtc", "timeframe": "1m", "lookback": 2},
        },
        state_dir=tmp_path / "state",
        http={"port": 0},
    )


def expected_bars(fake: FakeExchange, symbol: str) -> pd.DataFrame:
    """Minute bars computed directly from the capture's trade frames."""
    trades = pd.DataFrame(fake.trades(symbol))
    trades["bar"] = trades["T"] // 60_000 * 60_000
    trades["p"] = trades["p"].astype(float)
    trades["q"] = trades["q"].astype(float)
    bars = trades.groupby("bar").agg(
        open=("p", "first"),
        high=("p", "max"),
        low=("p", "min"),
        close=("p", "last"),
        volume=("q", "sum"),
    )
    bars.index = pd.to_datetime(bars.index, unit="ms", utc=True)
    return bars.iloc[:-1]  # the last minute is still forming when the replay ends


def recorded(path: Path) -> pd.DataFrame:
    table = pd.read_csv(path)
    table.index = pd.to_datetime(table.pop("timestamp"), utc=True)
    return table


async def until(condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        await asyncio.sleep(0.05)


async def replay(tmp_path: Path, *, drop_every: float | None) -> tuple[FakeExchange, Path]:
    fake = FakeExchange(CAPTURES, speed=40.0, drop_every=drop_every)
    await fake.start()
    record = tmp_path / "record"
    daemon = Daemon(settings_for(fake, tmp_path), record=record)
    run = asyncio.create_task(daemon.run())
    try:
        await asyncio.wait_for(fake.replay_done.wait(), 120)
        # let the last repairs finish: no closed bar waits any more
        builders = [b for f in ("eth", "btc") for b in daemon.engine.builders(f)]
        await until(lambda: not any(b.holding for b in builders), 30)
    finally:
        daemon.stop()
        await asyncio.wait_for(run, 10)
        await fake.stop()
    return fake, record


@pytest.mark.parametrize("drop_every", [None, 1.0], ids=["steady", "dropped-every-1s"])
async def test_recorded_bars_equal_bars_built_from_the_trade_frames(tmp_path, drop_every) -> None:
    fake, record = await replay(tmp_path, drop_every=drop_every)
    if drop_every:
        assert fake.drops >= 3, "the replay should have been interrupted several times"
    for feed, symbol in (("eth", "ETHUSDT"), ("btc", "BTCUSDT")):
        want = expected_bars(fake, symbol)
        got = recorded(record / f"{feed}_1m.csv")
        # a drop may swallow the replay's last trades: nothing then closes the final bar
        # (a live exchange's next trade or clock would); every other bar must be there
        assert len(got) >= len(want) - (1 if drop_every else 0), feed
        want = want.iloc[: len(got)]
        assert list(got.index) == list(want.index), feed
        for column in ("open", "high", "low", "close"):
            np.testing.assert_array_equal(got[column], want[column], err_msg=f"{feed} {column}")
        np.testing.assert_allclose(got["volume"], want["volume"], rtol=1e-12)


async def test_bursts_beyond_ccxts_cache_lose_no_trade(tmp_path, monkeypatch) -> None:
    # as fast as possible, with a 2-trade cache: only trades taken as ccxt parses them
    # (not read back from its cache) all arrive
    monkeypatch.setattr(ccxt_feed, "CACHE_LIMIT", 2)
    fake = FakeExchange(CAPTURES, speed=0.0)
    await fake.start()
    daemon = Daemon(settings_for(fake, tmp_path))
    run = asyncio.create_task(daemon.run())
    stats = daemon.exchanges[0].stats
    try:
        await asyncio.wait_for(fake.replay_done.wait(), 120)
        total = sum(len(fake.trades(s)) for s in ("ETHUSDT", "BTCUSDT"))
        await until(lambda: stats.trades >= total, 30)
    finally:
        daemon.stop()
        await asyncio.wait_for(run, 10)
        await fake.stop()
    assert stats.trades == total
    assert stats.missed == 0


def fuzz_frames(n: int, template: dict, seed: int = 7) -> list[str]:
    """``n`` bad frames: broken JSON, non-JSON, and ETH trades with one bad field each."""
    rng = random.Random(seed)
    day = 86_400_000

    def trade(**change: object) -> str:
        data = {**template, "t": rng.randrange(10**9), **change}
        data = {k: v for k, v in data.items() if v is not None}
        return json.dumps({"stream": "ethusdt@trade", "data": data})

    makers = [
        lambda: '{"stream": "ethusdt@trade", "data": {"e": "trade"',  # truncated
        lambda: "not json at all " + str(rng.random()),
        lambda: "[1, 2, 3]",
        lambda: trade(p=None),  # missing price
        lambda: trade(p="NaN"),
        lambda: trade(p="0.00000000"),
        lambda: trade(p="-2683.80"),
        lambda: trade(q="-1.5"),
        lambda: trade(T=template["T"] + 3 * day),  # from the future
        lambda: trade(T=template["T"] - 30 * day),  # from long ago
        lambda: trade(T=None),
    ]
    return [rng.choice(makers)() for _ in range(n)]


async def test_ten_thousand_bad_frames_are_counted_and_never_stop_the_feed(tmp_path) -> None:
    fake = FakeExchange(CAPTURES, speed=5.0)
    await fake.start()
    daemon = Daemon(settings_for(fake, tmp_path))
    run = asyncio.create_task(daemon.run())
    stats = daemon.exchanges[0].stats
    bad = daemon.sink.bad_frames
    try:
        await until(lambda: stats.trades > 200, 60)
        template = fake.trades("ETHUSDT")[0]
        frames = fuzz_frames(10_000, template)
        for i in range(0, len(frames), 100):
            for frame in frames[i : i + 100]:
                await fake.inject(frame)
            await asyncio.sleep(0)  # let the stream interleave with real trades
        await until(lambda: bad.total() >= 10_000, 60)
        before = stats.trades
        await until(lambda: stats.trades > before + 100, 60)  # the feed goes on
        assert not run.done()
        assert bad.total() == 10_000  # each one counted, once
        reasons = {reason for (_, reason) in bad.counts}
        # ccxt itself refuses "NaN" prices: those count as unreadable frames
        assert {
            "not JSON",
            "missing field",
            "price not positive",
            "bad amount",
            "timestamp in the future",
            "timestamp too old",
        } <= reasons
        assert any(r.startswith("unreadable frame") for r in reasons)
    finally:
        daemon.stop()
        await asyncio.wait_for(run, 10)
        await fake.stop()


async def test_a_silent_but_connected_socket_is_stale_and_reconnected(tmp_path) -> None:
    fake = FakeExchange(CAPTURES, speed=2.0)
    await fake.start()
    daemon = Daemon(settings_for(fake, tmp_path, stale_after="1s"))
    run = asyncio.create_task(daemon.run())
    stats = daemon.exchanges[0].stats
    alerts: list = []
    daemon.engine.rules.subscribe(alerts.append)
    try:
        await until(lambda: stats.trades > 50, 60)
        fake.pause()  # sockets stay open, nothing is sent
        await until(lambda: daemon.sink.states.get("eth") == "stale", 30)
        await until(lambda: stats.reconnects >= 1, 30)
        assert not run.done()
        fake.resume()
        await until(lambda: daemon.sink.states.get("eth") == "ok", 30)
        stale = [(a.rule, a.state) for a in alerts if a.rule.startswith("stale.")]
        assert ("stale.eth", "firing") in stale and ("stale.eth", "resolved") in stale
    finally:
        daemon.stop()
        await asyncio.wait_for(run, 10)
        await fake.stop()


def test_demo_runs_offline_and_alerts(caplog, capsys) -> None:
    caplog.set_level(logging.INFO)
    assert main(["--log-format", "json", "demo", "--for", "20", "--speed", "30"]) == 0
    alerts = [r.getMessage() for r in caplog.records if r.getMessage().startswith("ALERT ")]
    assert alerts, "the demo should alert within its first replayed minutes"
    assert any("ethbtc-breakout" in a for a in alerts)
    # --log-format json: every line of stderr is an object; alerts carry their rule and key
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    logged = [line for line in lines if line["message"].startswith("ALERT ")]
    assert [line["message"] for line in logged] == alerts
    assert all(
        line["level"] == "INFO" and line["alert_key"].startswith(line["rule"] + "|")
        for line in logged
    )
    queued = [line for line in lines if line["message"].startswith("alert ")]
    assert queued and all(line["alert_key"].startswith(line["rule"] + "|") for line in queued)
