"""The fake Binance exchange against real ccxt.pro clients and raw websocket clients."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import ccxt.pro
import pytest
import websockets
from ccxt.base.errors import NetworkError

from moodring.testing.fake_exchange import FakeExchange, configure_ccxt
from tests.support.captures import assert_bars_equal, pandas_bars
from tests.support.paths import BTC_CAPTURE as BTC
from tests.support.paths import ETH_CAPTURE as ETH


def capture_trade_lines(path: Path) -> list[str]:
    """The raw JSON text of a capture's trade frames, as captured."""
    with gzip.open(path, "rt", encoding="utf-8") as lines:
        return [line.rstrip("\n").split(" ", 1)[1] for line in lines if "@trade" in line]


@contextlib.asynccontextmanager
async def client(fake: FakeExchange) -> AsyncIterator[Any]:
    """A ccxt.pro binance client configured for the fake exchange, closed afterwards."""
    ex = ccxt.pro.binance()
    configure_ccxt(ex, fake.ws_url, fake.rest_url)
    try:
        yield ex
    finally:
        await ex.close()


async def test_load_markets_makes_one_rest_call() -> None:
    async with FakeExchange([ETH, BTC]) as fake, client(fake) as ex:
        markets = await ex.load_markets()
        assert fake.rest_requests == ["/api/v3/exchangeInfo"]
        assert {"ETH/USDT", "BTC/USDT"} <= set(markets)
        eth = markets["ETH/USDT"]
        assert eth["spot"] and eth["active"] and eth["id"] == "ETHUSDT"
        assert eth["precision"]["price"] == 0.01 and eth["precision"]["amount"] == 0.0001
        assert markets["BTC/USDT"]["precision"]["amount"] == 0.00001


async def test_watch_trades_for_symbols_gets_every_trade() -> None:
    fake = FakeExchange([ETH, BTC], speed=0)
    async with fake, client(fake) as ex:
        ex.options["tradesLimit"] = 100_000
        await ex.load_markets()
        want = {
            (t["s"], t["t"]): t["p"] for sym in ("ETHUSDT", "BTCUSDT") for t in fake.trades(sym)
        }
        got: dict[tuple[str, int], str] = {}
        started = last = time.perf_counter()
        while len(got) < len(want):
            try:
                batch = await asyncio.wait_for(
                    ex.watch_trades_for_symbols(["ETH/USDT", "BTC/USDT"]), 2
                )
            except TimeoutError:
                # a watch resolves only on a frame arriving after the call, and returns one
                # symbol per call: the last updates stay in the cache when the stream ends
                assert fake.replay_done.is_set()
                break
            last = time.perf_counter()
            for trade in batch:
                got[(trade["info"]["s"], int(trade["id"]))] = trade["info"]["p"]
        elapsed = last - started
        print(
            f"\n{len(got)} trades via watch_trades_for_symbols in {elapsed:.2f}s"
            f" = {len(got) / elapsed:.0f} frames/s to one ccxt client at speed 0"
        )
        assert len(got) > 0.95 * len(want)
        for cached in ex.trades.values():
            for trade in cached:
                got.setdefault((trade["info"]["s"], int(trade["id"])), trade["info"]["p"])
        assert got == want
        ours = fake.trades("ETHUSDT")
        cached = [t["info"] for t in ex.trades["ETH/USDT"]]
        assert cached == ours  # the data objects arrive exactly as captured


async def test_watch_trades_single_symbol_gets_every_trade_in_order() -> None:
    fake = FakeExchange([ETH], speed=0)
    async with fake, client(fake) as ex:
        await ex.load_markets()  # default tradesLimit 1000 < 6106 trades: collect per call
        want = [(t["t"], float(t["p"]), float(t["q"])) for t in fake.trades("ETH/USDT")]
        got: list[tuple[int, float, float]] = []
        while len(got) < len(want):
            try:
                batch = await asyncio.wait_for(ex.watch_trades("ETH/USDT"), 2)
            except TimeoutError:
                # the frames that came after the last call wait in the cache for a next frame
                assert fake.replay_done.is_set()
                tail = [t for t in ex.trades["ETH/USDT"] if int(t["id"]) > got[-1][0]]
                assert tail
                got.extend((int(t["id"]), t["price"], t["amount"]) for t in tail)
                break
            got.extend((int(t["id"]), t["price"], t["amount"]) for t in batch)
        assert got == want
        assert len(ex.trades["ETH/USDT"]) == 1000  # the cache alone would not have them all


