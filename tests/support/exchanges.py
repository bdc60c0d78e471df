"""The exchanges the fake speaks, and settings for ETH and BTC of one of them."""

from __future__ import annotations

from pathlib import Path

from moodring.settings import Settings
from moodring.testing.fake_exchange import FakeExchange

EXCHANGES = ["binance", "binanceus", "coinbase", "kraken", "bybit"]
# the quote currency of each exchange's ETH and BTC markets in the fake
QUOTE = {
    "binance": "USDT",
    "binanceus": "USDT",
    "coinbase": "USD",
    "kraken": "USD",
    "bybit": "USDT",
}


def exchange_settings(
    exchange: str, fake: FakeExchange, tmp_path: Path, **feed: object
) -> Settings:
    """ETH and BTC of ``exchange`` from the fake: an MFI and a correlation on 1m."""
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
