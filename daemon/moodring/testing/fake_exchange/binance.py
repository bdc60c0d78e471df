"""Binance spot (and Binance.US) as the fake exchange speaks it.

URLs a feed sets (``ws_url=`` and ``rest_url=`` on the CLI's second line):

- ``ws_url``  -> ``exchange.urls["api"]["ws"]["spot"]``: ``ws://127.0.0.1:PORT/stream/ws``
  (ccxt appends ``/0``, ``/1`` ... per watch; keep ``/stream`` in it, ccxt routes spot by it).
- ``rest_url`` -> ``exchange.urls["api"]["public"]``: ``http://127.0.0.1:PORT/api/v3``.
- options: ``fetchMarkets = {"types": ["spot"]}``, ``defaultType = "spot"``: ``load_markets``
  then makes one call, ``GET /api/v3/exchangeInfo``.

Websocket: combined streams (``{"stream": ..., "data": ...}``) on ``/stream...`` paths, bare
events on ``/ws...``; requests ``SUBSCRIBE``/``UNSUBSCRIBE``/``LIST_SUBSCRIPTIONS``/
``SET_PROPERTY``/``GET_PROPERTY``, streams ``<symbol>@trade`` (the captured frames byte for
byte when the quote is the capture's), ``<symbol>@kline_<interval>`` (one update per trade,
``x`` true on the last trade of a bar), the captured ``@depth``/``@bookTicker`` frames, and
in universe mode the ticker streams. Trade ids are the capture's (consecutive per symbol).
Topics for ``FakeExchange.subscribers``/``wait_subscribed`` are the stream names.
REST: ``ping``, ``time``, ``exchangeInfo``, ``klines``/``uiKlines`` (empty bars flat at the
previous close), ``trades``, ``aggTrades`` (``fromId``/``startTime``/``endTime``), and in
universe mode ``ticker/24hr``; errors as Binance's ``{"code", "msg"}`` with HTTP 400.
Binance.US is the same protocol (ccxt's ``binanceus`` extends ``binance``); its ccxt client
needs no options (it loads spot markets only).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

from websockets.http11 import Response

from moodring.testing.fake_exchange.core import (
    DUMPS,
    INTERVALS_MS,
    Bar,
    CaptureFrame,
    Conn,
    Market,
    Protocol,
    RestError,
    fmt8,
    json_response,
    split_symbol,
)
from moodring.testing.fake_exchange.universe import TICKER_KINDS, Listing

_NOT_JSON = {"code": 3, "msg": "Invalid JSON: expected value", "id": None}
# REST request weights (Binance spot API docs, "General API Information" and each endpoint)
_WEIGHTS = {
    "/api/v3/ping": 1,
    "/api/v3/time": 1,
    "/api/v3/exchangeInfo": 20,
    "/api/v3/klines": 2,
    "/api/v3/uiKlines": 2,
    "/api/v3/trades": 25,
    "/api/v3/aggTrades": 4,
}


def stream_name(name: Any) -> str | None:
    """Normalise a stream name: lower-case symbol, interval case kept (``1M`` is a month)."""
    if not isinstance(name, str) or "@" not in name:
        return None
    if name.startswith("!"):  # all-market streams: ``!miniTicker@arr``
        return name
    symbol, _, rest = name.partition("@")
    return f"{symbol.lower()}@{rest}"


def symbol_info(name: str, price_decimals: int, qty_decimals: int) -> dict[str, Any]:
    """Return one ``exchangeInfo`` symbol entry."""
    base, quote = split_symbol(name)
    tick = fmt8(Decimal(1).scaleb(-price_decimals))
    step = fmt8(Decimal(1).scaleb(-qty_decimals))
    return {
        "symbol": name,
        "status": "TRADING",
        "baseAsset": base,
        "baseAssetPrecision": 8,
        "quoteAsset": quote,
        "quotePrecision": 8,
        "quoteAssetPrecision": 8,
        "baseCommissionPrecision": 8,
        "quoteCommissionPrecision": 8,
        "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"],
        "icebergAllowed": True,
        "ocoAllowed": True,
        "otoAllowed": True,
        "quoteOrderQtyMarketAllowed": True,
        "allowTrailingStop": True,
        "cancelReplaceAllowed": True,
        "isSpotTradingAllowed": True,
        "isMarginTradingAllowed": False,
        "filters": [
            {
                "filterType": "PRICE_FILTER",
                "minPrice": tick,
                "maxPrice": "1000000.00000000",
                "tickSize": tick,
            },
            {
                "filterType": "LOT_SIZE",
                "minQty": step,
                "maxQty": "9000.00000000",
                "stepSize": step,
            },
            {"filterType": "ICEBERG_PARTS", "limit": 10},
            {
                "filterType": "MARKET_LOT_SIZE",
                "minQty": "0.00000000",
                "maxQty": "1000.00000000",
                "stepSize": "0.00000000",
            },
            {
                "filterType": "NOTIONAL",
                "minNotional": "5.00000000",
                "applyMinToMarket": True,
                "maxNotional": "9000000.00000000",
                "applyMaxToMarket": False,
                "avgPriceMins": 5,
            },
            {"filterType": "MAX_NUM_ORDERS", "maxNumOrders": 200},
            {"filterType": "MAX_NUM_ALGO_ORDERS", "maxNumAlgoOrders": 5},
        ],
        "permissions": [],
        "permissionSets": [["SPOT"]],
        "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
        "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
    }


def ws_kline(bar: Bar, symbol: str, interval: str, closed: bool) -> dict[str, Any]:
    """Return the ``k`` object of a kline stream event."""
    return {
        "t": bar.t,
        "T": bar.T,
        "s": symbol,
        "i": interval,
        "f": bar.f,
        "L": bar.L,
        "o": fmt8(bar.o),
        "c": fmt8(bar.c),
        "h": fmt8(bar.h),
        "l": fmt8(bar.l),
        "v": fmt8(bar.v),
        "n": bar.n,
        "x": closed,
        "q": fmt8(bar.q),
        "V": fmt8(bar.V),
        "Q": fmt8(bar.Q),
        "B": "0",
    }


def _bad_request(code: int, msg: str) -> RestError:
    """Return Binance's HTTP 400 error."""
    return RestError(400, {"code": code, "msg": msg})