@pytest.mark.parametrize("interval", ["1m", "5m", "15m", "1h", "4h", "1d"])
async def test_fetch_ohlcv_after_replay_equals_pandas_bars(interval: str) -> None:
    fake = FakeExchange([ETH, BTC], speed=0, autostart=False)
    async with fake, client(fake) as ex:
        await asyncio.wait_for(fake.replay_done.wait(), 30)
        for symbol in ("ETH/USDT", "BTC/USDT"):
            want = pandas_bars(fake.trades(symbol), interval)
            got = await ex.fetch_ohlcv(symbol, interval, since=want[0][0])
            assert_bars_equal(got, want)
        raw = fake.klines("ETHUSDT", interval)
        assert raw[-1][6] > fake.clock_ms  # the last bar is still forming: partial
        assert sum(row[8] for row in raw) == len(fake.trades("ETHUSDT"))


async def test_rest_klines_follow_the_replay_clock() -> None:
    fake = FakeExchange([ETH], speed=0, autostart=False)
    async with fake, client(fake) as ex:
        while fake.position < 12_000:
            await asyncio.sleep(0)
        fake.pause()
        replayed = fake.replayed_trades("ETHUSDT")
        assert 0 < len(replayed) < len(fake.trades("ETHUSDT"))
        got = await ex.fetch_ohlcv("ETH/USDT", "1m", since=0)
        assert_bars_equal(got, pandas_bars(replayed, "1m"))
        server_time = await ex.fetch_time()
        assert server_time == fake.clock_ms >= replayed[-1]["E"]
        rows = fake.klines("ETHUSDT", "1m")
        assert rows[-1][0] <= fake.clock_ms < rows[-1][6]  # partial bar at the clock
        fake.resume()
        await asyncio.wait_for(fake.replay_done.wait(), 30)
        got = await ex.fetch_ohlcv("ETH/USDT", "1m", since=0)
        assert_bars_equal(got, pandas_bars(fake.trades("ETHUSDT"), "1m"))


async def test_watch_ohlcv_bars_equal_pandas_bars() -> None:
    fake = FakeExchange([ETH, BTC], speed=0)
    async with fake, client(fake) as ex:
        await ex.load_markets()
        seen: dict[int, list[float]] = {}
        updates = 0
        while True:
            try:
                candles = await asyncio.wait_for(ex.watch_ohlcv("ETH/USDT", "1m"), 2)
            except TimeoutError:
                assert fake.replay_done.is_set()
                for candle in ex.ohlcvs["ETH/USDT"]["1m"]:  # the last update may wait there
                    seen[candle[0]] = candle
                break
            updates += 1
            for candle in candles:
                seen[candle[0]] = candle
        want = pandas_bars(fake.trades("ETHUSDT"), "1m")
        got = [seen[t] for t in sorted(seen)]
        assert updates > len(want)
        assert_bars_equal(got[:-1], want[:-1])  # the closed bars
        assert_bars_equal(got[-1:], want[-1:])  # and the forming one as it stands


async def test_raw_stream_frames_and_kline_closing_flags() -> None:
    fake = FakeExchange([ETH], speed=0)
    async with fake, websockets.connect(fake.ws_url + "/0") as ws:
        sub = {"method": "SUBSCRIBE", "params": ["ethusdt@trade", "ethusdt@kline_1m"], "id": 7}
        await ws.send(json.dumps(sub))
        assert json.loads(await ws.recv()) == {"result": None, "id": 7}
        trades: list[str] = []
        closed: list[dict[str, Any]] = []
        klines = 0
        while True:
            try:
                text = await asyncio.wait_for(ws.recv(), 2)
            except TimeoutError:
                assert fake.replay_done.is_set()
                break
            frame = json.loads(text)
            if frame["stream"] == "ethusdt@trade":
                trades.append(str(text))
            else:
                assert frame["stream"] == "ethusdt@kline_1m"
                kline = frame["data"]["k"]
                klines += 1
                if kline["x"]:
                    closed.append(kline)
        assert trades == capture_trade_lines(ETH)  # the captured bytes, unchanged
        assert klines == len(trades)  # one kline update per trade
        want = pandas_bars(fake.trades("ETHUSDT"), "1m")
        got = [[k["t"], *(float(k[f]) for f in "ohlcv")] for k in closed]
        assert_bars_equal(got, want[:-1])
        assert all(k["T"] == k["t"] + 59_999 and k["n"] == k["L"] - k["f"] + 1 for k in closed)


