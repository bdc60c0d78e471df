"""Every ccxt.pro client moodring makes shares one TLS context: the CA bundle is parsed once."""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

from moodring.feeds.altseason_feed import AltseasonFeed
from moodring.feeds.ccxt import CcxtFeedConfig
from moodring.feeds.ccxt.exchange import ExchangeFeeds
from moodring.service.ranker import _client as watchlist_client
from moodring.settings import AltseasonConfig, WatchlistConfig

CLOSED = "http://127.0.0.1:9/api/v3"  # nothing listens: these clients never connect


def clients() -> list[Any]:
    """Return a client of each kind moodring makes: feeds of two exchanges, Altseason, ranker."""
    made = []
    for exchange, symbol in (("binance", "ETH/USDT"), ("kraken", "ETH/USD")):
        config = {"eth": CcxtFeedConfig(symbol=symbol)}
        feeds = ExchangeFeeds(exchange, config, sink=None, builders=lambda name: [])  # no stream
        made += [feeds._client, feeds._rest]
    made.append(AltseasonFeed(AltseasonConfig(rest_url=CLOSED), lambda *_: None)._make_client())
    made.append(watchlist_client(WatchlistConfig(top=5, refresh="7d", rest_url=CLOSED)))
    return made


async def test_every_client_verifies_with_one_shared_context() -> None:
    made = clients()
    context = made[0].ssl_context
    assert isinstance(context, ssl.SSLContext)
    assert all(client.ssl_context is context for client in made)
    # what ccxt would have made for each: certificates and host names checked against its
    # CA file (certifi's)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    own = ssl.create_default_context(cafile=made[0].cafile)
    assert context.cert_store_stats() == own.cert_store_stats()
    assert context.cert_store_stats()["x509_ca"] > 100
    try:
        for client in made:
            client.open()  # the session ccxt makes for its requests and websockets
            assert client.ssl_context is context
            assert client.tcp_connector._ssl is context
    finally:
        await asyncio.gather(*(client.close() for client in made))
