"""Memory of ccxt.pro's market tables: what ``load_markets`` costs a feed's client.

Run: python benchmarks/markets.py
A ccxt.pro binance client (spot markets, as moodring's feeds set it up) loads N markets from
a Binance-shaped ``exchangeInfo`` answer (the fake exchange's symbol entries), each N in a
fresh process. Prints the RSS growth per N and, last, one JSON line. The fake serves only
the markets it replays, so ``pipeline.py``'s RSS figures leave this out; Binance spot lists
about 3,000 markets, Kraken and Coinbase several hundred each.
"""

from __future__ import annotations

import json
import subprocess
import sys

COUNTS = (2, 500, 3000)

CHILD = """
import asyncio, gc, json, sys
import ccxt.pro as ccxtpro
from moodring.testing.fake_exchange.binance import symbol_info

def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024

count = int(sys.argv[1])
names = [f"C{i:04d}" + q for i in range((count + 1) // 2) for q in ("USDT", "BTC")][:count]
answer = json.dumps({"timezone": "UTC", "serverTime": 0, "rateLimits": [],
                     "exchangeFilters": [], "symbols": [symbol_info(n, 4, 6) for n in names]})

async def main():
    client = ccxtpro.binance({"options": {"fetchMarkets": {"types": ["spot"]},
                                          "defaultType": "spot"}})
    async def exchange_info(params={}):
        return json.loads(answer)
    client.publicGetExchangeInfo = exchange_info
    gc.collect()
    before = rss_mb()
    await client.load_markets()
    gc.collect()
    print(len(client.markets), rss_mb() - before)
    await client.close()

asyncio.run(main())
"""


def grown_mb(count: int) -> tuple[int, float]:
    """Return the markets loaded and the RSS growth in MB of loading ``count`` of them."""
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(count)], capture_output=True, text=True, check=True
    ).stdout.split()
    return int(out[0]), float(out[1])


def main() -> int:
    """Measure and print."""
    figures = {}
    for count in COUNTS:
        loaded, grown = grown_mb(count)
        figures[str(loaded)] = round(grown, 1)
        print(f"{loaded:>6,} markets: RSS +{grown:.1f} MB")
    print(json.dumps({"load_markets_rss_mb": figures}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
