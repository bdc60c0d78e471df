"""``moodring run`` for real: ccxt.pro against the fake exchange replaying real captures."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path

import numpy as np
import pytest

from moodring.feeds.ccxt import exchange
from moodring.service.daemon import Daemon
from moodring.testing.fake_exchange import FakeExchange
from tests.support.captures import (
    CAPTURES,
    expected_bars,
    recorded,
    settings_for,
    until_recorded,
)
from tests.support.wait import until


async def replay(tmp_path: Path, *, drop_every: float | None) -> tuple[FakeExchange, Path]:
    fake = FakeExchange(CAPTURES, speed=40.0, drop_every=drop_every)
    await fake.start()
    record = tmp_path / "record"
    try:
        async with Daemon(settings_for(fake, tmp_path), record=record) as daemon:
            await asyncio.wait_for(fake.replay_done.wait(), 120)
            # let the last repairs finish: no closed bar waits any more
            await until_recorded(daemon, fake, record)
    finally:
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
    monkeypatch.setattr(exchange, "CACHE_LIMIT", 2)
    fake = FakeExchange(CAPTURES, speed=0.0)
    await fake.start()
    try:
        async with Daemon(settings_for(fake, tmp_path)) as daemon:
            stats = daemon.parts[0].stats
            await asyncio.wait_for(fake.replay_done.wait(), 120)
            total = sum(len(fake.trades(s)) for s in ("ETHUSDT", "BTCUSDT"))
            await until(lambda: stats.trades >= total, timeout=30)
    finally:
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
    try:
        async with Daemon(settings_for(fake, tmp_path)) as daemon:
            stats = daemon.parts[0].stats
            bad = daemon.sink.bad_frames
            await until(lambda: stats.trades > 200, timeout=60)
            template = fake.trades("ETHUSDT")[0]
            frames = fuzz_frames(10_000, template)
            for i in range(0, len(frames), 100):
                for frame in frames[i : i + 100]:
                    await fake.inject(frame)
                await asyncio.sleep(0)  # let the stream interleave with real trades
            await until(lambda: bad.total() >= 10_000, timeout=60)
            before = stats.trades
            await until(lambda: stats.trades > before + 100, timeout=60)  # the feed goes on
            assert daemon.feeds.running
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
        await fake.stop()


async def test_a_silent_but_connected_socket_is_stale_and_reconnected(tmp_path) -> None:
    fake = FakeExchange(CAPTURES, speed=2.0)
    await fake.start()
    alerts: list = []
    try:
        async with Daemon(settings_for(fake, tmp_path, stale_after="1s")) as daemon:
            stats = daemon.parts[0].stats
            daemon.engine.rules.subscribe(alerts.append)
            await until(lambda: stats.trades > 50, timeout=60)
            fake.pause()  # sockets stay open, nothing is sent
            await until(lambda: daemon.sink.states.get("eth") == "stale", timeout=30)
            await until(lambda: stats.reconnects >= 1, timeout=30)
            assert daemon.feeds.running
            fake.resume()
            await until(lambda: daemon.sink.states.get("eth") == "ok", timeout=30)
            stale = [(a.rule, a.state) for a in alerts if a.rule.startswith("stale.")]
            assert ("stale.eth", "firing") in stale and ("stale.eth", "resolved") in stale
    finally:
        await fake.stop()
