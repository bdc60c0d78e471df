"""One real Binance capture replayed through every exchange protocol, to bare ccxt.pro clients.

No moodring feed code: each test drives a plain ccxt.pro client of the exchange, pointed at
the fake the way a feed would be (``configure_ccxt`` or the CLI's ``ws_url=``/``rest_url=``
line), and checks what the client parses against the captured trades.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import itertools
import json
import sys
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import ccxt.pro
import pytest
import websockets
from ccxt.base.errors import NetworkError

from moodring.testing.fake_exchange import (
    PROTOCOLS,
    FakeExchange,
    configure_ccxt,
    fuzz_frames,
)
from moodring.testing.fake_exchange.fuzz import TRADE_KEYS
from tests.support.captures import assert_bars_equal, pandas_bars
from tests.support.paths import BTC_CAPTURE as BTC
from tests.support.paths import DATA
from tests.support.paths import ETH_CAPTURE as ETH
from tests.support.wait import until

EXCHANGES = ["binance", "binanceus", "coinbase", "kraken", "bybit"]
QUOTE = {
    "binance": "USDT",
    "binanceus": "USDT",
    "coinbase": "USD",
    "kraken": "USD",
    "bybit": "USDT",
}
IDS = {
    "binance": ("ETHUSDT", "BTCUSDT"),
    "binanceus": ("ETHUSDT", "BTCUSDT"),
    "coinbase": ("ETH-USD", "BTC-USD"),
    "kraken": ("XETHZUSD", "XXBTZUSD"),
    "bybit": ("ETHUSDT", "BTCUSDT"),
}
# What load_markets asks for, per exchange, with the options configure_ccxt sets.
MARKET_CALLS = {
    "binance": ["/api/v3/exchangeInfo"],
    "binanceus": ["/api/v3/exchangeInfo"],
    "coinbase": [
        "/v2/currencies",
        "/v2/currencies/crypto",
        "/v2/exchange-rates",
        "/api/v3/brokerage/market/products",
        "/api/v3/brokerage/market/products?product_type=FUTURE",
    ],
    "kraken": ["/0/public/Assets", "/0/public/AssetPairs"],
    "bybit": ["/v5/market/instruments-info?category=spot"],
}
TRADE_TOPIC = {
    "binance": "ethusdt@trade",
    "binanceus": "ethusdt@trade",
    "coinbase": "market_trades:ETH-USD",
    "kraken": "trade:ETH/USD",
    "bybit": "publicTrade.ETHUSDT",
}
CRYPTOFEED = DATA / "ws" / "cryptofeed"


@contextlib.asynccontextmanager
async def bare_client(
    exchange: str, ws_url: str, rest_url: str, **config: Any
) -> AsyncIterator[Any]:
    """A bare ccxt.pro client of ``exchange`` pointed at the fake, closed afterwards."""
    ex = getattr(ccxt.pro, exchange)({"enableRateLimit": False, **config})
    configure_ccxt(ex, ws_url, rest_url)
    try:
        yield ex
    finally:
        await ex.close()


def exact(trade: dict[str, Any]) -> tuple[float, float, int]:
    """A captured trade's price, amount and time as a ccxt trade carries them."""
    return float(trade["p"]), float(trade["q"]), trade["T"]


async def watch_all(ex: Any, fake: FakeExchange, symbol: str) -> list[dict[str, Any]]:
    """Every trade a watch loop sees until the replay is over and the stream stays quiet."""
    got: list[dict[str, Any]] = []
    while True:
        try:
            got.extend(await asyncio.wait_for(ex.watch_trades(symbol), 3))
        except TimeoutError:
            if fake.replay_done.is_set():
                break
    # a watch resolves only on a frame arriving after the call: the last may wait in the cache
    seen = {t["id"] for t in got}
    return got + [t for t in ex.trades[symbol] if t["id"] not in seen]


