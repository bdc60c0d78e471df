"""Every exchange end to end: the daemon on ccxt.pro against the fake speaking that exchange.

One real Binance capture replays through each protocol (re-encoded by the fake); what the
daemon records must equal the bars built from the capture's trades, whatever the exchange
offers to find and repair gaps (consecutive ids, message numbers, or only a disconnect).
"""

from __future__ import annotations

import asyncio
import json
import logging

import aiohttp
import numpy as np
import pytest

from moodring.feeds.ccxt import exchange as ccxt_exchange
from moodring.service.daemon import Daemon
from moodring.testing.fake_exchange import FakeExchange, fuzz_frames
from tests.support.captures import CAPTURES, expected_bars, record_lines, recorded
from tests.support.exchanges import EXCHANGES, QUOTE, exchange_settings
from tests.support.sdnotify import NotifySocket
from tests.support.wait import until


@pytest.mark.parametrize(
    ("exchange", "eth_stream"),
    [*((name, "trades") for name in EXCHANGES), ("kraken", "ohlcv"), ("bybit", "ohlcv")],
)
async def test_a_replay_with_drops_records_the_bars_of_the_capture(
    tmp_path, exchange, eth_stream
) -> None:
    # with ohlcv, eth comes as the exchange's candles (Binance's: test_ohlcv_stream.py)
    record = tmp_path / "record"
    fake = FakeExchange(CAPTURES, exchange=exchange, speed=40.0, drop_every=1.0)
    async with fake:
        settings = exchange_settings(exchange, fake, tmp_path)
        eth = settings.feeds["eth"].model_copy(update={"stream": eth_stream})
        settings = settings.model_copy(update={"feeds": {**settings.feeds, "eth": eth}})
        async with Daemon(settings, record=record) as daemon:
            taken: list[tuple[str, object]] = []  # (feed, trade id) of every trade taken
            take = daemon.sink.trade

            def noting(feed: str, t_ms: int, price: float, amount: float, trade_id: object) -> None:
                taken.append((feed, trade_id))
                take(feed, t_ms, price, amount, trade_id)

            daemon.sink.trade = noting  # type: ignore[method-assign]
            await asyncio.wait_for(fake.replay_done.wait(), 120)
            wants = {
                feed: expected_bars(fake, f"{symbol}/{QUOTE[exchange]}")
                for feed, symbol in (("eth", "ETH"), ("btc", "BTC"))
            }
            builders = [b for f in wants for b in daemon.engine.builders(f)]

            def complete() -> bool:
                # a drop may swallow the replay's last trades: nothing then closes its final
                # bar until the stream's clock passes it (up to a minute later)
                return not any(b.holding for b in builders) and all(
                    record_lines(record / f"{feed}_1m.csv") >= len(want) - 1
                    for feed, want in wants.items()
                )

            await until(complete, "the capture's bars recorded", timeout=60)
            stats = daemon.parts[0].stats
    assert fake.drops >= 3, "the replay should have been interrupted several times"
    assert stats.reconnects >= 3 and stats.repairs >= 1
    assert (stats.candles > 100) == (eth_stream == "ohlcv")
    # none taken twice (Coinbase re-sends its last 100 trades on each subscription)
    assert len(taken) > 1000 and len(set(taken)) == len(taken)
    for feed, want in wants.items():
        got = recorded(record / f"{feed}_1m.csv")
        # after the capture's bars: its last minute (forming when the replay ended) and, as
        # the clock runs on, bars without trades
        after = got.iloc[len(want) :]
        assert (after["volume"].iloc[1:] == 0).all(), feed
        got = got.iloc[: len(want)]
        want = want.iloc[: len(got)]
        assert list(got.index) == list(want.index), feed
        for column in ("open", "high", "low", "close"):
            np.testing.assert_array_equal(got[column], want[column], err_msg=f"{feed} {column}")
        np.testing.assert_allclose(got["volume"], want["volume"], rtol=1e-12)


async def test_trades_coinbase_resends_on_subscribing_are_taken_once(tmp_path) -> None:
    # each subscription's snapshot re-sends the product's last 100 trades: dropped while
    # paused, every one of them was taken already
    fake = FakeExchange(CAPTURES, exchange="coinbase", speed=20.0)
    async with fake, Daemon(exchange_settings("coinbase", fake, tmp_path)) as daemon:
        taken: list[tuple[str, object]] = []  # (feed, trade id) of every trade taken
        take = daemon.sink.trade

        def noting(feed: str, t_ms: int, price: float, amount: float, trade_id: object) -> None:
            taken.append((feed, trade_id))
            take(feed, t_ms, price, amount, trade_id)

        daemon.sink.trade = noting  # type: ignore[method-assign]
        stats = daemon.parts[0].stats

        async def drop_while_paused(after: int) -> None:
            await until(lambda: len(taken) > after, f"{after} trades", timeout=60)
            fake.pause()
            replayed = [fake.replayed_trades(s) for s in ("ETH/USD", "BTC/USD")]
            last = {("eth", str(replayed[0][-1]["t"])), ("btc", str(replayed[1][-1]["t"]))}
            await until(lambda: last <= set(taken), "every replayed trade taken", timeout=30)
            before = len(taken) + stats.duplicates
            resent = sum(min(100, len(trades)) for trades in replayed)
            await fake.drop_connections()
            seen = lambda: len(taken) + stats.duplicates - before >= resent  # noqa: E731
            await until(seen, "the snapshots after reconnecting", timeout=30)
            fake.resume()

        await drop_while_paused(300)
        await drop_while_paused(600)
        await until(lambda: len(taken) > 1000, "trades after the drops", timeout=60)
    assert stats.reconnects >= 2
    assert len(set(taken)) == len(taken), "a trade was taken twice"
    assert stats.duplicates >= 2 * 2 * 100  # two snapshots of 100 each drop


