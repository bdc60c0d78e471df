"""Kraken spot as the fake exchange speaks it: websocket v2 (what ccxt.pro uses), REST ``/0``.

URLs a feed sets (``ws_url=`` and ``rest_url=`` on the CLI's second line):

- ``ws_url``  -> ``exchange.urls["api"]["ws"]["publicV2"]``: ``ws://127.0.0.1:PORT/v2``
  (ccxt 4.5's kraken watches trades, candles, tickers and books on v2 only; the recorded
  v1 session in ``shared/data/ws/cryptofeed/KRAKEN.jsonl.gz`` gave the REST shapes and
  names, the v2 frames follow Kraken's v2 documentation and ccxt's parsers).
- ``rest_url`` -> ``exchange.urls["api"]["public"]``: ``http://127.0.0.1:PORT`` (ccxt
  appends ``/0/public/...``).
- No options are needed: ``load_markets`` makes two calls, ``/0/public/Assets`` and
  ``/0/public/AssetPairs``.

Names: pair ids as Kraken has them (``XETHZUSD``, ``XXBTZUSD``, ``ETHUSDT``, ``SOLUSD``),
``altname``/``wsname`` with ``XBT`` for bitcoin, v2 symbols with ``BTC`` (``BTC/USD``).
Websocket v2: a ``status`` message on connect; ``{"method": "subscribe", "params":
{"channel", "symbol": [...], "snapshot", "interval"}, "req_id"}`` is acknowledged once per
symbol; ``ping`` gets ``pong``; a ``heartbeat`` a second once subscribed. Channels:

- ``trade``: ``{"channel": "trade", "type": "update", "data": [trade]}`` per replayed trade,
  price and qty as JSON numbers (the capture's digits), ``trade_id`` the capture's id
  (Kraken's v2 ids are sequential per pair; its v1 frames carry no id at all); a snapshot of
  the last 50 trades only when ``snapshot`` is asked for (default false).
- ``ohlc``: ``interval`` in minutes; a snapshot (default true) of the candles with trades
  among the last 12 intervals, then an update per trade; no closing flag (a candle is final
  when one of a later interval arrives).

Topics for ``FakeExchange.subscribers``/``wait_subscribed``: ``trade:ETH/USD``,
``ohlc:ETH/USD:<minutes>``.

REST: ``Time``, ``Assets``, ``AssetPairs``, ``OHLC`` (``since`` excluded, at most the 720
latest candles whatever ``since`` says, empty candles flat at the previous close with vwap,
volume and count 0, ``last`` = the latest closed candle), ``Trades`` (``since`` in seconds
or nanoseconds, excluded, oldest first, ``count`` up to 1000, ``last`` in nanoseconds).
Errors as Kraken's ``{"error": ["EQuery:Unknown asset pair"], "result": {}}`` with HTTP 200.
"""

from __future__ import annotations

import email.utils
import json
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from moodring.testing.fake_exchange.core import (
    DUMPS,
    INTERVALS_MS,
    Bar,
    Conn,
    Market,
    Protocol,
    RestError,
    iso_time,
    padded,
    plain,
    trim,
)