@pytest.mark.parametrize("exchange", EXCHANGES)
async def test_a_bare_client_gets_markets_every_trade_and_the_history(exchange: str) -> None:
    fake = FakeExchange([ETH, BTC], exchange=exchange, speed=0)
    async with fake, bare_client(exchange, fake.ws_url, fake.rest_url) as ex:
        ex.options["tradesLimit"] = 100_000
        markets = await ex.load_markets()
        assert fake.rest_requests == MARKET_CALLS[exchange]
        quote = QUOTE[exchange]
        eth, btc = markets[f"ETH/{quote}"], markets[f"BTC/{quote}"]
        assert (eth["id"], btc["id"]) == IDS[exchange]
        assert eth["spot"] and eth["active"] and eth["precision"]["price"] == 0.01
        assert {m.symbol for m in fake.markets} == {f"ETH/{quote}", f"BTC/{quote}"}

        got = await watch_all(ex, fake, f"ETH/{quote}")
        captured = fake.trades(f"ETH/{quote}")
        assert [(t["price"], t["amount"], t["timestamp"]) for t in got] == [
            exact(t) for t in captured
        ]
        assert [t["side"] for t in got] == ["sell" if t["m"] else "buy" for t in captured]
        ids = [t["id"] for t in got]
        if exchange == "bybit":  # opaque strings, increasing, not consecutive
            assert all(isinstance(i, str) for i in ids) and len(set(ids)) == len(ids)
            assert [int(i) for i in ids] == sorted(int(i) for i in ids)
            steps = {int(b) - int(a) for a, b in itertools.pairwise(ids)}
            assert steps > {1}
        else:  # consecutive per market, the capture's
            assert ids == [str(t["t"]) for t in captured]

        await asyncio.wait_for(fake.replay_done.wait(), 60)
        for symbol in (f"ETH/{quote}", f"BTC/{quote}"):
            for interval in ("1m", "5m", "1h"):
                want = pandas_bars(fake.trades(symbol), interval)
                if exchange == "coinbase":  # Coinbase leaves out buckets without trades
                    want = [bar for bar in want if bar[5] > 0]
                got_bars = await ex.fetch_ohlcv(symbol, interval, since=want[0][0])
                assert_bars_equal(got_bars, want)
        assert await ex.fetch_time() // 1000 == fake.clock_ms // 1000
        recent = await ex.fetch_trades(f"BTC/{quote}", limit=5)
        btc_trades = fake.trades(f"BTC/{quote}")
        assert [(t["price"], t["amount"], t["timestamp"]) for t in recent] == [
            exact(t) for t in btc_trades[-5:]
        ]


@pytest.mark.parametrize("exchange", ["binance", "binanceus", "kraken", "bybit"])
async def test_watch_ohlcv_streams_the_bars_of_the_trades(exchange: str) -> None:
    fake = FakeExchange([ETH], exchange=exchange, speed=0)
    async with fake, bare_client(exchange, fake.ws_url, fake.rest_url) as ex:
        symbol = fake.markets[0].symbol
        seen: dict[int, list[float]] = {}
        updates = 0
        while True:
            try:
                candles = await asyncio.wait_for(ex.watch_ohlcv(symbol, "1m"), 3)
            except TimeoutError:
                assert fake.replay_done.is_set()
                for candle in ex.ohlcvs[symbol]["1m"]:  # the last update may wait there
                    seen[candle[0]] = candle
                break
            updates += 1
            for candle in candles:
                seen[candle[0]] = candle
        want = pandas_bars(fake.trades(symbol), "1m")
        assert updates > len(want)
        assert_bars_equal([seen[t] for t in sorted(seen)], want)