@pytest.mark.parametrize("exchange", EXCHANGES)
async def test_fuzzed_frames_are_counted_against_the_feed_and_survived(tmp_path, exchange) -> None:
    fake = FakeExchange(CAPTURES, exchange=exchange, speed=5.0)
    async with fake, Daemon(exchange_settings(exchange, fake, tmp_path)) as daemon:
        stats = daemon.parts[0].stats
        bad = daemon.sink.bad_frames
        await until(lambda: stats.trades > 100, timeout=60)
        frames = fuzz_frames(exchange, 1000, captures=CAPTURES[:1])
        for i in range(0, len(frames), 50):
            for frame in frames[i : i + 50]:
                await fake.inject(frame)
            await asyncio.sleep(0)  # let the stream interleave with real trades
        await until(lambda: bad.total() >= 1000, timeout=60)
        before = stats.trades
        await until(lambda: stats.trades > before + 50, timeout=60)  # the feed goes on
        assert daemon.parts[0].running
        counts = dict(bad.counts)
    assert sum(counts.values()) == 1000, counts  # each one counted, once
    # every frame is an ETH frame: those that still name their market count against eth,
    # the others against the exchange, none against btc
    on_eth = sum(n for (feed, _), n in counts.items() if feed == "eth")
    assert on_eth >= 400, counts
    assert {feed for feed, _ in counts} == {"eth", exchange}, counts


@pytest.mark.parametrize("exchange", EXCHANGES)
async def test_warm_up_fills_the_bars_from_that_exchanges_rest_history(tmp_path, exchange) -> None:
    # the whole capture is history before the daemon starts
    async with FakeExchange(CAPTURES, exchange=exchange, speed=0.0, autostart=False) as fake:
        await asyncio.wait_for(fake.replay_done.wait(), 60)
        async with Daemon(exchange_settings(exchange, fake, tmp_path)) as daemon:
            part = daemon.parts[0]
            await asyncio.wait_for(part.warmed.wait(), 60)
            rings = {f: daemon.engine.builders(f)[0].bars for f in ("eth", "btc")}
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
    async with FakeExchange(CAPTURES, exchange=exchange, speed=2.0) as fake:
        settings = exchange_settings(exchange, fake, tmp_path, stale_after="1s")
        async with Daemon(settings) as daemon:
            stats = daemon.parts[0].stats
            await until(lambda: stats.trades > 20, timeout=60)
            fake.pause()  # sockets stay open, nothing is sent (heartbeats neither)
            await until(lambda: daemon.sink.states.get("eth") == "stale", timeout=30)
            await until(lambda: stats.reconnects >= 1, timeout=30)
            fake.resume()
            await until(lambda: daemon.sink.states.get("eth") == "ok", timeout=30)
            assert daemon.parts[0].running


@pytest.mark.parametrize("name", ["binance", "bybit"])
async def test_a_refused_location_is_said_once_retried_slowly_and_shown(
    tmp_path, monkeypatch, caplog, name
) -> None:
    caplog.set_level(logging.INFO)
    notify = NotifySocket(str(tmp_path / "notify.sock"))
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify.sock"))
    monkeypatch.setattr(ccxt_exchange, "RESTRICTED_RETRY", 0.3)
    fake = FakeExchange(CAPTURES, exchange=name, restricted=True)
    try:
        async with fake, Daemon(exchange_settings(name, fake, tmp_path)) as daemon:
            part = daemon.parts[0]
            await until(lambda: part.stats.reconnects >= 4, "4 retries", timeout=30)
            problem = daemon.problems()[name]
            url = f"http://127.0.0.1:{daemon.http.port}/healthz"
            async with aiohttp.ClientSession() as session, session.get(url) as response:
                status, body = response.status, json.loads(await response.text())
            sent = lambda: any(problem.encode() in d for _, d in notify.got)  # noqa: E731
            await until(sent, "STATUS= with the problem", timeout=10)
    finally:
        notify.close()
    assert not part.warmed.is_set()
    assert f"{name} refuses connections from this location" in problem
    assert "`exchange: coinbase`" in problem and "`exchange: kraken`" in problem
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.getMessage() for r in errors] == [f"eth, btc: {problem}"]  # once, not per retry
    # no backoff of a second: a retry each RESTRICTED_RETRY, each one REST call at most
    assert len(fake.rest_requests) <= part.stats.reconnects + 1
    assert status == 503 and body["problems"][name] == problem
