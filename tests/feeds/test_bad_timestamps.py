"""One bad frame costs one trade: ccxt.pro through a proxy that injects bad trades into a replay."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import numpy as np

from moodring.service.daemon import Daemon
from moodring.testing.fake_exchange import FakeExchange
from tests.support.captures import CAPTURES, expected_bars, recorded, settings_for, until_settled
from tests.support.wait import until
from tests.support.ws_proxy import WebsocketProxy

MINUTE = 60_000


def frame(trade: dict[str, Any], **change: object) -> str:
    return json.dumps({"stream": "ethusdt@trade", "data": {**trade, **change}})


def injections(trades: list[dict[str, Any]]) -> dict[int, list[str]]:
    """Bad frames to send just before chosen ETH trades (by trade id), copies of those trades."""

    def first(minute: int, after_s: float) -> dict[str, Any]:
        start = trades[0]["T"] // MINUTE * MINUTE + minute * MINUTE
        return next(t for t in trades if t["T"] >= start + after_s * 1000)

    ahead_5m = first(2, 10)
    ahead_30s = first(3, 40)  # lands in the next minute
    # 4 s ahead, so in the next minute while this one has trades left: within the allowed
    # skew, it closes its bar early; the bars it touched must be repaired
    ahead_4s = first(1, 56.5)
    bad_id = first(4, 20)
    unreadable = first(4, 40)
    return {
        ahead_5m["t"]: [
            frame(ahead_5m, T=ahead_5m["T"] + 5 * MINUTE, E=ahead_5m["E"] + 5 * MINUTE)
        ],
        ahead_30s["t"]: [frame(ahead_30s, T=ahead_30s["T"] + 30_000, E=ahead_30s["E"] + 30_000)],
        ahead_4s["t"]: [frame(ahead_4s, T=ahead_4s["T"] + 4_000, E=ahead_4s["E"] + 4_000)],
        bad_id["t"]: [frame(bad_id, t=f"x{bad_id['t']}")],
        unreadable["t"]: ['{"stream":"ethusdt@trade","data":{"e":"trade","E":'],
    }


async def test_bad_timestamps_and_ids_cost_only_their_own_trades(tmp_path: Path) -> None:
    fake = FakeExchange(CAPTURES, speed=40.0)
    await fake.start()
    extra = injections(fake.trades("ETHUSDT"))
    injected: list[str] = []

    def rewrite(text: str) -> list[str]:
        if text.startswith('{"stream":"ethusdt@trade"'):
            bad = extra.pop(json.loads(text)["data"]["t"], [])
            injected.extend(bad)
            return [*bad, text]
        return [text]

    proxy = WebsocketProxy(fake.port, rewrite)
    await proxy.start()
    record = tmp_path / "record"
    proxied = f"ws://127.0.0.1:{proxy.port}/stream/ws"
    daemon = Daemon(settings_for(fake, tmp_path, ws_url=proxied), record=record)
    total = len(fake.trades("ETHUSDT")) + len(fake.trades("BTCUSDT"))
    try:
        async with daemon:
            stats = daemon.parts[0].stats
            await asyncio.wait_for(fake.replay_done.wait(), 120)
            await until(lambda: stats.trades >= total, timeout=30)
            await until_settled(daemon)
    finally:
        await proxy.stop()
        await fake.stop()
    assert not extra and len(injected) == 5, "every bad frame should have been sent"
    for feed, symbol in (("eth", "ETHUSDT"), ("btc", "BTCUSDT")):
        want = expected_bars(fake, symbol)
        got = recorded(record / f"{feed}_1m.csv")
        assert len(got) >= len(want), feed
        got = got.iloc[: len(want)]
        assert list(got.index) == list(want.index), feed
        for column in ("open", "high", "low", "close"):
            np.testing.assert_array_equal(got[column], want[column], err_msg=f"{feed} {column}")
        np.testing.assert_allclose(got["volume"], want["volume"], rtol=1e-12, err_msg=feed)
    counts = daemon.bad_frames.counts
    assert counts[("eth", "timestamp in the future")] == 2
    assert counts[("eth", "bad trade id")] == 1
    # the stream name says which feed an unreadable frame belongs to
    unreadable = [n for (feed, why), n in counts.items() if why.startswith("unreadable frame")]
    assert sum(unreadable) == 1 and counts.keys() <= {
        ("eth", "timestamp in the future"),
        ("eth", "bad trade id"),
        ("eth", "unreadable frame (JSONDecodeError)"),
    }, counts
    assert daemon.bad_frames.total() == 4, counts