async def test_coinbase_candles_channel_numbers_every_message() -> None:
    fake = FakeExchange([ETH], exchange="coinbase", speed=0)
    async with fake, websockets.connect(fake.ws_url) as ws:
        await ws.send(
            json.dumps({"type": "subscribe", "product_ids": ["ETH-USD"], "channel": "candles"})
        )
        messages = []
        while True:
            try:
                messages.append(json.loads(await asyncio.wait_for(ws.recv(), 3)))
            except TimeoutError:
                assert fake.replay_done.is_set()
                break
        assert [m["sequence_num"] for m in messages] == list(range(len(messages)))
        assert messages[0]["channel"] == "subscriptions"
        assert messages[0]["events"] == [{"subscriptions": {"candles": ["ETH-USD"]}}]
        latest: dict[int, list[float]] = {}
        for message in messages[1:]:
            assert message["channel"] == "candles"
            for candle in message["events"][0]["candles"]:
                assert candle["product_id"] == "ETH-USD"
                fields = ("open", "high", "low", "close", "volume")
                latest[int(candle["start"]) * 1000] = [float(candle[f]) for f in fields]
        want = pandas_bars(fake.trades("ETH-USD"), "5m")
        assert len(messages) - 1 == len(fake.trades("ETH-USD"))  # one update per trade
        assert_bars_equal([[t, *latest[t]] for t in sorted(latest)], want)

        # a second subscriber gets the recent trades and candles as snapshots first
        async with websockets.connect(fake.ws_url) as late:
            for channel in ("market_trades", "candles"):
                await late.send(
                    json.dumps(
                        {"type": "subscribe", "product_ids": ["ETH-USD"], "channel": channel}
                    )
                )
            first = [json.loads(await asyncio.wait_for(late.recv(), 5)) for _ in range(4)]
        assert [m["sequence_num"] for m in first] == [0, 1, 2, 3]
        trades = first[0]["events"][0]
        assert trades["type"] == "snapshot" and len(trades["trades"]) == 100
        newest = fake.trades("ETH-USD")[-1]
        assert trades["trades"][0]["trade_id"] == str(newest["t"])  # newest first
        candles = first[2]["events"][0]
        assert candles["type"] == "snapshot" and len(candles["candles"]) == len(want)
        assert first[3]["events"] == [
            {"subscriptions": {"candles": ["ETH-USD"], "market_trades": ["ETH-USD"]}}
        ]


@pytest.mark.parametrize("exchange", EXCHANGES)
async def test_drops_reconnect_and_the_stream_goes_on(exchange: str) -> None:
    fake = FakeExchange([ETH], exchange=exchange, speed=100, drop_every=0.5)
    async with fake, bare_client(exchange, fake.ws_url, fake.rest_url) as ex:
        ex.options["tradesLimit"] = 100_000
        symbol = fake.markets[0].symbol
        by_time: dict[int, list[tuple[float, float, int]]] = {}
        for trade in fake.trades(symbol):
            by_time.setdefault(trade["T"], []).append(exact(trade))
        errors = 0
        after_drop = 0
        while True:
            try:
                batch = await asyncio.wait_for(ex.watch_trades(symbol), 2)
            except NetworkError:
                errors += 1
                if fake.replay_done.is_set():  # drops go on after the end: stop here
                    break
                continue
            except TimeoutError:
                if fake.replay_done.is_set():
                    break
                continue
            for trade in batch:
                assert (trade["price"], trade["amount"], trade["timestamp"]) in by_time[
                    trade["timestamp"]
                ]
            after_drop += len(batch) if errors else 0
        assert errors > 0 and fake.drops > 0 and after_drop > 0
        # a connection dropped just now may still be closing on the server's side
        await until(lambda: fake.connection_count <= 1, "one connection at most", timeout=10)
        rows = await ex.fetch_ohlcv(
            symbol, "1m", since=pandas_bars(fake.trades(symbol), "1m")[0][0]
        )
        assert_bars_equal(rows, pandas_bars(fake.trades(symbol), "1m"))


