"""What moodring knows of each exchange it streams: URL layout, ids, candles, limits, refusals.

Everything exchange-specific of the ccxt feed lives here, one ``Venue`` per ccxt id; the
feed code (``exchange.py``) asks its venue and knows no exchange by name. Other ccxt.pro
exchanges get ``GENERIC``: their trades and REST candles work as ccxt unifies them, gaps are
found by disconnects only, and endpoint overrides are a best guess.

Per exchange (what the metrics see; every volume is in base units, e.g. ETH of ETH/USD):

- ``binance``, ``binanceus``: trades ``@trade`` with consecutive ids per symbol (a jump is
  a gap); candles ``@kline`` with a closed flag; REST klines 1000 a call; only the
  configured spot markets are loaded (``exchangeInfo?symbols=``). Binance.com refuses US
  locations with HTTP 451.
- ``coinbase`` (Advanced Trade): ``market_trades`` with consecutive ids per product, every
  message numbered per connection (``sequence_num``: a jump is a lost message); ccxt.pro
  streams no candles (``stream: ohlcv`` watches trades); REST candles 300 a call, empty
  buckets left out; a (re)subscription re-sends the last 100 trades (dropped as seen); only
  the configured products are loaded (``market/products?product_ids=``).
- ``kraken`` (websocket v2): trades with sequential ids per pair; candles ``ohlc`` without a
  closed flag (a candle is final once a later one opens); REST OHLC only the latest 720.
  Markets are ``ETH/USD`` and ``BTC/USD`` (Kraken's ``XBT`` shows as BTC); only the
  configured pairs are loaded (``AssetPairs?pair=``).
- ``bybit`` (spot v5): trade ids increase with gaps (only disconnects tell a gap); candles
  ``kline`` with ``confirm``; REST klines 1000 a call, recent trades only 60 (repairs use
  candles). Bybit answers refused locations with HTTP 403 (ccxt: ``RateLimitExceeded``).
"""

from __future__ import annotations

import functools
import json
import re
import ssl
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

# ``consecutive``: trade ids count up by one per market (a jump is a gap, a repeat a
# duplicate); ``increasing``: ids only grow (repeats are duplicates, jumps say nothing);
# ``none``: only a disconnect tells a gap.
TradeIds = Literal["consecutive", "increasing", "none"]
# a ``load_markets`` call's query params (a list: the key once per value)
MarketsParams = dict[str, str | list[str]]
# The HTTP answer of a location an exchange refuses, as ccxt words its error:
# "<id> GET <url> 451 Unavailable For Legal Reasons <body>".
_REFUSED = re.compile(r"\b(?:GET|POST) \S+ (451|403) ")
_REFUSED_WORDS = re.compile(r"(?i)restricted location|block access from your country|forbidden")
_WS_GUESSES = (("ws",), ("ws", "spot"), ("ws", "public"), ("ws", "public", "spot"))
_REST_GUESSES = (("public",), ("rest",), ("spot",), ("public", "spot"))
# a spot market's unified symbol (``ETH/USDT``): a derivative's has a settle suffix (``:USDT``)
_SPOT_SYMBOL = re.compile(r"([A-Z0-9]+)/([A-Z0-9]+)")
# Kraken's own codes of currencies ccxt renames, as its pairs' altnames spell them; a code
# guessed wrong loads every market (``exchange.load_markets``)
_KRAKEN_NAMES = {"BTC": "XBT", "DOGE": "XDG"}
ALTERNATIVES = ("binanceus", "coinbase", "kraken")


def _stream_keys(*keys: str) -> re.Pattern[str]:
    """Return a pattern finding the first of ``keys`` (or a common one) naming a stream."""
    names = "|".join(re.escape(k) for k in dict.fromkeys([*keys, "stream", "topic", "s"]))
    return re.compile(rf'"(?:{names})"\s*:\s*"([^"]{{1,200}})"')


