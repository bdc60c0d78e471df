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


@pytest.mark.parametrize(
    ("exchange", "eth_stream"),
    [*((name, "trades") for name in EXCHANGES), ("kraken", "ohlcv"), ("bybit", "ohlcv")],
)
async def test_a_replay_with_drops_records_the_bars_of_the_capture(
    tmp_path, exchange, eth_stream
) -> None:
    # with ohlcv, eth comes as the exchange's candles (Binance's: test_ohlcv_stream.py)
    fake = FakeExchange(CAPTURES, exchange=exchange, speed=40.0, drop_every=1.0)
    await fake.start()
    record = tmp_path / "record"
    settings = settings_for(exchange, fake, tmp_path)
    eth = settings.feeds["eth"].model_copy(update={"stream": eth_stream})
    settings = settings.model_copy(update={"feeds": {**settings.feeds, "eth": eth}})
    try:
        async with Daemon(settings, record=record) as daemon:
            await asyncio.wait_for(fake.replay_done.wait(), 120)
            builders = [b for f in ("eth", "btc") for b in daemon.engine.builders(f)]
            await until(lambda: not any(b.holding for b in builders), 30)
            stats = daemon.parts[0].stats
    finally:
        await fake.stop()
    assert fake.drops >= 3, "the replay should have been interrupted several times"
    assert stats.reconnects >= 3 and stats.repairs >= 1
    assert (stats.candles > 100) == (eth_stream == "ohlcv")
    for feed, symbol in (("eth", "ETH"), ("btc", "BTC")):
        want = expected_bars(fake, f"{symbol}/{QUOTE[exchange]}")
        got = recorded(record / f"{feed}_1m.csv")
        # a drop may swallow the replay's last trades: nothing then closes the final bar
        assert len(want) - 1 <= len(got) <= len(want) + 1, feed
        got = got.iloc[: len(want)]  # the last, still forming, may have closed
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


@pytest.mark.parametrize("exchange", EXCHANGES)
async def test_warm_up_fills_the_bars_from_that_exchanges_rest_history(tmp_path, exchange) -> None:
    fake = FakeExchange(CAPTURES, exchange=exchange, speed=0.0, autostart=False)
    await fake.start()  # the whole capture is history before the daemon starts
    try:
        await asyncio.wait_for(fake.replay_done.wait(), 60)
        async with Daemon(settings_for(exchange, fake, tmp_path)) as daemon:
            part = daemon.parts[0]
            await asyncio.wait_for(part.warmed.wait(), 60)
            rings = {f: daemon.engine.builders(f)[0].bars for f in ("eth", "btc")}
    finally:
        await fake.stop()
    for feed, symbol in (("eth", "ETH"), ("btc", "BTC")):
        ring = rings[feed]
        want = expected_bars(fake, f"{symbol}/{QUOTE[exchange]}").iloc[-len(ring) :]
        assert len(ring) >= 3, feed
        times = ring.time.window().astype("datetime64[ms]").astype("datetime64[ns]")
        assert list(times) == list(want.index.tz_localize(None).to_numpy()), feed
        for column in ("open", "high", "low", "close"):
            got = getattr(ring, column).window()
            np.testing.assert_array_equal(got, want[column], err_msg=f"{feed} {column}")
        np.testing.assert_allclose(ring.volume.window(), want["volume"], rtol=1e-12)


@pytest.mark.parametrize("exchange", EXCHANGES)
async def test_a_silent_socket_is_stale_and_reconnected(tmp_path, exchange) -> None:
    fake = FakeExchange(CAPTURES, exchange=exchange, speed=2.0)
    await fake.start()
    try:
        settings = settings_for(exchange, fake, tmp_path, stale_after="1s")
        async with Daemon(settings) as daemon:
            stats = daemon.parts[0].stats
            await until(lambda: stats.trades > 20, 60)
            fake.pause()  # sockets stay open, nothing is sent (heartbeats neither)
            await until(lambda: daemon.sink.states.get("eth") == "stale", 30)
            await until(lambda: stats.reconnects >= 1, 30)
            fake.resume()
            await until(lambda: daemon.sink.states.get("eth") == "ok", 30)
            assert daemon.parts[0].running
    finally:
        await fake.stop()
