"""A local fake crypto exchange replaying real captured trades for ccxt.pro clients.

One ``websockets`` server on 127.0.0.1 answers both the REST calls a ccxt client makes and
its websocket subscriptions, in the protocol of one exchange: ``binance`` (default),
``binanceus``, ``coinbase`` (Advanced Trade), ``kraken`` (websocket v2) or ``bybit`` (v5
spot). The captures are real Binance spot trade captures (``<recv ns> <combined JSON>``
lines, e.g. ``shared/data/ws/hftbacktest_binance_spot`` and ``moodring/defaults/samples``);
each captured trade is re-encoded into the chosen exchange's own frames and REST answers, so
one real trade sequence replays through every protocol. Markets keep the capture's base
currency; the quote is USD on Coinbase and Kraken, USDT elsewhere (``quote=`` overrides);
prices, amounts and times are the capture's, exactly. Candles (websocket and REST) are built
from the same trades; one replay clock serves every connection.

Each protocol module's docstring says which ccxt ``urls`` keys ``ws_url`` and ``rest_url``
go to (``configure_ccxt`` does it for a bare ccxt.pro client), its frames and its REST paths.
Universe mode (``universe=`` daily bars per symbol) serves a whole Binance market of daily
bars and tickers; see ``universe.py``. ``restricted=True`` (``--restricted``) answers every
request, websocket upgrades included, as the exchange answers a location it refuses (Binance:
HTTP 451). ``fuzz_frames`` makes malformed trade frames in each exchange's shapes.

Run it: ``python -m moodring.testing.fake_exchange --capture FILE [--capture FILE]
[--exchange NAME] [--quote CCY] [--universe DIR_OR_FILE ...] [--today YYYY-MM-DD]
[--port N] [--speed X] [--drop-every S] [--start-paused] [--start-now] [--loop]
[--restricted] [--relabel NEW=CAPTURED ...] [--relabel-thin K] [--kline-every SECONDS]
[--weight-limit N] [--lead SECONDS]`` (the last five serve ``benchmarks/scale.py``: many
markets replaying a capture's trades, candles as often as Binance sends them, its REST
request-weight limit, history before the first subscriber).
The first stdout line is the port, the second ``ws_url=URL rest_url=URL`` (the two values a
feed of that exchange sets); logs go to stderr. SIGUSR1 pauses the stream (sockets stay
open), SIGUSR2 resumes it.
"""

from moodring.testing.fake_exchange.cli import main
from moodring.testing.fake_exchange.core import INTERVALS_MS, FakeExchange, Market, load_capture
from moodring.testing.fake_exchange.core import Conn as _Conn
from moodring.testing.fake_exchange.fuzz import fuzz_frames
from moodring.testing.fake_exchange.protocols import PROTOCOLS, configure_ccxt
from moodring.testing.fake_exchange.universe import load_universe_bars

__all__ = [
    "INTERVALS_MS",
    "PROTOCOLS",
    "FakeExchange",
    "Market",
    "_Conn",
    "configure_ccxt",
    "fuzz_frames",
    "load_capture",
    "load_universe_bars",
    "main",
]
