"""Bybit spot (v5) as the fake exchange speaks it.

URLs a feed sets (``ws_url=`` and ``rest_url=`` on the CLI's second line):

- ``ws_url``  -> ``exchange.urls["api"]["ws"]["public"]["spot"]``:
  ``ws://127.0.0.1:PORT/v5/public/spot`` (ccxt parses trades and klines as spot only when
  the connection's URL contains ``spot``).
- ``rest_url`` -> ``exchange.urls["api"]["public"]``: ``http://127.0.0.1:PORT`` (ccxt
  appends ``/v5/market/...``).
- options: ``fetchMarkets["types"] = ["spot"]`` and ``defaultType = "spot"``: ``load_markets``
  then makes one call, ``/v5/market/instruments-info?category=spot`` (ccxt's
  ``fetch_currencies`` needs keys and is skipped without them). Without the option ccxt
  also asks for linear, inverse and option instruments: the fake lists none.

Frames follow the spot session recorded in ``shared/data/ws/cryptofeed/BYBIT.jsonl.gz``.
``{"op": "subscribe", "req_id", "args": [topics]}`` is acknowledged with
``{"success": true, "ret_msg": "subscribe", "conn_id", "req_id", "op": "subscribe"}``;
``{"op": "ping"}`` gets ``ret_msg`` ``pong``. Topics:

- ``publicTrade.<SYMBOL>``: ``{"topic", "ts", "type": "snapshot", "data": [trade]}`` per
  replayed trade. Trade ids (``i``) are opaque numeric strings, increasing but with gaps
  (as Bybit's spot ids are: never rely on them being consecutive); ``seq`` increases.
- ``kline.<interval>.<SYMBOL>`` (``1``, ``3``, ``5``, ``15``, ``30``, ``60``, ``120``, ``240``,
  ``360``, ``720``, ``D``): the forming candle on subscribe, then an update per trade with
  ``confirm`` true on the last trade of a candle.

Topics for ``FakeExchange.subscribers``/``wait_subscribed`` are Bybit's own
(``publicTrade.ETHUSDT``, ``kline.1.ETHUSDT``).

REST (``{"retCode", "retMsg", "result", "retExtInfo", "time"}``, errors as ``retCode``
10001 with HTTP 200): ``instruments-info``, ``kline`` (newest first; with ``start`` the
first ``limit`` candles from it, else the last ``limit`` up to ``end``; ``limit`` 200 by
default, at most 1000; empty candles flat at the previous close), ``recent-trade`` (newest
first, at most 60 on spot: no history, no ``since``), ``time``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from moodring.testing.fake_exchange.core import (
    DUMPS,
    Bar,
    Conn,
    Market,
    Protocol,
    RestError,
    plain,
    trim,
)

INTERVALS = {
    "1": "1m",
    "3": "3m",
    "5": "5m",
    "15": "15m",
    "30": "30m",
    "60": "1h",
    "120": "2h",
    "240": "4h",
    "360": "6h",
    "720": "12h",
    "D": "1d",
}
_CODE_OF = {interval: code for code, interval in INTERVALS.items()}
_ID_BASE = 2280000000000000000
_SEQ_BASE = 170000000000
_SPOT_TRADES = 60


def trade_id(capture_id: int) -> str:
    """Return an opaque Bybit-like spot trade id: increasing, with a gap every third trade."""
    return str(_ID_BASE + capture_id + capture_id // 3)


def _error(text: str) -> RestError:
    """Return Bybit's parameter error (HTTP 200, ``retCode`` 10001)."""
    return RestError(200, {"retCode": 10001, "retMsg": text, "result": {}, "retExtInfo": {}})