@dataclass(frozen=True, slots=True)
class Venue:
    """One exchange as the ccxt feed streams it."""

    name: str
    # ccxt ``urls`` keys the ``ws_url`` and ``rest_url`` overrides replace (a path of keys)
    ws_keys: tuple[str, ...]
    rest_keys: tuple[str, ...]
    trade_ids: TradeIds
    # most candles one REST call returns
    klines_limit: int = 1000
    # whether REST trades can be asked for from a time (a repair finer than any candle)
    trades_since: bool = True
    # client options set with an override (spot only: one market call instead of several)
    spot_options: bool = False
    # the configured symbols -> the ``load_markets`` params asking for only their markets
    # (None: the venue cannot ask, or not for these symbols; all markets are loaded)
    markets_params: Callable[[Sequence[str]], MarketsParams | None] | None = None
    # the JSON keys naming a frame's stream or market (to count a bad frame against a feed)
    stream_pattern: re.Pattern[str] = field(default_factory=lambda: _stream_keys("stream", "s"))
    # a candle update's closed flag and event time, from the raw message ccxt parsed it from
    candle_flags: Callable[[object, int], tuple[bool, int | None]] | None = None
    # a message's number on its connection (a jump is a lost message)
    sequence: Callable[[str], int | None] | None = None
    # frames that carry no trade by design (acks, heartbeats, status)
    control: Callable[[Any], bool] = lambda message: False
    # what the venue calls volume (for docs and ``check-feeds``)
    volume: str = "base units"

    @property
    def numbered(self) -> bool:
        """Return whether trade ids only go up: a feed tells repeats and gaps by them."""
        return self.trade_ids != "none"

    def configure(self, client: Any, ws_url: str | None, rest_url: str | None) -> None:
        """Point a ccxt.pro client of this venue at other endpoints (a proxy, a fake)."""
        api = client.urls["api"]
        if ws_url:
            _set(api, self.ws_keys or _guess(api, *_WS_GUESSES), ws_url)
        if rest_url:
            _set(api, self.rest_keys or _guess(api, *_REST_GUESSES), rest_url)
            if self.spot_options:
                self.spot_only(client)

    def spot_only(self, client: Any) -> None:
        """Make a client load spot markets only (one market call instead of several)."""
        fetch_markets = client.options.get("fetchMarkets")
        if isinstance(fetch_markets, dict):
            client.options["fetchMarkets"] = {**fetch_markets, "types": ["spot"]}
        else:
            client.options["fetchMarkets"] = {"types": ["spot"]}
        client.options["defaultType"] = "spot"

    def stream_name(self, frame: object) -> str | None:
        """Return the stream (topic, product, symbol) a websocket frame names, parsed or not."""
        if isinstance(frame, bytes | bytearray):
            frame = frame[:4096].decode("utf-8", "replace")
        elif isinstance(frame, dict | list):
            try:
                frame = json.dumps(frame)[:4096]
            except (TypeError, ValueError):
                return None
        if isinstance(frame, str):
            found = self.stream_pattern.search(frame, 0, 4096)
            return found.group(1) if found else None
        return None

    def refused(self, error: BaseException) -> int | None:
        """Return the HTTP status if ``error`` is this venue refusing the location, else None."""
        text = str(error)
        found = _REFUSED.search(text)
        if found is None:
            return None
        status = int(found.group(1))
        return status if status == 451 or _REFUSED_WORDS.search(text) else None

    def refusal_advice(self, status: int, *, retrying: bool = True) -> str:
        """Return the one sentence a user reads when this venue refuses their location."""
        others = [f"`exchange: {name}`" for name in ALTERNATIVES if name != self.name]
        advice = (
            f"{self.name} refuses connections from this location (HTTP {status}, restricted "
            f"location); choose another exchange: {', '.join(others[:-1])} or {others[-1]}"
        )
        if retrying:
            advice += " (`moodring check-feeds` tries a config); retrying slowly"
        return advice


def _set(node: dict[str, Any], keys: tuple[str, ...], value: str) -> None:
    """Set ``node[k1][k2]...`` to ``value``."""
    for key in keys[:-1]:
        node = node[key]
    node[keys[-1]] = value


def _guess(api: dict[str, Any], *paths: tuple[str, ...]) -> tuple[str, ...]:
    """Return the first of ``paths`` that holds a URL string (another exchange's layout)."""
    for path in paths:
        node: Any = api
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, str):
            return path
    raise ValueError(f"no URL at urls.api.{'.'.join(paths[0])} to override")


def _binance_candle(raw: object, open_ms: int) -> tuple[bool, int | None]:
    """Return a Binance kline event's closed flag (``x``) and event time, if of ``open_ms``."""
    if not isinstance(raw, dict):
        return False, None
    kline = raw.get("k")
    if not isinstance(kline, dict) or kline.get("t") != open_ms:
        return False, None
    return kline.get("x") is True, _int(raw.get("E"))


def _bybit_candle(raw: object, open_ms: int) -> tuple[bool, int | None]:
    """Return a Bybit kline's ``confirm`` flag and ``timestamp``, if of ``open_ms``."""
    data = raw.get("data") if isinstance(raw, dict) else None
    for entry in data if isinstance(data, list) else ():
        if isinstance(entry, dict) and _int(entry.get("start")) == open_ms:
            return entry.get("confirm") is True, _int(entry.get("timestamp"))
    return False, None


