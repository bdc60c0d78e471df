"""Every exchange end to end: the daemon on ccxt.pro against the fake speaking that exchange.

One real Binance capture replays through each protocol (re-encoded by the fake); what the
daemon records must equal the bars built from the capture's trades, whatever the exchange
offers to find and repair gaps (consecutive ids, message numbers, or only a disconnect).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from moodring.service.daemon import Daemon
from moodring.settings import Settings
from moodring.testing.fake_exchange import FakeExchange, fuzz_frames
from tests.test_live import CAPTURES, expected_bars, recorded, until

EXCHANGES = ["binance", "binanceus", "coinbase", "kraken", "bybit"]
QUOTE = {
    "binance": "USDT",
    "binanceus": "USDT",
    "coinbase": "USD",
    "kraken": "USD",
    "bybit": "USDT",
}


def settings_for(exchange: str, fake: FakeExchange, tmp_path: Path, **feed: object) -> Settings:
    quote = QUOTE[exchange]
    common = {"exchange": exchange, "ws_url": fake.ws_url, "rest_url": fake.rest_url, **feed}
    return Settings(
        feeds={
            "eth": {"symbol": f"ETH/{quote}", **common},
            "btc": {"symbol": f"BTC/{quote}", **common},
        },
        series={"ethbtc": {"ratio": ["eth", "btc"]}},
        metrics={
            "mfi": {"type": "mfi", "series": "eth", "timeframe": "1m", "period": 2},
            "corr": {"type": "correlation", "a": "eth", "b": "btc", "timeframe": "1m", "window": 2},
        },
        state_dir=tmp_path / "state",
        http={"port": 0},
    )


@pytest.mark.parametrize("exchange", EXCHANGES)
async def test_a_replay_with_drops_records_the_bars_of_the_capture(tmp_path, exchange) -> None:
    fake = FakeExchange(CAPTURES, exchange=exchange, speed=40.0, drop_every=1.0)
    await fake.start()
    record = tmp_path / "record"
    try:
        async with Daemon(settings_for(exchange, fake, tmp_path), record=record) as daemon:
            await asyncio.wait_for(fake.replay_done.wait(), 120)
            builders = [b for f in ("eth", "btc") for b in daemon.engine.builders(f)]
            await until(lambda: not any(b.holding for b in builders), 30)
            stats = daemon.parts[0].stats
    finally:
        await fake.stop()
    assert fake.drops >= 3, "the replay should have been interrupted several times"
    assert stats.reconnects >= 3 and stats.repairs >= 1
    for feed, symbol in (("eth", "ETH"), ("btc", "BTC")):
        want = expected_bars(fake, f"{symbol}/{QUOTE[exchange]}")
        got = recorded(record / f"{feed}_1m.csv")
        # a drop may swallow the replay's last trades: nothing then closes the final bar
        assert len(got) >= len(want) - 1, feed
        want = want.iloc[: len(got)]
        assert list(got.index) == list(want.index), feed
        for column in ("open", "high", "low", "close"):
            np.testing.assert_array_equal(got[column], want[column], err_msg=f"{feed} {column}")
        np.testing.assert_allclose(got["volume"], want["volume"], rtol=1e-12)


@pytest.mark.parametrize("exchange", EXCHANGES)
async def test_fuzzed_frames_are_counted_against_the_feed_and_survived(tmp_path, exchange) -> None:
    fake = FakeExchange(CAPTURES, exchange=exchange, speed=5.0)
    await fake.start()
    try:
        async with Daemon(settings_for(exchange, fake, tmp_path)) as daemon:
            stats = daemon.parts[0].stats
            bad = daemon.sink.bad_frames
            await until(lambda: stats.trades > 100, 60)
            frames = fuzz_frames(exchange, 1000, captures=CAPTURES[:1])
            for i in range(0, len(frames), 50):
                for frame in frames[i : i + 50]:
                    await fake.inject(frame)
                await asyncio.sleep(0)  # let the stream interleave with real trades
            await until(lambda: bad.total() >= 1000, 60)
            before = stats.trades
            await until(lambda: stats.trades > before + 50, 60)  # the feed goes on
            assert daemon.parts[0].running
            counts = dict(bad.counts)
    finally:
        await fake.stop()
    assert sum(counts.values()) == 1000, counts  # each one counted, once
    # every frame is an ETH frame: those that still name their market count against eth,
    # the others against the exchange, none against btc
    on_eth = sum(n for (feed, _), n in counts.items() if feed == "eth")
    assert on_eth >= 400, counts
    assert {feed for feed, _ in counts} == {"eth", exchange}, counts