# Kraken's legacy asset ids (X for crypto, Z for fiat) and its altnames where they differ.
LEGACY = {
    "BTC": "XXBT",
    "ETH": "XETH",
    "LTC": "XLTC",
    "XRP": "XXRP",
    "XLM": "XXLM",
    "XMR": "XXMR",
    "ZEC": "XZEC",
    "ETC": "XETC",
    "REP": "XREP",
    "MLN": "XMLN",
    "DOGE": "XXDG",
    "USD": "ZUSD",
    "EUR": "ZEUR",
    "GBP": "ZGBP",
    "CAD": "ZCAD",
    "JPY": "ZJPY",
    "AUD": "ZAUD",
}
ALTNAMES = {"BTC": "XBT", "DOGE": "XDG"}
_FIAT = ("USD", "EUR", "GBP", "CAD", "JPY", "AUD", "CHF")
MINUTES = {"1m": 1, "5m": 5, "15m": 15, "30m": 30, "1h": 60, "4h": 240, "1d": 1440}
_INTERVAL_OF = {minutes: interval for interval, minutes in MINUTES.items()}
_OHLC_ROWS = 720
_OHLC_SNAPSHOT = 12
_TRADE_SNAPSHOT = 50
_FEES = [
    [0, 0.26],
    [50000, 0.24],
    [100000, 0.22],
    [250000, 0.2],
    [500000, 0.18],
    [1000000, 0.16],
    [2500000, 0.14],
    [5000000, 0.12],
    [10000000, 0.1],
]
_FEES_MAKER = [
    [0, 0.16],
    [50000, 0.14],
    [100000, 0.12],
    [250000, 0.1],
    [500000, 0.08],
    [1000000, 0.06],
    [2500000, 0.04],
    [5000000, 0.02],
    [10000000, 0],
]


def asset_id(code: str) -> str:
    """Return Kraken's asset id of a currency (``XETH``, ``ZUSD``, ``SOL``)."""
    return LEGACY.get(code, code)


def altname(code: str) -> str:
    """Return Kraken's altname of a currency (``XBT`` for BTC)."""
    return ALTNAMES.get(code, code)


def _error(text: str) -> RestError:
    """Return Kraken's error answer (HTTP 200, an error list)."""
    return RestError(200, {"error": [text], "result": {}})


def _ok(result: Any) -> dict[str, Any]:
    """Wrap a result the way Kraken does."""
    return {"error": [], "result": result}


def _seconds(ms: int) -> str:
    """Format epoch ms as Kraken's float seconds (a JSON number)."""
    return f"{ms // 1000}.{ms % 1000:03d}"