async def test_drops_then_rest_gap_fill_recover_every_bar() -> None:
    fake = FakeExchange([ETH], speed=100, drop_every=0.5)
    async with fake, client(fake) as ex:
        await ex.load_markets()
        bars: dict[int, list[float]] = {}
        final: set[int] = set()  # bars REST showed with a later bar after them: closed
        errors = streamed = 0

        async def gap_fill() -> None:
            """Refetch from the oldest bar not known to be closed (a drop may cut any bar)."""
            open_bars = [t for t in bars if t not in final]
            since = min(open_bars) if open_bars else max(final, default=0)
            rows = await ex.fetch_ohlcv("ETH/USDT", "1m", since=since)
            for row in rows:
                bars[row[0]] = row
            final.update(row[0] for row in rows[:-1])

        while True:
            try:
                candles = await asyncio.wait_for(ex.watch_ohlcv("ETH/USDT", "1m"), 1.5)
            except NetworkError:
                errors += 1
                await gap_fill()
                if fake.replay_done.is_set():  # drops go on after the end: stop here
                    break
                continue
            except TimeoutError:
                if fake.replay_done.is_set():
                    break
                continue
            for candle in candles:
                if candle[0] not in final:
                    bars[candle[0]] = candle
                    streamed += 1
        await gap_fill()
        assert errors > 0 and fake.drops > 0 and streamed > 0
        want = pandas_bars(fake.trades("ETHUSDT"), "1m")
        assert_bars_equal([bars[t] for t in sorted(bars)], want)


async def test_pause_keeps_socket_open_and_silent_then_resume() -> None:
    fake = FakeExchange([ETH], speed=20)
    async with fake, client(fake) as ex:
        await ex.load_markets()
        first = await asyncio.wait_for(ex.watch_trades("ETH/USDT"), 10)
        assert first
        fake.pause()
        # frames already on the wire may still arrive; then silence
        for _ in range(50):
            try:
                await asyncio.wait_for(ex.watch_trades("ETH/USDT"), 0.5)
            except TimeoutError:
                break
        else:
            pytest.fail("frames kept arriving while paused")
        position = fake.position
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(ex.watch_trades("ETH/USDT"), 1.0)
        assert fake.position == position  # the clock stood still
        assert fake.connection_count == 1  # the socket stayed open
        fake.resume()
        again = await asyncio.wait_for(ex.watch_trades("ETH/USDT"), 10)
        assert again and int(again[-1]["id"]) > int(first[-1]["id"])


async def test_pause_keep_clock_drops_frames_but_time_moves() -> None:
    fake = FakeExchange([ETH], speed=0, start_paused=False)
    async with fake, websockets.connect(fake.ws_url + "/0") as ws:
        fake.pause(keep_clock=True)
        await ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["ethusdt@trade"], "id": 1}))
        assert json.loads(await ws.recv()) == {"result": None, "id": 1}
        await asyncio.wait_for(fake.wait_subscribed("ETHUSDT@trade"), 5)
        assert fake.subscribers("ethusdt@trade") == 1
        await asyncio.wait_for(fake.replay_done.wait(), 30)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(ws.recv(), 0.5)
        assert len(fake.replayed_trades("ETHUSDT")) == len(fake.trades("ETHUSDT"))