@pytest.mark.parametrize("exchange", EXCHANGES)
async def test_cli_second_line_points_a_bare_client_at_it(exchange: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "moodring.testing.fake_exchange",
        "--exchange",
        exchange,
        "--capture",
        str(ETH),
        "--speed",
        "0",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        port = int(await asyncio.wait_for(proc.stdout.readline(), 30))
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode().split()
        urls = dict(item.split("=", 1) for item in line)
        assert list(urls) == ["ws_url", "rest_url"]
        assert all(f"127.0.0.1:{port}" in url for url in urls.values())
        async with bare_client(exchange, urls["ws_url"], urls["rest_url"]) as ex:
            symbol = f"ETH/{QUOTE[exchange]}"
            assert symbol in await ex.load_markets()
            first = await asyncio.wait_for(ex.watch_trades(symbol), 30)
            want = FakeExchange([ETH], exchange=exchange).trades(symbol)
            assert [(t["price"], t["amount"], t["timestamp"]) for t in first] == [
                exact(t) for t in want[: len(first)]
            ]
    finally:
        proc.terminate()
        assert await asyncio.wait_for(proc.wait(), 30) == 0


@pytest.mark.parametrize(
    ("exchange", "quote", "market_id"),
    [
        ("binance", "USDC", "ETHUSDC"),
        ("kraken", "USDT", "ETHUSDT"),
        ("coinbase", "USDC", "ETH-USDC"),
    ],
)
async def test_quote_overrides_the_markets(exchange: str, quote: str, market_id: str) -> None:
    fake = FakeExchange([ETH], exchange=exchange, quote=quote, speed=0)
    async with fake, bare_client(exchange, fake.ws_url, fake.rest_url) as ex:
        markets = await ex.load_markets()
        assert list(markets) == [f"ETH/{quote}"] and markets[f"ETH/{quote}"]["id"] == market_id
        got = await watch_all(ex, fake, f"ETH/{quote}")
        assert [(t["price"], t["amount"], t["timestamp"]) for t in got] == [
            exact(t) for t in fake.trades(f"ETH/{quote}")
        ]
        assert all(t["symbol"] == f"ETH/{quote}" for t in got)


async def test_loop_continues_ids_and_time() -> None:
    fake = FakeExchange([ETH], exchange="coinbase", speed=0, loop=True)
    # an unbounded client queue keeps reading, so the endless stream cannot stall the close
    async with fake, websockets.connect(fake.ws_url, max_queue=None) as ws:
        await ws.send(
            json.dumps(
                {"type": "subscribe", "product_ids": ["ETH-USD"], "channel": "market_trades"}
            )
        )
        captured = fake.trades("ETH-USD")
        ids: list[int] = []
        times: list[str] = []
        while len(ids) < len(captured) + 10:
            message = json.loads(await asyncio.wait_for(ws.recv(), 10))
            for event in message["events"]:
                for trade in event.get("trades", []):
                    ids.append(int(trade["trade_id"]))
                    times.append(trade["time"])
        assert ids == list(range(captured[0]["t"], captured[0]["t"] + len(ids)))
        assert times[len(captured)] > times[len(captured) - 1]  # the second pass is later


@pytest.mark.parametrize("exchange", ["kraken", "bybit"])
async def test_pings_are_answered_so_a_quiet_client_stays_connected(exchange: str) -> None:
    fake = FakeExchange([ETH], exchange=exchange, speed=0, start_paused=True)
    async with fake, bare_client(exchange, fake.ws_url, fake.rest_url) as ex:
        # ccxt pings every 0.5 s and gives up after 1 s: a loaded machine answers in time
        ex.streaming["keepAlive"] = 500
        watch = asyncio.ensure_future(ex.watch_trades(fake.markets[0].symbol))
        await asyncio.wait_for(fake.wait_subscribed(TRADE_TOPIC[exchange]), 10)
        await asyncio.sleep(3.0)  # several keep-alive rounds with no data at all
        assert not watch.done()
        fake.resume()
        assert await asyncio.wait_for(watch, 10)
        assert fake.connection_count == 1 and fake.drops == 0

    fake = FakeExchange([ETH], exchange=exchange, speed=0, start_paused=True)
    async with fake, websockets.connect(fake.ws_url) as ws:
        if exchange == "kraken":
            status = json.loads(await ws.recv())
            assert status["channel"] == "status" and status["data"][0]["system"] == "online"
            await ws.send(json.dumps({"method": "ping", "req_id": 7}))
            pong = json.loads(await ws.recv())
            assert pong["method"] == "pong" and pong["req_id"] == 7
        else:
            await ws.send(json.dumps({"op": "ping", "req_id": "7"}))
            pong = json.loads(await ws.recv())
            assert pong["ret_msg"] == "pong" and pong["req_id"] == "7" and pong["success"]


def recorded(name: str) -> list[dict[str, Any]]:
    """The received frames and REST answers of a cryptofeed recording, parsed."""
    with gzip.open(CRYPTOFEED / f"{name}.jsonl.gz", "rt", encoding="utf-8") as lines:
        rows = [json.loads(line) for line in lines]
    return [
        {"kind": row["t"], "url": row.get("url", ""), "data": json.loads(row["data"])}
        for row in rows
        if row["t"] in ("recv", "http")
    ]


def keys(node: Any) -> Any:
    """A frame's structure: its keys, recursively, without the values."""
    if isinstance(node, dict):
        return {key: keys(value) for key, value in node.items()}
    if isinstance(node, list) and node:
        return [keys(node[0])]
    return type(node).__name__


async def test_frames_have_the_shapes_of_recorded_sessions() -> None:
    coinbase = recorded("COINBASE")
    bybit = recorded("BYBIT")
    kraken = recorded("KRAKEN")

    def first(rows: list[dict[str, Any]], test: Any) -> dict[str, Any]:
        return next(row["data"] for row in rows if test(row))

    fake = FakeExchange([ETH], exchange="coinbase")
    market = fake.markets[0]
    trade = fake.trades("ETH-USD")[0]
    real = first(
        coinbase,
        lambda r: (
            r["data"].get("channel") == "market_trades"
            and r["data"]["events"][0]["type"] == "update"
        ),
    )
    ours = json.loads(fake.protocol.trade_frame(market, trade))
    assert keys(ours) == keys(real)
    assert list(ours["events"][0]["trades"][0]) == list(real["events"][0]["trades"][0])
    products = first(coinbase, lambda r: r["kind"] == "http")["products"]
    ours_product = (
        await asyncio.to_thread(lambda: fake.protocol.rest("/api/v3/brokerage/market/products", {}))
    )["products"][0]
    assert set(ours_product) <= set(products[0])
    assert {k: type(v) for k, v in ours_product.items()} == {
        k: type(products[0][k]) for k in ours_product if products[0][k] is not None
    } | {"fcm_trading_session_details": type(None)}

    fake = FakeExchange([ETH], exchange="bybit")
    market = fake.markets[0]
    real = first(
        bybit,
        lambda r: (
            r["data"].get("topic", "").startswith("publicTrade.ETH")
            and "seq" in r["data"]["data"][0]
            and "L" not in r["data"]["data"][0]
        ),
    )
    ours = json.loads(fake.protocol.trade_frame(market, fake.trades("ETHUSDT")[0]))
    assert keys(ours) == keys(real)
    instruments = first(bybit, lambda r: "category=spot" in r["url"])["result"]["list"]
    ours_list = fake.protocol.rest("/v5/market/instruments-info", {"category": "spot"})
    assert keys(ours_list["result"]["list"][0]) == keys(instruments[1])

    fake = FakeExchange([ETH], exchange="kraken")
    pairs = first(kraken, lambda r: r["kind"] == "http")["result"]
    ours_pairs = fake.protocol.rest("/0/public/AssetPairs", {})["result"]
    assert set(pairs["XETHZUSD"]) <= set(ours_pairs["XETHZUSD"])
    assert {k: ours_pairs["XETHZUSD"][k] for k in ("altname", "wsname", "base", "quote")} == {
        k: pairs["XETHZUSD"][k] for k in ("altname", "wsname", "base", "quote")
    }


class _Client:
    """The little of a ccxt websocket client an exchange's ``handle_message`` touches."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.subscriptions: dict[str, Any] = {}
        self.futures: dict[str, Any] = {}

    def resolve(self, *args: Any) -> None:
        pass

    def reject(self, *args: Any) -> None:
        pass


@pytest.mark.parametrize("exchange", EXCHANGES)
async def test_fuzzed_frames_carry_no_usable_trade(exchange: str) -> None:
    frames = fuzz_frames(exchange)
    assert len(frames) == 1000
    assert frames == fuzz_frames(exchange) and frames != fuzz_frames(exchange, seed=1)
    decoded = []
    for frame in frames:
        try:
            decoded.append(json.loads(frame))
        except (ValueError, RecursionError):
            continue
    shaped = [d for d in decoded if isinstance(d, dict) and set(d) & TRADE_KEYS[exchange]]
    assert len(decoded) > 400 and len(shaped) > 400  # most are the exchange's frames, bent

    fake = FakeExchange([ETH], exchange=exchange)
    async with fake, bare_client(exchange, fake.ws_url, fake.rest_url) as ex:
        await ex.load_markets()
        symbol = fake.markets[0].symbol
        client = _Client(fake.ws_url + ("/0" if exchange.startswith("binance") else ""))
        usable = []
        for message in decoded:
            ex.trades = {}
            with contextlib.suppress(Exception):  # a handler that raises made no trade
                ex.handle_message(client, message)
            for cache in ex.trades.values():
                usable.extend(
                    t
                    for t in cache
                    if t["symbol"] == symbol
                    and all(isinstance(t[k], int | float) for k in ("price", "amount"))
                    and 0 < t["price"] < 1e300
                    and 0 < t["amount"] < 1e300
                    and isinstance(t["timestamp"], int)
                    and t["timestamp"] > 10**12
                )
        assert usable == []
        # the unbent frames do make trades: the check above can fail
        market = fake.markets[0]
        ex.trades = {}
        ex.handle_message(client, json.loads(fake.protocol.trade_frame(market, market.trades[0])))
        assert [t["price"] for c in ex.trades.values() for t in c] == [exact(market.trades[0])[0]]


@pytest.mark.parametrize(
    ("exchange", "status"), [("binance", 451), ("bybit", 403), ("coinbase", 403)]
)
async def test_a_restricted_location_is_refused(exchange: str, status: int) -> None:
    fake = FakeExchange([ETH], exchange=exchange, restricted=True)
    async with fake, bare_client(exchange, fake.ws_url, fake.rest_url) as ex:
        # ccxt reads 451 and 403 as ExchangeNotAvailable, bybit's 403 as RateLimitExceeded
        with pytest.raises(NetworkError, match=f" {status} "):
            await ex.load_markets()

        def get() -> tuple[int, str]:
            try:
                with urllib.request.urlopen(fake.rest_url + "/anything", timeout=10) as resp:
                    return resp.status, resp.read().decode()
            except urllib.error.HTTPError as err:
                return err.code, err.read().decode()

        code, body = await asyncio.to_thread(get)
        assert code == status
        if exchange == "binance":
            assert "restricted location" in json.loads(body)["msg"]
        with pytest.raises(websockets.InvalidStatus) as refused:
            await websockets.connect(fake.ws_url)
        assert refused.value.response.status_code == status


async def test_rest_errors_in_each_exchange_shape() -> None:
    def get(url: str) -> tuple[int, Any]:
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())

    async with FakeExchange([ETH], exchange="coinbase") as fake:
        status, body = await asyncio.to_thread(
            get, fake.rest_url + "/api/v3/brokerage/market/products/XRP-USD/candles"
        )
        assert status == 404 and body["error"] == "NOT_FOUND"
        status, body = await asyncio.to_thread(
            get,
            fake.rest_url + "/api/v3/brokerage/market/products/ETH-USD/candles"
            "?granularity=ONE_MINUTE&start=0&end=99999999",
        )
        assert status == 400 and "less than 350" in body["message"]
    async with FakeExchange([ETH], exchange="kraken") as fake:
        status, body = await asyncio.to_thread(get, fake.rest_url + "/0/public/OHLC?pair=XRPUSD")
        assert status == 200 and body["error"] == ["EQuery:Unknown asset pair"]
    async with FakeExchange([ETH], exchange="bybit") as fake:
        status, body = await asyncio.to_thread(
            get, fake.rest_url + "/v5/market/kline?category=spot&symbol=XRPUSDT&interval=1"
        )
        assert status == 200 and body["retCode"] == 10001


async def test_recent_trades_windows_for_gap_repair() -> None:
    fake = FakeExchange([ETH], exchange="kraken", speed=0, autostart=False)
    async with fake, bare_client("kraken", fake.ws_url, fake.rest_url) as ex:
        await asyncio.wait_for(fake.replay_done.wait(), 30)
        captured = fake.trades("ETH/USD")
        since = captured[2000]["T"]
        got = await ex.fetch_trades("ETH/USD", since=since)
        # Kraken answers the first 1000 trades after the whole second; ccxt drops the earlier
        served = [t for t in captured if t["T"] > since // 1000 * 1000][:1000]
        want = [exact(t) for t in served if t["T"] >= since]
        assert [(t["price"], t["amount"], t["timestamp"]) for t in got] == want

    fake = FakeExchange([ETH], exchange="coinbase", speed=0, autostart=False)
    async with fake, bare_client("coinbase", fake.ws_url, fake.rest_url) as ex:
        await asyncio.wait_for(fake.replay_done.wait(), 30)
        captured = fake.trades("ETH/USD")
        since, end = captured[2000]["T"], captured[2100]["T"]
        got = await ex.fetch_trades("ETH/USD", since=since, limit=1000, params={"until": end})
        # Coinbase answers whole seconds [start, end); ccxt drops what precedes ``since``
        window = [t for t in captured if since <= t["T"] < end // 1000 * 1000]
        assert sorted((t["timestamp"], t["price"], t["amount"]) for t in got) == sorted(
            (t["T"], *exact(t)[:2]) for t in window
        )

    fake = FakeExchange([ETH], exchange="bybit", speed=0, autostart=False)
    async with fake, bare_client("bybit", fake.ws_url, fake.rest_url) as ex:
        await asyncio.wait_for(fake.replay_done.wait(), 30)
        got = await ex.fetch_trades("ETH/USDT", limit=60)
        assert [(t["price"], t["amount"], t["timestamp"]) for t in got] == [
            exact(t) for t in fake.trades("ETH/USDT")[-60:]
        ]


def test_every_protocol_is_tested() -> None:
    assert sorted(PROTOCOLS) == sorted(EXCHANGES)


async def recv_json(ws: Any, timeout: float = 10) -> Any:
    """The next frame of a raw websocket, parsed."""
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def test_kraken_acknowledges_each_symbol_and_sends_snapshots_and_heartbeats() -> None:
    fake = FakeExchange([ETH, BTC], exchange="kraken", speed=0, autostart=False)
    async with fake, websockets.connect(fake.ws_url) as ws:
        await asyncio.wait_for(fake.replay_done.wait(), 30)
        assert (await recv_json(ws))["channel"] == "status"
        params = {"channel": "trade", "symbol": ["ETH/USD", "BTC/USD"], "snapshot": True}
        await ws.send(json.dumps({"method": "subscribe", "params": params, "req_id": 3}))
        frames = [await recv_json(ws) for _ in range(4)]
        acks = [f for f in frames if f.get("method") == "subscribe"]
        assert [a["result"]["symbol"] for a in acks] == ["ETH/USD", "BTC/USD"]
        assert all(a["success"] and a["req_id"] == 3 for a in acks)
        snapshots = {f["data"][0]["symbol"]: f for f in frames if f.get("channel") == "trade"}
        eth = snapshots["ETH/USD"]
        assert eth["type"] == "snapshot" and len(eth["data"]) == 50
        assert [t["trade_id"] for t in eth["data"]] == [
            t["t"] for t in fake.trades("ETH/USD")[-50:]
        ]

        params = {"channel": "ohlc", "symbol": ["ETH/USD"], "interval": 5}
        await ws.send(json.dumps({"method": "subscribe", "params": params, "req_id": 4}))
        ack, snapshot = await recv_json(ws), await recv_json(ws)
        assert ack["result"] == {
            "channel": "ohlc",
            "interval": 5,
            "snapshot": True,
            "symbol": "ETH/USD",
        }
        want = pandas_bars(fake.trades("ETH/USD"), "5m")
        got = [
            [
                int(datetime.fromisoformat(c["interval_begin"][:26] + "+00:00").timestamp()) * 1000,
                *(c[k] for k in ("open", "high", "low", "close", "volume")),
            ]
            for c in snapshot["data"]
        ]
        assert_bars_equal(got, want)

        params = {"channel": "trade", "symbol": ["XBT/USD"]}
        await ws.send(json.dumps({"method": "subscribe", "params": params, "req_id": 5}))
        refused = await recv_json(ws)
        assert not refused["success"] and "Currency pair not supported" in refused["error"]
        assert await recv_json(ws) == {"channel": "heartbeat"}  # about one a second


async def test_bybit_acknowledges_sends_the_forming_kline_and_refuses_unknown_topics() -> None:
    fake = FakeExchange([ETH], exchange="bybit", speed=0, autostart=False)
    async with fake, websockets.connect(fake.ws_url) as ws:
        await asyncio.wait_for(fake.replay_done.wait(), 30)
        await ws.send(json.dumps({"op": "subscribe", "req_id": "1", "args": ["kline.1.ETHUSDT"]}))
        ack, kline = await recv_json(ws), await recv_json(ws)
        assert ack["success"] and ack["op"] == "subscribe" and ack["req_id"] == "1"
        last = pandas_bars(fake.trades("ETHUSDT"), "1m")[-1]
        bar = kline["data"][0]
        assert kline["topic"] == "kline.1.ETHUSDT" and bar["start"] == last[0]
        assert [float(bar[k]) for k in ("open", "high", "low", "close")] == last[1:5]
        assert not bar["confirm"]
        await ws.send(
            json.dumps({"op": "subscribe", "req_id": "2", "args": ["publicTrade.XRPUSDT"]})
        )
        refused = await recv_json(ws)
        assert not refused["success"] and "publicTrade.XRPUSDT" in refused["ret_msg"]


async def test_coinbase_heartbeats_and_fewer_market_calls() -> None:
    fake = FakeExchange([ETH], exchange="coinbase", speed=0, start_paused=True)
    async with fake, websockets.connect(fake.ws_url) as ws:
        await ws.send(
            json.dumps({"type": "subscribe", "channel": "market_trades", "product_ids": []})
        )
        assert (await recv_json(ws))["type"] == "error"
        await ws.send(json.dumps({"type": "subscribe", "channel": "heartbeats"}))
        listing = await recv_json(ws)
        assert listing["events"] == [{"subscriptions": {"heartbeats": ["heartbeats"]}}]
        fake.resume()  # heartbeats stop while paused, like everything else
        beat = await recv_json(ws)
        assert beat["channel"] == "heartbeats" and beat["sequence_num"] == 1
        assert beat["events"][0]["heartbeat_counter"] == 1
    async with (
        FakeExchange([ETH], exchange="coinbase") as fake,
        bare_client("coinbase", fake.ws_url, fake.rest_url) as ex,
    ):
        ex.has["fetchCurrencies"] = False
        assert list(await ex.load_markets()) == ["ETH/USD"]
        assert len(fake.rest_requests) == 2