class KrakenProtocol(Protocol):
    """Kraken: websocket v2 ``trade``/``ohlc``, REST ``/0/public``."""

    name = "kraken"
    default_quote = "USD"
    heartbeat_s = 1.0

    def market_id(self, market: Market) -> str:
        """Return the pair id (legacy ``XETHZUSD`` style when both assets are legacy)."""
        if market.base in LEGACY and market.quote in LEGACY:
            return asset_id(market.base) + asset_id(market.quote)
        return altname(market.base) + altname(market.quote)

    def aliases(self, market: Market) -> Iterable[str]:
        """Return the pair id, altname, wsname, v2/ccxt symbol and capture symbol."""
        alt = altname(market.base) + altname(market.quote)
        wsname = f"{altname(market.base)}/{altname(market.quote)}"
        return (market.id, alt, wsname, market.symbol, market.capture)

    def candle_topic(self, market: Market, interval: str) -> str | None:
        """Return ``ohlc:<symbol>:<minutes>``."""
        minutes = MINUTES.get(interval)
        return None if minutes is None else f"ohlc:{market.symbol}:{minutes}"

    def ws_url(self, port: int) -> str:
        """Return the v2 websocket URL (``urls['api']['ws']['publicV2']``)."""
        return f"ws://127.0.0.1:{port}/v2"

    def rest_url(self, port: int) -> str:
        """Return the REST base URL (``urls['api']['public']``)."""
        return f"http://127.0.0.1:{port}"

    @staticmethod
    def configure_ccxt(exchange: Any, ws_url: str, rest_url: str) -> None:
        """Point a ``ccxt.pro.kraken`` client at the fake."""
        exchange.urls["api"]["ws"]["publicV2"] = ws_url
        exchange.urls["api"]["public"] = rest_url

    # ------------------------------------------------------------------ frames

    def _trade_json(self, market: Market, trade: dict[str, Any]) -> str:
        """Return one v2 trade object (numbers as the capture's digits)."""
        side = "sell" if trade["m"] else "buy"
        return (
            f'{{"symbol":"{market.symbol}","side":"{side}","price":{trim(trade["p"])},'
            f'"qty":{trim(trade["q"])},"ord_type":"market","trade_id":{trade["t"]},'
            f'"timestamp":"{iso_time(trade["T"])}"}}'
        )

    def _candle_json(self, market: Market, interval: str, bar: Bar) -> str:
        """Return one v2 ohlc object."""
        vwap = round(bar.vwap, market.price_decimals)
        end = bar.t + INTERVALS_MS[interval]
        return (
            f'{{"symbol":"{market.symbol}","open":{plain(bar.o)},"high":{plain(bar.h)},'
            f'"low":{plain(bar.l)},"close":{plain(bar.c)},"trades":{bar.n},'
            f'"volume":{plain(bar.v)},"vwap":{plain(vwap)},'
            f'"interval_begin":"{iso_time(bar.t, 9)}","interval":{MINUTES[interval]},'
            f'"timestamp":"{iso_time(end)}"}}'
        )

    def trade_frame(self, market: Market, trade: dict[str, Any]) -> str:
        """Return a ``trade`` update carrying one trade."""
        return f'{{"channel":"trade","type":"update","data":[{self._trade_json(market, trade)}]}}'

    def emit_trade(self, market: Market, trade: dict[str, Any], raw: str | None) -> bool:
        """Send a ``trade`` update."""
        topic = f"trade:{market.symbol}"
        if topic not in self.fake._subs:
            return False
        return self.fake.deliver(topic, self.trade_frame(market, trade))

    def _ohlc(self, kind: str, candles: str) -> str:
        """Return an ``ohlc`` message."""
        stamp = iso_time(self.fake.clock_ms, 9)
        return f'{{"channel":"ohlc","type":"{kind}","timestamp":"{stamp}","data":[{candles}]}}'

    def emit_candle(
        self, market: Market, interval: str, bar: Bar, closed: bool, trade: dict[str, Any]
    ) -> bool:
        """Send an ``ohlc`` update."""
        frame = self._ohlc("update", self._candle_json(market, interval, bar))
        return self.fake.deliver(market.candle_topics[interval], frame)

    def heartbeat(self, conn: Conn) -> str | None:
        """Return a heartbeat once the connection subscribed to something."""
        return '{"channel":"heartbeat"}' if conn.topics else None

    # ------------------------------------------------------------------ websocket

    def on_connect(self, conn: Conn) -> None:
        """Send the ``status`` message."""
        status = {
            "api_version": "v2",
            "connection_id": 14545728493745856413 + conn.ident,
            "system": "online",
            "version": "2.0.10",
        }
        conn.push(DUMPS({"channel": "status", "data": [status], "type": "update"}))

    def _answer(self, conn: Conn, method: str, req_id: Any, **fields: Any) -> None:
        """Send a method response with Kraken's ``time_in``/``time_out``."""
        stamp = iso_time(self.fake.clock_ms)
        answer: dict[str, Any] = {"method": method}
        if req_id is not None:
            answer["req_id"] = req_id
        answer.update(fields)
        answer["time_in"] = answer["time_out"] = stamp
        conn.push(DUMPS(answer))

    def on_message(self, conn: Conn, message: str | bytes) -> None:
        """Handle ``subscribe``/``unsubscribe``/``ping``."""
        try:
            request = json.loads(message)
        except ValueError:
            self._answer(conn, "", None, error="Malformed request", success=False)
            return
        if not isinstance(request, dict):
            self._answer(conn, "", None, error="Malformed request", success=False)
            return
        method = request.get("method")
        req_id = request.get("req_id")
        if method == "ping":
            self._answer(conn, "pong", req_id)
            return
        params = request.get("params")
        if method not in ("subscribe", "unsubscribe") or not isinstance(params, dict):
            self._answer(conn, str(method), req_id, error="Method not found", success=False)
            return
        channel = params.get("channel")
        symbols = params.get("symbol")
        if channel not in ("trade", "ohlc") or not isinstance(symbols, list):
            text = f"Channel {channel} not found" if channel else "Malformed request"
            self._answer(conn, method, req_id, error=text, success=False)
            return
        minutes = params.get("interval", 1)
        if channel == "ohlc" and minutes not in _INTERVAL_OF:
            text = "Subscription ohlc interval not supported"
            self._answer(conn, method, req_id, error=text, success=False)
            return
        default = channel == "ohlc"
        snapshot = bool(params.get("snapshot", default))
        for symbol in symbols:
            market = self.fake._aliases.get(str(symbol).upper())
            if market is None or str(symbol) != market.symbol:
                text = f"Currency pair not supported {symbol}"
                self._answer(conn, method, req_id, error=text, success=False, symbol=symbol)
                continue
            topic = f"trade:{market.symbol}"
            result: dict[str, Any] = {"channel": channel}
            if channel == "ohlc":
                topic = f"ohlc:{market.symbol}:{minutes}"
                result["interval"] = minutes
            if method == "unsubscribe":
                self.fake.unsubscribe(conn, topic)
                result["symbol"] = market.symbol
                self._answer(conn, method, req_id, result=result, success=True)
                continue
            result["snapshot"] = snapshot
            result["symbol"] = market.symbol
            self._answer(conn, method, req_id, result=result, success=True)
            if topic not in conn.topics:
                self.fake.subscribe(conn, topic)
                if snapshot:
                    self._snapshot(conn, channel, market, minutes)

    def _snapshot(self, conn: Conn, channel: str, market: Market, minutes: int) -> None:
        """Send a subscription's snapshot: recent trades or recent candles."""
        if channel == "trade":
            recent = market.replayed[-_TRADE_SNAPSHOT:]
            body = ",".join(self._trade_json(market, t) for t in recent)
            conn.push(f'{{"channel":"trade","type":"snapshot","data":[{body}]}}')
            return
        interval = _INTERVAL_OF[minutes]
        bars = market.builder(interval).upto(self.fake.clock_ms)[-_OHLC_SNAPSHOT:]
        body = ",".join(self._candle_json(market, interval, b) for b in bars if b.n)
        conn.push(self._ohlc("snapshot", body))

    # ------------------------------------------------------------------ REST

    def rest(self, path: str, query: dict[str, str]) -> Any:
        """Route ``/0/public/...``."""
        routes = {
            "/0/public/Time": self._time,
            "/0/public/Assets": self._assets,
            "/0/public/AssetPairs": self._asset_pairs,
            "/0/public/OHLC": self._ohlc_rows,
            "/0/public/Trades": self._trades,
        }
        route = routes.get(path)
        if route is None:
            raise RestError(404, {"error": ["EGeneral:Unknown method"]})
        return route(query)

    def _pair(self, query: dict[str, str]) -> Market:
        """Return the market a ``pair`` parameter names (id or altname)."""
        name = query.get("pair", "").upper()
        for market in self.fake._markets.values():
            if name in (market.id, altname(market.base) + altname(market.quote)):
                return market
        raise _error("EQuery:Unknown asset pair")

    def _time(self, query: dict[str, str]) -> dict[str, Any]:
        """Return ``Time``."""
        seconds = self.fake.clock_ms // 1000
        rfc = email.utils.formatdate(seconds, usegmt=False).replace("-0000", "+0000")
        return _ok({"unixtime": seconds, "rfc1123": rfc})

    def _assets(self, query: dict[str, str]) -> dict[str, Any]:
        """Return ``Assets`` for the replayed markets' currencies."""
        result: dict[str, Any] = {}
        for market in self.fake._markets.values():
            for code in (market.base, market.quote):
                fiat = code in _FIAT
                result[asset_id(code)] = {
                    "aclass": "currency",
                    "altname": altname(code),
                    "decimals": 4 if fiat else 10,
                    "display_decimals": 2 if fiat else 5,
                    "collateral_value": 1.0,
                    "status": "enabled",
                }
        return _ok(result)

    def _pair_info(self, market: Market) -> dict[str, Any]:
        """Return one ``AssetPairs`` entry."""
        return {
            "altname": altname(market.base) + altname(market.quote),
            "wsname": f"{altname(market.base)}/{altname(market.quote)}",
            "aclass_base": "currency",
            "base": asset_id(market.base),
            "aclass_quote": "currency",
            "quote": asset_id(market.quote),
            "lot": "unit",
            "cost_decimals": 5,
            "pair_decimals": market.price_decimals,
            "lot_decimals": 8,
            "lot_multiplier": 1,
            "leverage_buy": [2, 3, 4, 5],
            "leverage_sell": [2, 3, 4, 5],
            "fees": _FEES,
            "fees_maker": _FEES_MAKER,
            "fee_volume_currency": "ZUSD",
            "margin_call": 80,
            "margin_stop": 40,
            "ordermin": padded(Decimal(1).scaleb(-market.qty_decimals), market.qty_decimals),
            "costmin": "0.5",
            "tick_size": plain(Decimal(1).scaleb(-market.price_decimals)),
            "status": "online",
        }

    def _asset_pairs(self, query: dict[str, str]) -> dict[str, Any]:
        """Return ``AssetPairs`` (all, or those ``pair`` lists)."""
        markets = list(self.fake._markets.values())
        if "pair" in query:
            markets = [self._pair({"pair": name}) for name in query["pair"].split(",")]
        return _ok({m.id: self._pair_info(m) for m in markets})

    def _ohlc_rows(self, query: dict[str, str]) -> dict[str, Any]:
        """Return ``OHLC``: candles after ``since``, at most the 720 latest."""
        market = self._pair(query)
        try:
            minutes = int(query.get("interval", "1"))
            since = int(query["since"]) if "since" in query else None
        except ValueError:
            raise _error("EGeneral:Invalid arguments") from None
        interval = _INTERVAL_OF.get(minutes)
        if interval is None:
            raise _error("EGeneral:Invalid arguments")
        bars = market.builder(interval).upto(self.fake.clock_ms)[-_OHLC_ROWS:]
        if since is not None:
            bars = [b for b in bars if b.t // 1000 > since]
        places = market.price_decimals
        rows = [
            [
                b.t // 1000,
                padded(b.o, places),
                padded(b.h, places),
                padded(b.l, places),
                padded(b.c, places),
                padded(round(b.vwap, places), places),
                padded(b.v, 8),
                b.n,
            ]
            for b in bars
        ]
        clock = self.fake.clock_ms
        dur = INTERVALS_MS[interval]
        last = (clock - clock % dur - dur) // 1000
        return _ok({market.id: rows, "last": last})

    def _trades(self, query: dict[str, str]) -> dict[str, Any]:
        """Return ``Trades`` after ``since`` (seconds or nanoseconds), oldest first."""
        market = self._pair(query)
        try:
            count = min(int(query.get("count", "1000")), 1000)
            since = int(query["since"]) if "since" in query else None
        except ValueError:
            raise _error("EGeneral:Invalid arguments") from None
        trades = market.replayed
        since_ns = 0
        if since is None:
            chosen = trades[-count:]
        else:
            since_ns = since if since > 10**12 else since * 10**9
            chosen = [t for t in trades if t["T"] * 10**6 > since_ns][:count]
        places = market.price_decimals
        rows = [
            [
                padded(t["p"], places),
                padded(t["q"], 8),
                json.loads(_seconds(t["T"])),
                "s" if t["m"] else "b",
                "m",
                "",
                t["t"],
            ]
            for t in chosen
        ]
        last = chosen[-1]["T"] * 10**6 if chosen else since_ns
        return _ok({market.id: rows, "last": str(last)})