async def test_inject_reaches_every_raw_connection() -> None:
    fake = FakeExchange([ETH], speed=0, autostart=False, start_paused=True)
    async with (
        fake,
        websockets.connect(fake.ws_url + "/0") as one,
        websockets.connect(fake.ws_url + "/1") as two,
    ):
        for ws in (one, two):  # a reply proves the server registered the connection
            await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 1}))
            assert json.loads(await ws.recv()) == {"result": [], "id": 1}
        assert await fake.inject('{"stream":"ethusdt@trade","data":{"e":"trade"') == 2
        assert await fake.inject(b"\x00\xffnot json") == 2
        for ws in (one, two):
            assert (
                await asyncio.wait_for(ws.recv(), 5)
                == '{"stream":"ethusdt@trade","data":{"e":"trade"'
            )
            assert await asyncio.wait_for(ws.recv(), 5) == b"\x00\xffnot json"
        await one.send("{bad json")
        assert json.loads(await one.recv())["code"] == 3


async def test_rest_errors_and_extras() -> None:
    async with FakeExchange([ETH], speed=0, autostart=False) as fake:
        await asyncio.wait_for(fake.replay_done.wait(), 30)

        def get(path: str) -> tuple[int, Any]:
            try:
                with urllib.request.urlopen(fake.rest_url + path, timeout=10) as resp:
                    return resp.status, json.loads(resp.read())
            except urllib.error.HTTPError as err:
                return err.code, json.loads(err.read())

        assert await asyncio.to_thread(get, "/ping") == (200, {})
        assert await asyncio.to_thread(get, "/time") == (200, {"serverTime": fake.clock_ms})
        status, body = await asyncio.to_thread(get, "/nope")
        assert status == 404 and "code" in body
        status, body = await asyncio.to_thread(get, "/klines?symbol=XRPUSDT&interval=1m")
        assert (status, body["code"]) == (400, -1121)
        status, body = await asyncio.to_thread(get, "/klines?symbol=ETHUSDT&interval=7m")
        assert (status, body["code"]) == (400, -1120)
        status, rows = await asyncio.to_thread(get, "/klines?symbol=ETHUSDT&interval=1m&limit=2")
        assert status == 200 and len(rows) == 2 and rows[-1][6] > fake.clock_ms
        status, trades = await asyncio.to_thread(get, "/trades?symbol=ETHUSDT&limit=3")
        assert [t["id"] for t in trades] == [t["t"] for t in fake.trades("ETHUSDT")[-3:]]


async def test_cli_prints_port_and_serves_exchange_info() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "moodring.testing.fake_exchange",
        "--capture",
        str(ETH),
        "--capture",
        str(BTC),
        "--port",
        "0",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        port = int(line)

        def exchange_info() -> dict[str, Any]:
            url = f"http://127.0.0.1:{port}/api/v3/exchangeInfo"
            with urllib.request.urlopen(url, timeout=10) as resp:
                return json.loads(resp.read())

        info = await asyncio.to_thread(exchange_info)
        assert {s["symbol"] for s in info["symbols"]} == {"ETHUSDT", "BTCUSDT"}
        assert all(s["status"] == "TRADING" for s in info["symbols"])
    finally:
        proc.terminate()
        assert await asyncio.wait_for(proc.wait(), 30) == 0


async def test_relabel_replays_a_captured_markets_trades_under_another_name() -> None:
    async with FakeExchange(
        [ETH], speed=0, autostart=False, relabel={"SOLUSDT": "ETHUSDT"}
    ) as fake:
        await asyncio.wait_for(fake.replay_done.wait(), 60)
        eth, sol = fake.replayed_trades("ETHUSDT"), fake.replayed_trades("SOLUSDT")
        assert len(sol) == len(eth) > 1000
        assert all(s == {**e, "s": "SOLUSDT"} for s, e in zip(sol, eth, strict=True))
    with pytest.raises(ValueError, match="relabel SOLUSDT=ADAUSDT: the captures hold no ADAUSDT"):
        FakeExchange([ETH], relabel={"SOLUSDT": "ADAUSDT"})


def test_cli_relabel_of_a_market_not_captured_is_one_sentence() -> None:
    # it was a traceback
    argv = ["--capture", str(ETH), "--relabel", "SOLUSDT=ADAUSDT"]
    proc = subprocess.run(
        [sys.executable, "-m", "moodring.testing.fake_exchange", *argv],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (proc.returncode, proc.stdout) == (2, "")
    assert proc.stderr.splitlines() == [
        "python -m moodring.testing.fake_exchange: error: relabel SOLUSDT=ADAUSDT: "
        "the captures hold no ADAUSDT trades (ETHUSDT)"
    ]
