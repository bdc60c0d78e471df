"""The exchanges the fake speaks, by ccxt id."""

from __future__ import annotations

from typing import Any

from moodring.testing.fake_exchange.binance import BinanceProtocol, BinanceUSProtocol
from moodring.testing.fake_exchange.bybit import BybitProtocol
from moodring.testing.fake_exchange.coinbase import CoinbaseProtocol
from moodring.testing.fake_exchange.core import Protocol
from moodring.testing.fake_exchange.kraken import KrakenProtocol

PROTOCOLS: dict[str, type[Protocol]] = {
    p.name: p
    for p in (BinanceProtocol, BinanceUSProtocol, CoinbaseProtocol, KrakenProtocol, BybitProtocol)
}


def configure_ccxt(exchange: Any, ws_url: str, rest_url: str) -> None:
    """Point a ccxt.pro client (binance, binanceus, coinbase, kraken, bybit) at the fake."""
    protocol = PROTOCOLS.get(exchange.id)
    if protocol is None:
        raise ValueError(f"the fake exchange does not speak {exchange.id!r}")
    protocol.configure_ccxt(exchange, ws_url, rest_url)
