"""Benchmark moodring's own work per trade, without a socket, ccxt or the fake in the way.

Run: python benchmarks/per_trade.py [--runs N]
The real Binance capture's trades, parsed by ccxt.pro as it hands them to the tap, go
through a real daemon's exchange part (checks, clocks, gap detection), its sink and pipeline
into the bar builders of the shipped metric kinds on 1-minute bars (``pipeline.py``'s
settings). Prints microseconds per trade for each run and, last, one JSON line with the
median.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import ccxt.pro as ccxtpro
from pipeline import CAPTURES, SYMBOLS, settings_for

from moodring.feeds.ccxt.exchange import ExchangeFeeds
from moodring.service.daemon import Daemon
from moodring.testing.fake_exchange import FakeExchange, configure_ccxt


def ccxt_trades() -> list[dict[str, Any]]:
    """Return the captures' trades as ccxt.pro's own parser makes them, in time order."""
    return asyncio.run(_parsed())


async def _parsed() -> list[dict[str, Any]]:
    fake = FakeExchange(CAPTURES)
    async with fake:  # only for the markets: ccxt parses a trade against its market
        ex = ccxtpro.binance()
        configure_ccxt(ex, fake.ws_url, fake.rest_url)
        try:
            await ex.load_markets()
        finally:
            await ex.close()
    trades = [
        ex.parse_ws_trade(data, ex.market(symbol))
        for symbol in SYMBOLS
        for data in fake.trades(symbol)
    ]
    return sorted(trades, key=lambda t: t["timestamp"])


def one_run(trades: list[dict[str, Any]]) -> float:
    """Return microseconds per trade through a fresh daemon's exchange part."""
    where = SimpleNamespace(ws_url="ws://127.0.0.1:9/ws", rest_url="http://127.0.0.1:9")
    with tempfile.TemporaryDirectory() as state:
        daemon = Daemon(settings_for(where, Path(state)))
        part = daemon.parts[0]
        assert isinstance(part, ExchangeFeeds)
        # the exchange's clock is the capture's: as the fake tells it over REST
        part._offset_ms = trades[0]["timestamp"] - int(time.time() * 1000)
        take = part._on_trade
        started = time.perf_counter()
        frame = part._on_frame
        for trade in trades:
            frame()  # each trade its own frame, as Binance sends them
            take(trade)
        elapsed = time.perf_counter() - started
        assert part.stats.trades == len(trades), (part.stats.trades, len(trades))
    return elapsed / len(trades) * 1e6


def main() -> int:
    """Measure and print."""
    parser = argparse.ArgumentParser(description="Microseconds of moodring's work per trade.")
    parser.add_argument("--runs", type=int, default=5, help="runs, each on a fresh daemon")
    args = parser.parse_args()
    trades = ccxt_trades()
    results = []
    for _ in range(args.runs):
        results.append(one_run(trades))
        print(f"{len(trades):,} trades: {results[-1]:.2f} us per trade")
    print(json.dumps({"us_per_trade": round(statistics.median(results), 2)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