class BybitProtocol(Protocol):
    """Bybit v5 spot: ``publicTrade``/``kline`` topics, ``/v5/market`` REST."""

    name = "bybit"
    default_quote = "USDT"
    restricted_body = (
        "<HTML><BODY><H1>403 ERROR</H1><H2>The request could not be satisfied.</H2>"
        "The Amazon CloudFront distribution is configured to block access from your country."
        "</BODY></HTML>"
    )

    def aliases(self, market: Market) -> Iterable[str]:
        """Return the symbol, the ccxt symbol and the capture symbol."""
        return (market.id, market.symbol, market.capture)

    def candle_topic(self, market: Market, interval: str) -> str | None:
        """Return ``kline.<code>.<SYMBOL>``."""
        code = _CODE_OF.get(interval)
        return None if code is None else f"kline.{code}.{market.id}"

    def ws_url(self, port: int) -> str:
        """Return the spot websocket URL (``urls['api']['ws']['public']['spot']``)."""
        return f"ws://127.0.0.1:{port}/v5/public/spot"

    def rest_url(self, port: int) -> str:
        """Return the REST base URL (``urls['api']['public']``)."""
        return f"http://127.0.0.1:{port}"

    @staticmethod
    def configure_ccxt(exchange: Any, ws_url: str, rest_url: str) -> None:
        """Point a ``ccxt.pro.bybit`` client at the fake (spot markets only)."""
        exchange.urls["api"]["ws"]["public"]["spot"] = ws_url
        exchange.urls["api"]["public"] = rest_url
        exchange.options["fetchMarkets"]["types"] = ["spot"]
        exchange.options["defaultType"] = "spot"

    # ------------------------------------------------------------------ frames

    @staticmethod
    def _trade_json(market: Market, trade: dict[str, Any]) -> str:
        """Return one ``publicTrade`` entry."""
        return DUMPS(
            {
                "i": trade_id(trade["t"]),
                "T": trade["T"],
                "p": trim(trade["p"]),
                "v": trim(trade["q"]),
                "S": "Sell" if trade["m"] else "Buy",
                "seq": _SEQ_BASE + 3 * trade["t"],
                "s": market.id,
                "BT": False,
                "RPI": False,
            }
        )

    def trade_frame(self, market: Market, trade: dict[str, Any]) -> str:
        """Return a ``publicTrade`` message carrying one trade."""
        data = self._trade_json(market, trade)
        return (
            f'{{"topic":"publicTrade.{market.id}","ts":{trade["E"]},"type":"snapshot",'
            f'"data":[{data}]}}'
        )

    def emit_trade(self, market: Market, trade: dict[str, Any], raw: str | None) -> bool:
        """Send a ``publicTrade`` message."""
        topic = f"publicTrade.{market.id}"
        if topic not in self.fake._subs:
            return False
        return self.fake.deliver(topic, self.trade_frame(market, trade))

    @staticmethod
    def _kline(topic: str, interval: str, bar: Bar, closed: bool, ts: int) -> str:
        """Return a ``kline`` message."""
        data = {
            "start": bar.t,
            "end": bar.T,
            "interval": _CODE_OF[interval],
            "open": plain(bar.o),
            "close": plain(bar.c),
            "high": plain(bar.h),
            "low": plain(bar.l),
            "volume": plain(bar.v),
            "turnover": plain(bar.q),
            "confirm": closed,
            "timestamp": ts,
        }
        return DUMPS({"type": "snapshot", "topic": topic, "data": [data], "ts": ts})

    def emit_candle(
        self, market: Market, interval: str, bar: Bar, closed: bool, trade: dict[str, Any]
    ) -> bool:
        """Send a ``kline`` update."""
        topic = market.candle_topics[interval]
        return self.fake.deliver(topic, self._kline(topic, interval, bar, closed, trade["E"]))

    # ------------------------------------------------------------------ websocket

    @staticmethod
    def _ack(conn: Conn, op: str, req_id: Any, success: bool, ret_msg: str) -> None:
        """Send an operation's acknowledgement."""
        answer: dict[str, Any] = {
            "success": success,
            "ret_msg": ret_msg,
            "conn_id": f"fake{conn.ident:016x}-bybit",
        }
        if req_id is not None:
            answer["req_id"] = str(req_id)
        answer["op"] = op
        conn.push(DUMPS(answer))

    def on_message(self, conn: Conn, message: str | bytes) -> None:
        """Handle ``subscribe``/``unsubscribe``/``ping``."""
        try:
            request = json.loads(message)
        except ValueError:
            self._ack(conn, "", None, False, "error:request not json")
            return
        if not isinstance(request, dict):
            self._ack(conn, "", None, False, "error:request not json")
            return
        op = request.get("op")
        req_id = request.get("req_id")
        if op == "ping":
            self._ack(conn, "ping", req_id, True, "pong")
            return
        args = request.get("args")
        if op not in ("subscribe", "unsubscribe") or not isinstance(args, list):
            self._ack(conn, str(op), req_id, False, f"error:handler not found,op:{op}")
            return
        topics = [str(a) for a in args]
        bad = [t for t in topics if not self._known(t)]
        if bad:
            self._ack(conn, op, req_id, False, f"Invalid symbol :[{','.join(bad)}]")
            return
        if op == "unsubscribe":
            for topic in topics:
                self.fake.unsubscribe(conn, topic)
            self._ack(conn, op, req_id, True, "")
            return
        self._ack(conn, op, req_id, True, "subscribe")
        for topic in topics:
            if self.fake.subscribe(conn, topic) and topic.startswith("kline."):
                self._forming(conn, topic)

    def _known(self, topic: str) -> bool:
        """Tell whether a topic names a replayed market's trades or candles."""
        kind, _, rest = topic.partition(".")
        if kind == "publicTrade":
            return rest in self.fake._markets
        if kind == "kline":
            return topic in self.fake._candle_of_topic
        return False

    def _forming(self, conn: Conn, topic: str) -> None:
        """Send a new kline subscription the forming candle."""
        market, interval = self.fake._candle_of_topic[topic]
        bars = market.builder(interval).upto(self.fake.clock_ms)
        if bars:
            conn.push(self._kline(topic, interval, bars[-1], False, self.fake.clock_ms))

    # ------------------------------------------------------------------ REST

    def _envelope(self, result: Any) -> dict[str, Any]:
        """Wrap a result the way Bybit does."""
        return {
            "retCode": 0,
            "retMsg": "OK",
            "result": result,
            "retExtInfo": {},
            "time": self.fake.clock_ms,
        }

    def rest(self, path: str, query: dict[str, str]) -> Any:
        """Route ``/v5/market/...``."""
        routes = {
            "/v5/market/instruments-info": self._instruments,
            "/v5/market/kline": self._klines,
            "/v5/market/recent-trade": self._recent_trades,
            "/v5/market/time": self._time,
        }
        route = routes.get(path)
        if route is None:
            raise RestError(404, {"retCode": 404, "retMsg": "Not Found"})
        return self._envelope(route(query))

    def _spot_market(self, query: dict[str, str]) -> Market:
        """Return the spot market a query names, or raise Bybit's error."""
        if query.get("category") != "spot":
            raise _error("params error: Category is invalid")
        market = self.fake._markets.get(query.get("symbol", "").upper())
        if market is None:
            raise _error("Not supported symbols")
        return market

    @staticmethod
    def _int(query: dict[str, str], key: str) -> int | None:
        """Return an integer parameter, or raise Bybit's error."""
        value = query.get(key)
        if value is None:
            return None
        try:
            return int(value)
        except ValueError:
            raise _error(f"params error: {key} invalid") from None

    def _instruments(self, query: dict[str, str]) -> dict[str, Any]:
        """Return ``instruments-info``: the replayed markets for spot, nothing otherwise."""
        category = query.get("category")
        if category not in ("spot", "linear", "inverse", "option"):
            raise _error("params error: Category is invalid")
        if category != "spot":
            return {"category": category, "list": [], "nextPageCursor": ""}
        markets = list(self.fake._markets.values())
        if "symbol" in query:
            markets = [m for m in markets if m.id == query["symbol"].upper()]
        return {"category": "spot", "list": [self._instrument(i, m) for i, m in enumerate(markets)]}

    @staticmethod
    def _instrument(index: int, market: Market) -> dict[str, Any]:
        """Return one spot ``instruments-info`` entry."""
        step = plain(Decimal(1).scaleb(-market.qty_decimals))
        return {
            "symbolId": 9 + index,
            "symbol": market.id,
            "baseCoin": market.base,
            "quoteCoin": market.quote,
            "innovation": "0",
            "status": "Trading",
            "marginTrading": "utaOnly",
            "stTag": "0",
            "lotSizeFilter": {
                "basePrecision": step,
                "quotePrecision": "0.0000001",
                "minOrderQty": step,
                "maxOrderQty": "8118",
                "minOrderAmt": "5",
                "maxOrderAmt": "7000000",
                "maxLimitOrderQty": "8118",
                "maxMarketOrderQty": "2706",
                "postOnlyMaxLimitOrderSize": "40590",
            },
            "priceFilter": {"tickSize": plain(Decimal(1).scaleb(-market.price_decimals))},
            "riskParameters": {"priceLimitRatioX": "0.005", "priceLimitRatioY": "0.01"},
            "symbolType": "",
            "xstockMultiplier": "1",
        }

    def _klines(self, query: dict[str, str]) -> dict[str, Any]:
        """Return ``kline`` rows newest first."""
        market = self._spot_market(query)
        interval = INTERVALS.get(query.get("interval", ""))
        if interval is None:
            raise _error("Invalid period!")
        start = self._int(query, "start")
        end = self._int(query, "end")
        limit = self._int(query, "limit") or 200
        if not 0 < limit <= 1000:
            raise _error("params error: limit invalid")
        bars = market.builder(interval).select(self.fake.clock_ms, start, end, limit)
        rows = [
            [str(b.t), plain(b.o), plain(b.h), plain(b.l), plain(b.c), plain(b.v), plain(b.q)]
            for b in reversed(bars)
        ]
        return {"symbol": market.id, "category": "spot", "list": rows}

    def _recent_trades(self, query: dict[str, str]) -> dict[str, Any]:
        """Return ``recent-trade``: the latest spot trades, newest first."""
        market = self._spot_market(query)
        limit = self._int(query, "limit") or _SPOT_TRADES
        if not 0 < limit <= _SPOT_TRADES:
            raise _error("params error: limit invalid")
        chosen = market.replayed[-limit:][::-1]
        return {
            "category": "spot",
            "list": [
                {
                    "execId": trade_id(t["t"]),
                    "symbol": market.id,
                    "price": trim(t["p"]),
                    "size": trim(t["q"]),
                    "side": "Sell" if t["m"] else "Buy",
                    "time": str(t["T"]),
                    "isBlockTrade": False,
                    "isRPITrade": False,
                    "seq": str(_SEQ_BASE + 3 * t["t"]),
                }
                for t in chosen
            ],
        }

    def _time(self, query: dict[str, str]) -> dict[str, str]:
        """Return ``time``."""
        clock = self.fake.clock_ms
        return {"timeSecond": str(clock // 1000), "timeNano": str(clock * 10**6)}
