"""Memory of ccxt.pro's market tables: what ``load_markets`` costs a feed's client.

Run: python benchmarks/markets.py
A ccxt.pro binance client (spot markets, as moodring's feeds set it up) loads N markets from
a Binance-shaped ``exchangeInfo`` answer (the fake exchange's symbol entries), each N in a
fresh process; then, as moodring's feeds load them, only 2 of 3,000 listed markets (the
answer names only the markets ``symbols=`` asks for, as Binance's does). The same for a
coinbase client: 700 products (the fake's product entries), then 2 of 700 asked for by
``product_ids``. Prints the RSS growth of each and, last, one JSON line. The fake serves
only the markets it replays, so ``pipeline.py``'s RSS figures leave this out; Binance spot
lists about 3,000 markets, Kraken about 1,000, Coinbase about 700.
"""

from __future__ import annotations

import json
import subprocess
import sys

COUNTS = (2, 500, 3000)
LISTED, ASKED = 3000, 2  # the filtered load
COINBASE_LISTED = 700

CHILD = """
import asyncio, gc, json, sys
import ccxt.pro as ccxtpro
from moodring.feeds.ccxt.exchange import load_markets
from moodring.feeds.ccxt.venues import client_setup, venue
from moodring.testing.fake_exchange.binance import symbol_info
from moodring.testing.fake_exchange.coinbase import product_info

def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024

exchange, count, asked = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
pairs = [(f"C{i:04d}", q) for i in range((count + 1) // 2) for q in ("USDT", "BTC")][:count]
names = [base + quote for base, quote in pairs]
head = {"timezone": "UTC", "serverTime": 0, "rateLimits": [], "exchangeFilters": []}
answer = json.dumps({**head, "symbols": [symbol_info(n, 4, 6) for n in names]})
products = {f"{b}-{q}": product_info(f"{b}-{q}", b, q, "1", 4, 6) for b, q in pairs}
listing = json.dumps(list(products.values()))

async def main():
    client = getattr(ccxtpro, exchange)()
    client_setup(exchange, client)
    known = venue(exchange)
    if known.spot_options:
        known.spot_only(client)
    async def exchange_info(params={}):
        if "symbols" not in params:
            return json.loads(answer)
        named = [symbol_info(n, 4, 6) for n in json.loads(params["symbols"]) if n in names]
        return json.loads(json.dumps({**head, "symbols": named}))
    async def market_products(params={}):
        listed = json.loads(listing) if params.get("product_type", "SPOT") == "SPOT" else []
        if "product_ids" in params:
            listed = [p for p in listed if p["product_id"] in params["product_ids"]]
        return {"products": listed, "num_products": len(listed)}
    client.publicGetExchangeInfo = exchange_info
    client.v3PublicGetBrokerageMarketProducts = market_products
    gc.collect()
    before = rss_mb()
    if asked:
        symbols = [f"{base}/{quote}" for base, quote in pairs[:asked]]
        await load_markets(client, known, symbols)
    else:
        await client.load_markets()
    gc.collect()
    print(len(client.markets), rss_mb() - before)
    await client.close()

asyncio.run(main())
"""


def grown_mb(count: int, asked: int = 0, exchange: str = "binance") -> tuple[int, float]:
    """Return the markets loaded and the RSS growth in MB of loading ``count`` (or ``asked``)."""
    out = subprocess.run(
        [sys.executable, "-c", CHILD, exchange, str(count), str(asked)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return int(out[0]), float(out[1])


def main() -> int:
    """Measure and print."""
    figures = {}
    for count in COUNTS:
        loaded, grown = grown_mb(count)
        figures[str(loaded)] = round(grown, 1)
        print(f"{loaded:>6,} markets: RSS +{grown:.1f} MB")
    loaded, filtered = grown_mb(LISTED, ASKED)
    print(f"{loaded:>6,} markets of {LISTED:,} listed, asked for by name: RSS +{filtered:.1f} MB")
    coinbase: dict[str, float] = {}
    for asked in (0, ASKED):
        got, grown = grown_mb(COINBASE_LISTED, asked, "coinbase")
        coinbase[f"{got} of {COINBASE_LISTED}"] = round(grown, 1)
        print(f"{got:>6,} Coinbase products of {COINBASE_LISTED:,} listed: RSS +{grown:.1f} MB")
    print(
        json.dumps(
            {
                "load_markets_rss_mb": figures,
                "filtered_rss_mb": {f"{loaded} of {LISTED}": round(filtered, 1)},
                "coinbase_rss_mb": coinbase,
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