class BinanceProtocol(Protocol):
    """Binance spot: combined streams, ``/api/v3`` REST."""

    name = "binance"
    default_quote = "USDT"
    restricted_status = 451
    restricted_body: ClassVar[Any] = {
        "code": 0,
        "msg": "Service unavailable from a restricted location according to 'b. Eligibility' in"
        " https://www.binance.com/en/terms. Please contact customer service if you believe you"
        " received this message in error.",
    }

    def aliases(self, market: Market) -> Iterable[str]:
        """Return the Binance name, its lower case, the ccxt and the capture symbol."""
        return (market.id, market.id.lower(), market.symbol, market.capture)

    def candle_topic(self, market: Market, interval: str) -> str | None:
        """Return ``<symbol>@kline_<interval>``."""
        return f"{market.id.lower()}@kline_{interval}"

    def normalize_topic(self, name: str) -> str | None:
        """Normalise a stream name (lower-case symbol)."""
        return stream_name(name)

    def ws_url(self, port: int) -> str:
        """Return the combined-stream base URL (``urls['api']['ws']['spot']``)."""
        return f"ws://127.0.0.1:{port}/stream/ws"

    def rest_url(self, port: int) -> str:
        """Return the REST base URL (``urls['api']['public']``)."""
        return f"http://127.0.0.1:{port}/api/v3"

    @staticmethod
    def configure_ccxt(exchange: Any, ws_url: str, rest_url: str) -> None:
        """Point a ``ccxt.pro.binance``/``binanceus`` client at the fake (spot markets only)."""
        # as a feed does; imported here: a client exists, ccxt.pro is loaded already
        from moodring.feeds.ccxt.exchange import configure_urls

        configure_urls(exchange, ws_url, rest_url)

    # ------------------------------------------------------------------ frames

    def trade_frame(self, market: Market, trade: dict[str, Any]) -> str:
        """Return a combined-stream ``@trade`` frame."""
        data = trade if trade["s"] == market.id else {**trade, "s": market.id}
        return DUMPS({"stream": f"{market.id.lower()}@trade", "data": data})

    def emit_trade(self, market: Market, trade: dict[str, Any], raw: str | None) -> bool:
        """Send the captured frame (re-encoded when shifted or renamed)."""
        stream = f"{market.id.lower()}@trade"
        if stream not in self.fake._subs:
            return False
        if raw is None or market.id != market.capture:
            raw = self.trade_frame(market, trade)
        return self.deliver_stream(stream, raw, None)

    def emit_candle(
        self, market: Market, interval: str, bar: Bar, closed: bool, trade: dict[str, Any]
    ) -> bool:
        """Send a kline event."""
        event = {"e": "kline", "E": trade["E"], "s": market.id}
        event["k"] = ws_kline(bar, market.id, interval, closed)
        return self.deliver_stream(market.candle_topics[interval], None, event)

    def emit_other(self, frame: CaptureFrame) -> bool:
        """Send captured book frames as they are (the capture's own symbol only)."""
        market = self.fake._by_capture.get(frame.symbol)
        if market is None or market.id != market.capture:
            return False
        return self.deliver_stream(frame.stream, frame.raw, None)

    def push_tickers(self, listings: Sequence[Listing]) -> int:
        """Push ``miniTicker``/``ticker`` events (per symbol and all-market arrays)."""
        fake = self.fake
        now = fake.universe_now_ms
        sent = 0
        for kind in TICKER_KINDS:
            events = [x.event(kind, fake._day_ms, now) for x in listings]
            for listing, event in zip(listings, events, strict=True):
                sent += self.deliver_stream(f"{listing.name.lower()}@{kind}", None, event)
            if events:
                sent += self.deliver_stream(f"!{kind}@arr", None, events)
        return sent

    def deliver_stream(self, stream: str, raw: str | None, event: Any) -> bool:
        """Queue one stream event (raw combined text, an event dict or list) to its subscribers.

        An all-market array goes out bare even on a combined connection: ccxt reads arrays
        only bare (from Binance it has them on a raw ``/ws`` connection; the fake's
        ``/stream/ws`` URL, which ccxt needs to route spot, is a combined one).
        """
        conns = self.fake._subs.get(stream)
        if not conns:
            return False
        combined = raw
        bare: str | None = None
        for conn in conns:
            if conn.combined and not isinstance(event, list):
                if combined is None:
                    combined = DUMPS({"stream": stream, "data": event})
                conn.push(combined)
            else:
                if bare is None:
                    if event is not None:
                        bare = DUMPS(event)
                    else:
                        assert raw is not None
                        bare = raw[raw.index('"data":') + 7 : -1]
                conn.push(bare)
        return True

    # ------------------------------------------------------------------ websocket

    def on_connect(self, conn: Conn) -> None:
        """Frame by path (``/ws`` bare) and subscribe the streams the URL names."""
        parts = urlsplit(conn.path)
        conn.combined = not parts.path.startswith("/ws")
        initial = [s for q in parse_qs(parts.query).get("streams", []) for s in q.split("/")]
        if not initial and parts.path.startswith("/ws/") and "@" in parts.path:
            initial = [parts.path[len("/ws/") :]]
        if initial:
            self._subscribe(conn, initial)

    def on_message(self, conn: Conn, message: str | bytes) -> None:
        """Handle one request (SUBSCRIBE, UNSUBSCRIBE, LIST_SUBSCRIPTIONS ...)."""
        try:
            request = json.loads(message)
        except ValueError:
            conn.push(DUMPS(_NOT_JSON))
            return
        if not isinstance(request, dict):
            conn.push(DUMPS({"code": 2, "msg": "Invalid request", "id": None}))
            return
        method = request.get("method")
        ident = request.get("id")
        params = request.get("params") or []
        if method == "SUBSCRIBE" and isinstance(params, list):
            conn.push(DUMPS({"result": None, "id": ident}))
            self._subscribe(conn, params)
        elif method == "UNSUBSCRIBE" and isinstance(params, list):
            for param in params:
                name = stream_name(param)
                if name is not None:
                    self.fake.unsubscribe(conn, name)
            conn.push(DUMPS({"result": None, "id": ident}))
        elif method == "LIST_SUBSCRIPTIONS":
            conn.push(DUMPS({"result": sorted(conn.topics), "id": ident}))
        elif method == "SET_PROPERTY" and params[:1] == ["combined"]:
            conn.combined = bool(params[1]) if len(params) > 1 else conn.combined
            conn.push(DUMPS({"result": None, "id": ident}))
        elif method == "GET_PROPERTY" and params[:1] == ["combined"]:
            conn.push(DUMPS({"result": conn.combined, "id": ident}))
        else:
            msg = f"Invalid request: unknown variant {method}"
            conn.push(DUMPS({"code": 2, "msg": msg, "id": ident}))

    def _subscribe(self, conn: Conn, params: Iterable[Any]) -> None:
        """Subscribe the named streams."""
        for param in params:
            name = stream_name(param)
            if name is not None:
                self.fake.subscribe(conn, name)

    # ------------------------------------------------------------------ REST

    def rest_weight(self, path: str, query: dict[str, str]) -> int:
        """Return Binance's request weight of a GET (its spot API docs' table)."""
        if path == "/api/v3/ticker/24hr":
            if "symbol" in query:
                return 2
            try:
                count = len(json.loads(query["symbols"]))
            except (KeyError, ValueError, TypeError):
                return 80  # every symbol
            return 2 if count <= 20 else 40 if count <= 100 else 80
        return _WEIGHTS.get(path, 1)

    def rate_limited(self, used: int, limit: int, retry_after: int) -> Response:
        """Return Binance's 429: code -1003, ``Retry-After`` and the weight used."""
        msg = (
            f"Too much request weight used; current limit is {limit} request weight per 1 "
            "MINUTE. Please use WebSocket Streams for live updates to avoid polling the API."
        )
        headers = [("Retry-After", str(retry_after)), *self.weight_headers(used)]
        return json_response(429, {"code": -1003, "msg": msg}, headers)

    def weight_headers(self, used: int) -> list[tuple[str, str]]:
        """Return ``X-MBX-USED-WEIGHT-1M``, the weight used this minute."""
        return [("X-MBX-USED-WEIGHT-1M", str(used))]

    def rest(self, path: str, query: dict[str, str]) -> Any:
        """Route ``/api/v3/...``."""
        routes = {
            "/api/v3/ping": lambda: {},
            "/api/v3/time": lambda: {"serverTime": self.fake.clock_ms},
            "/api/v3/exchangeInfo": lambda: self._exchange_info(query),
            "/api/v3/klines": lambda: self._klines(query),
            "/api/v3/uiKlines": lambda: self._klines(query),
            "/api/v3/trades": lambda: self._trades(query),
            "/api/v3/aggTrades": lambda: self._agg_trades(query),
            "/api/v3/ticker/24hr": lambda: self._tickers(query),
        }
        route = routes.get(path)
        if route is None:
            raise RestError(404, {"code": -1, "msg": f"Not found: {path}"})
        return route()

    def _query_market(self, query: dict[str, str]) -> Market:
        """Return the market named by a query, or raise Binance's error."""
        name = query.get("symbol")
        if not name:
            raise _bad_request(-1102, "Mandatory parameter 'symbol' was not sent.")
        market = self.fake._markets.get(name.upper())
        if market is None:
            raise _bad_request(-1121, "Invalid symbol.")
        return market

    @staticmethod
    def _int_param(query: dict[str, str], key: str) -> int | None:
        """Return an integer query parameter, or raise Binance's error."""
        value = query.get(key)
        if value is None:
            return None
        try:
            return int(value)
        except ValueError:
            raise _bad_request(-1100, f"Illegal characters found in parameter '{key}'.") from None

    def _limit(self, query: dict[str, str], default: int, top: int) -> int:
        """Return the ``limit`` parameter within Binance's bounds."""
        limit = self._int_param(query, "limit")
        if limit is None:
            return default
        if limit <= 0:
            raise _bad_request(-1100, "Illegal characters found in parameter 'limit'.")
        return min(limit, top)

    def _exchange_info(self, query: dict[str, str]) -> dict[str, Any]:
        """Return ``GET /api/v3/exchangeInfo`` for the replayed and universe markets."""
        fake = self.fake
        every = {
            name: symbol_info(name, m.price_decimals, m.qty_decimals)
            for name, m in fake._markets.items()
        }
        for name in fake.universe_symbols:
            every.setdefault(name, symbol_info(name, 8, 8))
        chosen = list(every.values())
        try:
            if "symbol" in query:
                chosen = [every[query["symbol"].upper()]]
            elif "symbols" in query:
                chosen = [every[str(n).upper()] for n in json.loads(query["symbols"])]
        except (ValueError, KeyError, TypeError):
            raise _bad_request(-1121, "Invalid symbol.") from None
        return {
            "timezone": "UTC",
            "serverTime": fake.clock_ms,
            "rateLimits": [
                {
                    "rateLimitType": "REQUEST_WEIGHT",
                    "interval": "MINUTE",
                    "intervalNum": 1,
                    "limit": 6000,
                },
                {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
                {
                    "rateLimitType": "RAW_REQUESTS",
                    "interval": "MINUTE",
                    "intervalNum": 5,
                    "limit": 61000,
                },
            ],
            "exchangeFilters": [],
            "symbols": chosen,
        }

    def _klines(self, query: dict[str, str]) -> list[list[Any]]:
        """Return ``GET /api/v3/klines`` built from the trades replayed so far."""
        fake = self.fake
        name = query.get("symbol", "").upper()
        listing = fake._universe.get(name)
        # a relabelled market of the universe: its daily candles are the universe's
        if listing is not None and (name not in fake._markets or query.get("interval") == "1d"):
            return self._universe_klines(listing, query)
        market = self._query_market(query)
        interval = query.get("interval")
        if interval is None:
            raise _bad_request(-1102, "Mandatory parameter 'interval' was not sent.")
        if interval not in INTERVALS_MS:
            raise _bad_request(-1120, "Invalid interval.")
        start = self._int_param(query, "startTime")
        end = self._int_param(query, "endTime")
        limit = self._limit(query, 500, 1000)
        return market.builder(interval).rows(fake.clock_ms, start, end, limit)

    def _universe_klines(self, listing: Listing, query: dict[str, str]) -> list[list[Any]]:
        """Return a universe market's daily klines up to today (its forming bar last)."""
        fake = self.fake
        if listing.failing or not listing.listed(fake._day_ms):
            raise _bad_request(-1121, "Invalid symbol.")
        interval = query.get("interval")
        if interval is None:
            raise _bad_request(-1102, "Mandatory parameter 'interval' was not sent.")
        if interval != "1d":
            raise _bad_request(-1120, "Invalid interval.")
        start = self._int_param(query, "startTime")
        end = self._int_param(query, "endTime")
        limit = self._limit(query, 500, 1000)
        return listing.rows(fake._day_ms, start, end, limit)

    def _tickers(self, query: dict[str, str]) -> Any:
        """Return ``GET /api/v3/ticker/24hr``: one symbol's, some symbols' or every one's."""
        fake = self.fake
        listed = fake.universe_symbols
        now = fake.universe_now_ms
        try:
            if "symbol" in query:
                name = query["symbol"].upper()
                if name not in listed:
                    raise KeyError(name)
                return fake._universe[name].ticker(fake._day_ms, now)
            names = [str(n).upper() for n in json.loads(query.get("symbols", "null")) or listed]
            if not set(names) <= set(listed):
                raise KeyError(names)
        except (ValueError, KeyError, TypeError):
            raise _bad_request(-1121, "Invalid symbol.") from None
        return [fake._universe[name].ticker(fake._day_ms, now) for name in names]

    def _window(self, market: Market, query: dict[str, str]) -> list[dict[str, Any]]:
        """Select replayed trades by ``fromId``/``startTime``/``endTime``/``limit``."""
        trades = market.replayed
        limit = self._limit(query, 500, 1000)
        from_id = self._int_param(query, "fromId")
        start = self._int_param(query, "startTime")
        end = self._int_param(query, "endTime")
        if from_id is not None:
            chosen = [t for t in trades if t["t"] >= from_id]
            return chosen[:limit]
        if start is not None or end is not None:
            chosen = [
                t
                for t in trades
                if (start is None or t["T"] >= start) and (end is None or t["T"] <= end)
            ]
            return chosen[:limit] if start is not None else chosen[-limit:]
        return trades[-limit:]

    def _trades(self, query: dict[str, str]) -> list[dict[str, Any]]:
        """Return ``GET /api/v3/trades``: the most recent replayed trades."""
        market = self._query_market(query)
        limit = self._limit(query, 500, 1000)
        return [
            {
                "id": t["t"],
                "price": t["p"],
                "qty": t["q"],
                "quoteQty": fmt8(Decimal(t["p"]) * Decimal(t["q"])),
                "time": t["T"],
                "isBuyerMaker": t["m"],
                "isBestMatch": t["M"],
            }
            for t in market.replayed[-limit:]
        ]

    def _agg_trades(self, query: dict[str, str]) -> list[dict[str, Any]]:
        """Return ``GET /api/v3/aggTrades``, one aggregate per captured trade."""
        market = self._query_market(query)
        return [
            {
                "a": t["t"],
                "p": t["p"],
                "q": t["q"],
                "f": t["t"],
                "l": t["t"],
                "T": t["T"],
                "m": t["m"],
                "M": t["M"],
            }
            for t in self._window(market, query)
        ]


class BinanceUSProtocol(BinanceProtocol):
    """Binance.US: Binance's protocol under its own name."""

    name = "binanceus"
    restricted_status = 403
    restricted_body: ClassVar[Any] = {"code": 0, "msg": "Forbidden"}