def _int(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    return None


_SEQUENCE_NUM = re.compile(r'"sequence_num"\s*:\s*(\d{1,18})')


def _coinbase_sequence(text: str) -> int | None:
    """Return an Advanced Trade message's ``sequence_num`` (None if it has none)."""
    found = _SEQUENCE_NUM.search(text, 0, 200)
    return int(found.group(1)) if found else None


def _spot_ids(symbols: Sequence[str], names: Mapping[str, str], sep: str = "") -> list[str] | None:
    """Return spot symbols' ids (base and quote as ``names`` renames them, joined by ``sep``).

    Each once; None if a symbol is not a spot market's, or there is none.
    """
    ids = []
    for symbol in symbols:
        spot = _SPOT_SYMBOL.fullmatch(symbol)
        if spot is None:
            return None
        ids.append(sep.join(names.get(code, code) for code in spot.groups()))
    return list(dict.fromkeys(ids)) or None  # Binance refuses a market named twice (-1151)


def _binance_markets(symbols: Sequence[str]) -> MarketsParams | None:
    """Return ``exchangeInfo``'s ``symbols`` naming these spot markets (None for others)."""
    ids = _spot_ids(symbols, {})
    return None if ids is None else {"symbols": json.dumps(ids, separators=(",", ":"))}


def _kraken_markets(symbols: Sequence[str]) -> MarketsParams | None:
    """Return ``AssetPairs``' ``pair`` naming these pairs by altname (None for others)."""
    ids = _spot_ids(symbols, _KRAKEN_NAMES)
    return None if ids is None else {"pair": ",".join(ids)}


def _coinbase_markets(symbols: Sequence[str]) -> MarketsParams | None:
    """Return the products calls' ``product_ids`` (``ETH-USD``; None for other symbols)."""
    ids = _spot_ids(symbols, {}, sep="-")
    return None if ids is None else {"product_ids": ids}  # ccxt repeats the key per id


def _binance_control(message: Any) -> bool:
    return isinstance(message, dict) and "id" in message and "data" not in message


def _coinbase_control(message: Any) -> bool:
    return isinstance(message, dict) and message.get("channel") in ("subscriptions", "heartbeats")


def _kraken_control(message: Any) -> bool:
    return isinstance(message, dict) and (
        "method" in message or message.get("channel") in ("status", "heartbeat", "pong")
    )


def _bybit_control(message: Any) -> bool:
    return isinstance(message, dict) and ("op" in message or "success" in message)


_BINANCE = {
    "ws_keys": ("ws", "spot"),
    "rest_keys": ("public",),
    "trade_ids": "consecutive",
    "spot_options": True,
    "markets_params": _binance_markets,
    "candle_flags": _binance_candle,
    "control": _binance_control,
}
VENUES: dict[str, Venue] = {
    "binance": Venue("binance", **_BINANCE),  # type: ignore[arg-type]
    "binanceus": Venue("binanceus", **_BINANCE),  # type: ignore[arg-type]
    "coinbase": Venue(
        "coinbase",
        ws_keys=("ws",),
        rest_keys=("rest",),
        trade_ids="consecutive",
        klines_limit=300,
        markets_params=_coinbase_markets,
        stream_pattern=_stream_keys("product_id"),
        sequence=_coinbase_sequence,
        control=_coinbase_control,
    ),
    "kraken": Venue(
        "kraken",
        ws_keys=("ws", "publicV2"),
        rest_keys=("public",),
        trade_ids="consecutive",
        klines_limit=720,
        markets_params=_kraken_markets,
        stream_pattern=_stream_keys("symbol"),
        control=_kraken_control,
    ),
    "bybit": Venue(
        "bybit",
        ws_keys=("ws", "public", "spot"),
        rest_keys=("public",),
        trade_ids="increasing",
        trades_since=False,
        spot_options=True,
        stream_pattern=_stream_keys("topic", "s"),
        candle_flags=_bybit_candle,
        control=_bybit_control,
    ),
}
GENERIC = Venue(
    "generic",
    ws_keys=(),  # a guess: the first URL under ws (spot, public), and under public/rest
    rest_keys=(),
    trade_ids="none",
    trades_since=False,
    stream_pattern=_stream_keys("product_id", "symbol"),
)


def venue(exchange: str) -> Venue:
    """Return what moodring knows of a ccxt exchange (``GENERIC`` for the others)."""
    return VENUES.get(exchange, GENERIC)


def client_setup(exchange: str, client: Any) -> None:
    """Adjust a fresh client of ``exchange`` (fewer REST calls where ccxt makes needless ones)."""
    share_tls(client)
    if exchange == "coinbase":
        client.has["fetchCurrencies"] = False  # load_markets: 2 calls instead of 5


def share_tls(client: Any) -> None:
    """Give a fresh client the process's TLS context for its CA file (ccxt makes one per client).

    A context holds its parsed CA bundle (0.3-0.7 MB); a feed has two clients per exchange
    and a new websocket one per connection, the Altcoin Season feed one per refresh.
    """
    if client.verify and client.ssl_context is None:
        client.ssl_context = _tls_context(client.cafile)


@functools.cache
def _tls_context(cafile: str) -> ssl.SSLContext:
    """Return a verifying TLS context trusting ``cafile``, as ccxt's own ``open`` makes it."""
    return ssl.create_default_context(cafile=cafile)
