"""Only the configured markets are loaded: ccxt.pro for real against a fake listing many."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import ccxt.pro as ccxtpro
import numpy as np
import pytest
from aiohttp import ClientSession, web

from moodring.feeds.ccxt import CcxtFeedConfig
from moodring.feeds.ccxt.check import check
from moodring.feeds.ccxt.exchange import ASKED_MARKETS_MAX, ExchangeFeeds, load_markets
from moodring.feeds.ccxt.venues import client_setup, venue
from moodring.market.frame import BarFrame
from moodring.service.daemon import Daemon
from moodring.settings import Settings
from moodring.testing.fake_exchange import FakeExchange
from tests.support.captures import CAPTURES, expected_bars, recorded, settings_for, until_recorded
from tests.support.webapp import serving

DAY_MS = 86_400_000
TODAY = 1_700_006_400_000  # 2023-11-15 00:00 UTC: the universe's day, not the captures'
# ccxt calls Binance's YOYO currency YOYOW: the market YOYOW/USDT has the id YOYOUSDT, not
# the YOYOWUSDT a filtered load asks for (here it replays the ETHUSDT capture)
RENAMED = {"YOYOUSDT": "ETHUSDT"}


def universe(count: int) -> dict[str, BarFrame]:
    """Return ``count`` markets of two flat daily bars, listed on ``TODAY``."""
    days = np.array([TODAY - DAY_MS, TODAY], dtype=np.int64)
    flat = np.ones(2)
    return {
        f"C{i:03d}USDT": BarFrame(days, flat, flat.copy(), flat.copy(), flat.copy(), flat.copy())
        for i in range(count)
    }


def market_queries(fake: FakeExchange, path_end: str = "/exchangeInfo") -> list[dict[str, str]]:
    """Return the query of every request to a path ending ``path_end`` the fake served, in order.

    A key given more than once keeps its last value.
    """
    return [{k: v[-1] for k, v in query.items()} for query in _queries(fake, path_end)]


def _queries(fake: FakeExchange, path_end: str) -> list[dict[str, list[str]]]:
    """Return every query (each key's values) of the fake's requests to ``...path_end``."""
    return [
        parse_qs(urlsplit(path).query)
        for path in fake.rest_requests
        if urlsplit(path).path.endswith(path_end)
    ]


def renamed_settings(fake: FakeExchange, tmp_path: Path) -> Settings:
    """``settings_for``'s, the eth feed on the market YOYOW/USDT (the ETH trades renamed)."""
    settings = settings_for(fake, tmp_path)
    eth = settings.feeds["eth"].model_copy(update={"symbol": "YOYOW/USDT"})
    return settings.model_copy(update={"feeds": {**settings.feeds, "eth": eth}})


async def stream(fake: FakeExchange, settings: Settings, record: Path) -> ExchangeFeeds:
    """Run a daemon over the whole replay until its bars are recorded; return its feeds."""
    async with Daemon(settings, record=record) as daemon:
        part = daemon.parts[0]
        assert isinstance(part, ExchangeFeeds)
        await asyncio.wait_for(fake.replay_done.wait(), 120)
        await until_recorded(daemon, fake, record)
    return part


def assert_recorded_capture(fake: FakeExchange, record: Path) -> None:
    """Assert the recorded minute bars are the capture's (ETH's under the eth feed)."""
    for feed, symbol in (("eth", "ETHUSDT"), ("btc", "BTCUSDT")):
        want = expected_bars(fake, symbol)
        got = recorded(record / f"{feed}_1m.csv")
        assert len(got) >= len(want) - 1, feed
        want = want.iloc[: len(got)]
        assert list(got.index) == list(want.index), feed
        np.testing.assert_array_equal(got["close"], want["close"], err_msg=feed)


async def test_a_daemon_loads_only_its_markets_of_an_exchange_listing_hundreds(
    tmp_path: Path,
) -> None:
    fake = FakeExchange(CAPTURES, speed=40.0, universe=universe(300), today=TODAY)
    assert len(fake.universe_symbols) >= 300
    record = tmp_path / "record"
    async with fake:
        part = await stream(fake, settings_for(fake, tmp_path), record)
    assert set(part._rest.markets) == {"ETH/USDT", "BTC/USDT"}
    assert set(part._client.markets) == {"ETH/USDT", "BTC/USDT"}
    assert market_queries(fake) == [{"symbols": '["ETHUSDT","BTCUSDT"]'}]
    assert part.stats.reconnects == 0
    assert_recorded_capture(fake, record)


async def test_a_market_refused_under_its_guessed_id_is_found_among_all_markets(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "moodring.feeds.ccxt")
    fake = FakeExchange(CAPTURES, speed=40.0, relabel=RENAMED)
    record = tmp_path / "record"
    async with fake:
        part = await stream(fake, renamed_settings(fake, tmp_path), record)
    # one refused filtered load, then one full load: what the daemon loaded before filtering
    assert market_queries(fake) == [{"symbols": '["YOYOWUSDT","BTCUSDT"]'}, {}]
    assert set(part._rest.markets) == {"ETH/USDT", "BTC/USDT", "YOYOW/USDT"}
    assert part._rest.market("YOYOW/USDT")["id"] == "YOYOUSDT"
    assert part.stats.reconnects == 0
    refused = [r for r in caplog.records if "refused the markets" in r.getMessage()]
    assert [r.levelno for r in refused] == [logging.INFO]
    assert_recorded_capture(fake, record)


@pytest.mark.parametrize(
    ("symbol", "market", "queries"),
    [
        ("BTC/USDT", "BTC/USDT (id BTCUSDT)", [{"symbols": '["BTCUSDT"]'}]),
        ("YOYOW/USDT", "YOYOW/USDT (id YOYOUSDT)", [{"symbols": '["YOYOWUSDT"]'}, {}]),
    ],
    ids=["filtered", "refused-then-all"],
)
async def test_check_feeds_loads_the_checked_market_or_all_if_refused(
    symbol: str, market: str, queries: list[dict[str, str]]
) -> None:
    async with FakeExchange(CAPTURES, speed=40.0, loop=True, relabel=RENAMED) as fake:
        feed = CcxtFeedConfig(symbol=symbol, ws_url=fake.ws_url, rest_url=fake.rest_url)
        found = await check("feed", feed, timeout=20.0)
    assert found.usable, found.reason
    assert found.market == market
    assert market_queries(fake) == queries


@pytest.mark.parametrize(
    ("symbol", "queries", "market"),
    [
        ("BTC/USD", [{"pair": "XBTUSD"}], "BTC/USD (id XXBTZUSD)"),
        ("LUNC/USD", [{"pair": "LUNCUSD"}, {}], "LUNC/USD (id LUNAUSD)"),
        ("LUNA/USD", [{"pair": "LUNAUSD"}, {}], None),
    ],
    ids=["asked-by-altname", "refused-then-all", "left-out-then-all"],
)
async def test_kraken_loads_the_pair_asked_for_by_its_altname_or_all(
    symbol: str, queries: list[dict[str, str]], market: str | None
) -> None:
    # ccxt calls Kraken's LUNA (replaying ETH here) LUNC: asked for as LUNCUSD it is refused;
    # LUNAUSD sends it, but as LUNC/USD, not the LUNA/USD asked for (Kraken's LUNA2)
    relabel = {"LUNAUSDT": "ETHUSDT"}
    async with FakeExchange(
        CAPTURES, speed=40.0, loop=True, exchange="kraken", relabel=relabel
    ) as fake:
        feed = CcxtFeedConfig(
            exchange="kraken", symbol=symbol, ws_url=fake.ws_url, rest_url=fake.rest_url
        )
        found = await check("feed", feed, timeout=20.0)
    assert market_queries(fake, "/AssetPairs") == queries
    if market is None:
        assert not found.usable and found.reason == f"kraken has no market {symbol}"
    else:
        assert found.usable, found.reason
        assert found.market == market


def product_ids(fake: FakeExchange) -> list[list[str] | None]:
    """Return each spot products request's ``product_ids`` (None: every product), in order."""
    spot = [q for q in _queries(fake, "/market/products") if "product_type" not in q]
    return [query.get("product_ids") for query in spot]


async def coinbase_markets(
    fake: FakeExchange, symbols: list[str], rest_url: str | None = None
) -> set[str]:
    """Load ``symbols``' markets as the feeds do, with a real ccxt.pro coinbase client."""
    client = ccxtpro.coinbase()
    try:
        client_setup("coinbase", client)
        known = venue("coinbase")
        known.configure(client, fake.ws_url, rest_url or fake.rest_url)
        await load_markets(client, known, symbols)
    finally:
        await client.close()
    return set(client.markets)


@pytest.mark.parametrize(
    ("symbol", "asked", "market"),
    [
        ("ETH/USD", [["ETH-USD"]], "ETH/USD (id ETH-USD)"),
        ("CELO/USD", [["CELO-USD"], None], "CELO/USD (id CGLD-USD)"),
        ("NONE/USD", [["NONE-USD"], None], None),
    ],
    ids=["asked-by-id", "left-out-then-all", "unknown"],
)
async def test_coinbase_loads_the_product_asked_for_by_its_id_or_all(
    symbol: str, asked: list[list[str] | None], market: str | None
) -> None:
    # ccxt calls Coinbase's CGLD (replaying ETH here) CELO: the product CELO-USD asked for
    # does not exist, so the products call leaves it out and every product is loaded
    relabel = {f"C{i:03d}USDT": "ETHUSDT" for i in range(20)} | {"CGLDUSDT": "ETHUSDT"}
    async with FakeExchange(
        CAPTURES, speed=40.0, loop=True, exchange="coinbase", relabel=relabel, relabel_thin=50
    ) as fake:
        feed = CcxtFeedConfig(
            exchange="coinbase", symbol=symbol, ws_url=fake.ws_url, rest_url=fake.rest_url
        )
        found = await check("feed", feed, timeout=20.0)
    assert product_ids(fake) == asked
    if market is None:
        assert not found.usable and found.reason == f"coinbase has no market {symbol}"
    else:
        assert found.usable, found.reason
        assert found.market == market


async def test_a_coinbase_client_holds_only_the_configured_products() -> None:
    relabel = {f"C{i:03d}USDT": "ETHUSDT" for i in range(20)}
    async with FakeExchange(
        CAPTURES, speed=40.0, exchange="coinbase", relabel=relabel, relabel_thin=50
    ) as fake:
        markets = await coinbase_markets(fake, ["ETH/USD", "BTC/USD"])
    assert len(fake.markets) == 22
    assert markets == {"ETH/USD", "BTC/USD"}
    assert product_ids(fake) == [["ETH-USD", "BTC-USD"]]


@pytest.mark.parametrize(
    ("extra", "asked"), [(ASKED_MARKETS_MAX - 2, True), (ASKED_MARKETS_MAX - 1, False)]
)
async def test_a_client_asks_for_at_most_so_many_markets_by_name(extra: int, asked: bool) -> None:
    # 400 Coinbase ids would make a 9 KB query: past the 8 KB request lines CDNs take
    symbols = ["ETH/USD", "BTC/USD"] + [f"C{i:03d}/USD" for i in range(extra)]
    async with FakeExchange(CAPTURES, speed=40.0, exchange="coinbase") as fake:
        markets = await coinbase_markets(fake, symbols)
    assert markets == {"ETH/USD", "BTC/USD"}
    first = product_ids(fake)[0]
    assert (first is not None and len(first) == len(symbols)) == asked


@pytest.mark.parametrize("extra", [0, ASKED_MARKETS_MAX])
async def test_spot_symbols_load_only_spot_markets_however_many(extra: int) -> None:
    # every Binance REST host pointed at the fake (not through configure, which makes the
    # client spot-only itself): a derivatives' markets call would show as another request
    symbols = ["ETH/USDT", "BTC/USDT"] + [f"C{i:03d}/USDT" for i in range(extra)]
    async with FakeExchange(CAPTURES, speed=40.0) as fake:
        client = ccxtpro.binance()
        try:
            api = client.urls["api"]
            api.update({key: fake.rest_url for key in api if "ublic" in key})
            await load_markets(client, venue("binance"), symbols)
        finally:
            await client.close()
    assert {"ETH/USDT", "BTC/USDT"} <= set(client.markets)
    assert len(market_queries(fake)) == 1


async def test_a_filtered_load_answered_http_400_loads_every_market(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "moodring.feeds.ccxt")
    async with FakeExchange(CAPTURES, speed=40.0, exchange="coinbase") as fake:

        async def front(request: web.Request) -> web.Response:
            """Refuse a products call naming products, as a proxy might; relay the rest."""
            if "product_ids" in request.query:
                return web.Response(status=400, text="Bad Request")
            async with (
                ClientSession() as session,
                session.get(fake.rest_url + request.path_qs) as r,
            ):
                body = await r.read()
                return web.Response(status=r.status, body=body, content_type=r.content_type)

        app = web.Application()
        app.router.add_get("/{tail:.*}", front)
        async with serving(app) as front_url:
            markets = await coinbase_markets(fake, ["ETH/USD", "BTC/USD"], front_url)
    assert markets == {"ETH/USD", "BTC/USD"}
    assert product_ids(fake) == [None]  # only the load of every product got through
    refused = [r.getMessage() for r in caplog.records if "refused the markets" in r.getMessage()]
    assert len(refused) == 1 and "400" in refused[0], refused


def test_kraken_names_bitcoin_xbt() -> None:
    params = venue("kraken").markets_params
    assert params is not None
    assert params(["ETH/USD", "BTC/USD", "DOGE/USD"]) == {"pair": "ETHUSD,XBTUSD,XDGUSD"}
    assert params(["BTC/USD:USD"]) is None


@pytest.mark.parametrize("exchange", ["binance", "binanceus"])
def test_binance_asks_for_the_spot_markets_by_their_ids(exchange: str) -> None:
    params = venue(exchange).markets_params
    assert params is not None
    assert params(["ETH/USDT", "BTC/USDT"]) == {"symbols": '["ETHUSDT","BTCUSDT"]'}
    assert params(["ETH/USDT", "ETH/USDT"]) == {"symbols": '["ETHUSDT"]'}  # twice: -1151


@pytest.mark.parametrize("symbols", [["ETH/USDT", "BTC/USDT:USDT"], ["ETHUSDT"], ["eth/usdt"], []])
def test_binance_loads_every_market_for_symbols_it_cannot_name(symbols: list[str]) -> None:
    params = venue("binance").markets_params
    assert params is not None
    assert params(symbols) is None


def test_coinbase_asks_for_the_products_by_their_ids() -> None:
    params = venue("coinbase").markets_params
    assert params is not None
    assert params(["ETH/USD", "BTC/USDC", "ETH/USD"]) == {"product_ids": ["ETH-USD", "BTC-USDC"]}
    assert params(["BTC/USD:USD"]) is None


@pytest.mark.parametrize("exchange", ["bybit", "okx"])
def test_other_venues_load_every_market(exchange: str) -> None:
    assert venue(exchange).markets_params is None
