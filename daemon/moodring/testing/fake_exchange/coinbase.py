"""Coinbase Advanced Trade as the fake exchange speaks it.

URLs a feed sets (``ws_url=`` and ``rest_url=`` on the CLI's second line):

- ``ws_url``  -> ``exchange.urls["api"]["ws"]`` (a string in ccxt's coinbase):
  ``ws://127.0.0.1:PORT``.
- ``rest_url`` -> ``exchange.urls["api"]["rest"]``: ``http://127.0.0.1:PORT`` (ccxt appends
  ``/api/v3/brokerage/...`` and ``/v2/...``).
- No options are needed. ``load_markets`` makes five calls: ``/v2/currencies``,
  ``/v2/currencies/crypto``, ``/v2/exchange-rates`` (ccxt's ``fetch_currencies``), then
  ``/api/v3/brokerage/market/products`` and the same with ``product_type=FUTURE`` (empty).
  Setting ``exchange.has["fetchCurrencies"] = False`` leaves the two products calls. A
  ``product_ids`` query (repeated, or comma-separated) lists only those products; an
  unknown id is left out, not refused.

Frames follow the Advanced Trade session recorded in
``shared/data/ws/cryptofeed/COINBASE.jsonl.gz``: every message is
``{"channel", "timestamp", "sequence_num", "events"}`` with ``sequence_num`` counting every
message on the connection from 0 (a gap means a lost message). ``subscribe``/
``unsubscribe`` requests (``{"type", "product_ids", "channel"}``) are answered by a
``subscriptions`` message listing the connection's channels. Channels:

- ``market_trades``: on subscribe a ``snapshot`` event per product with its last 100
  trades newest first, then one ``update`` event per replayed trade. ``trade_id`` is a
  string, consecutive per product (the capture's ids); ``side`` is the taker's side.
- ``candles``: 5-minute candles only (as Coinbase streams them): a ``snapshot`` of the last
  100 candles with trades, then an ``update`` per trade; no closing flag.
- ``heartbeats``: one message a second (``heartbeat_counter`` counts per connection).

Topics for ``FakeExchange.subscribers``/``wait_subscribed``: ``market_trades:ETH-USD``,
``candles:ETH-USD``, ``heartbeats``.

REST: ``/api/v3/brokerage/market/products[/{id}]``, ``.../products/{id}/candles``
(``start``/``end`` in seconds, both included, ``granularity`` ``ONE_MINUTE`` ...
``ONE_DAY``, at most 350 candles, newest first, buckets without trades left out as
Coinbase does), ``.../products/{id}/ticker`` (recent trades newest first, ``limit`` up to
1000, ``start`` included and ``end`` excluded, in seconds), ``/api/v3/brokerage/time``,
``/v2/time`` (what ccxt's ``fetch_time`` calls) and the three ``/v2`` currency calls.
Errors: ``{"error", "error_details", "message"}`` with HTTP 400 or 404.
"""

from __future__ import annotations

import json
import re
import time
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
    plain,
    trim,
)

GRANULARITIES = {
    "ONE_MINUTE": "1m",
    "FIVE_MINUTE": "5m",
    "FIFTEEN_MINUTE": "15m",
    "THIRTY_MINUTE": "30m",
    "ONE_HOUR": "1h",
    "TWO_HOUR": "2h",
    "SIX_HOUR": "6h",
    "ONE_DAY": "1d",
}
CHANNELS = ("market_trades", "candles", "heartbeats")
_SNAPSHOT = 100  # trades and candles in a subscription's snapshot (as recorded)
_MAX_CANDLES = 350
_NAMES = {
    "BTC": "Bitcoin",
    "ETH": "Ethereum",
    "USD": "US Dollar",
    "EUR": "Euro",
    "GBP": "British Pound",
    "USDC": "USDC",
    "USDT": "Tether",
}
_FIAT = ("USD", "EUR", "GBP")
_PRODUCT_PATH = re.compile(r"^/api/v3/brokerage/market/products/([^/]+)(?:/(candles|ticker))?$")
_UPTIME_NS = time.monotonic_ns()


def _error(status: int, error: str, message: str) -> RestError:
    """Return Coinbase's error answer."""
    return RestError(status, {"error": error, "error_details": message, "message": message})


def _seconds(query: dict[str, str], key: str, required: bool) -> int | None:
    """Return an integer query parameter (UNIX seconds, a count)."""
    value = query.get(key)
    if value is None:
        if required:
            raise _error(400, "INVALID_ARGUMENT", f"{key} is required")
        return None
    try:
        return int(value)
    except ValueError:
        raise _error(400, "INVALID_ARGUMENT", f"invalid {key} {value!r}") from None


def product_info(
    product_id: str, base: str, quote: str, price: str, price_decimals: int, qty_decimals: int
) -> dict[str, Any]:
    """Return one product as ``/api/v3/brokerage/market/products`` lists it."""
    tick = plain(Decimal(1).scaleb(-price_decimals))
    step = plain(Decimal(1).scaleb(-qty_decimals))
    return {
        "product_id": product_id,
        "price": price,
        "price_percentage_change_24h": "0",
        "volume_24h": "0",
        "volume_percentage_change_24h": "0",
        "base_increment": step,
        "quote_increment": tick,
        "quote_min_size": "1",
        "quote_max_size": "150000000",
        "base_min_size": step,
        "base_max_size": "42000",
        "base_name": _NAMES.get(base, base),
        "quote_name": _NAMES.get(quote, quote),
        "watched": False,
        "is_disabled": False,
        "new": False,
        "status": "online",
        "cancel_only": False,
        "limit_only": False,
        "post_only": False,
        "trading_disabled": False,
        "auction_mode": False,
        "product_type": "SPOT",
        "quote_currency_id": quote,
        "base_currency_id": base,
        "fcm_trading_session_details": None,
        "mid_market_price": "",
        "alias": "",
        "alias_to": [],
        "base_display_symbol": base,
        "quote_display_symbol": quote,
        "view_only": False,
        "price_increment": tick,
        "display_name": product_id,
        "product_venue": "CBE",
        "approximate_quote_24h_volume": "0",
        "new_at": "2023-01-01T00:00:00Z",
    }


def trade_json(market: Market, trade: dict[str, Any]) -> str:
    """Return one trade as Coinbase writes it."""
    return DUMPS(
        {
            "product_id": market.id,
            "trade_id": str(trade["t"]),
            "price": trim(trade["p"]),
            "size": trim(trade["q"]),
            "time": iso_time(trade["T"], strip=True),
            "side": "SELL" if trade["m"] else "BUY",
        }
    )


def candle_json(market: Market, bar: Bar) -> str:
    """Return one candle as the ``candles`` channel writes it."""
    return DUMPS(
        {
            "start": str(bar.t // 1000),
            "high": plain(bar.h),
            "low": plain(bar.l),
            "open": plain(bar.o),
            "close": plain(bar.c),
            "volume": plain(bar.v),
            "product_id": market.id,
        }
    )


class CoinbaseProtocol(Protocol):
    """Coinbase Advanced Trade: ``market_trades``/``candles`` channels, brokerage REST."""

    name = "coinbase"
    default_quote = "USD"
    heartbeat_s = 1.0

    def market_id(self, market: Market) -> str:
        """Return the product id (``ETH-USD``)."""
        return f"{market.base}-{market.quote}"

    def candle_topic(self, market: Market, interval: str) -> str | None:
        """Return ``candles:<product>`` for 5-minute candles (the only ones streamed)."""
        return f"candles:{market.id}" if interval == "5m" else None

    def ws_url(self, port: int) -> str:
        """Return the websocket URL (``urls['api']['ws']``)."""
        return f"ws://127.0.0.1:{port}"

    def rest_url(self, port: int) -> str:
        """Return the REST base URL (``urls['api']['rest']``)."""
        return f"http://127.0.0.1:{port}"

    @staticmethod
    def configure_ccxt(exchange: Any, ws_url: str, rest_url: str) -> None:
        """Point a ``ccxt.pro.coinbase`` client at the fake."""
        exchange.urls["api"]["ws"] = ws_url
        exchange.urls["api"]["rest"] = rest_url

    # ------------------------------------------------------------------ frames

    def message(self, conn: Conn | None, channel: str, events: str) -> str:
        """Return one message of a channel, numbered on its connection."""
        seq = 0
        if conn is not None:
            seq = conn.seq
            conn.seq += 1
        stamp = iso_time(self.fake.clock_ms, 9)
        head = f'{{"channel":"{channel}","timestamp":"{stamp}","sequence_num":'
        return f'{head}{seq},"events":{events}}}'

    def _send(self, topic: str, channel: str, events: str) -> bool:
        """Send an event list to a topic's subscribers, each numbered on its connection."""
        conns = self.fake._subs.get(topic)
        if not conns:
            return False
        for conn in conns:
            conn.push(self.message(conn, channel, events))
        return True

    def trade_frame(self, market: Market, trade: dict[str, Any]) -> str:
        """Return a ``market_trades`` update carrying one trade."""
        events = f'[{{"type":"update","trades":[{trade_json(market, trade)}]}}]'
        return self.message(None, "market_trades", events)

    def emit_trade(self, market: Market, trade: dict[str, Any], raw: str | None) -> bool:
        """Send a ``market_trades`` update."""
        topic = f"market_trades:{market.id}"
        if topic not in self.fake._subs:
            return False
        events = f'[{{"type":"update","trades":[{trade_json(market, trade)}]}}]'
        return self._send(topic, "market_trades", events)

    def emit_candle(
        self, market: Market, interval: str, bar: Bar, closed: bool, trade: dict[str, Any]
    ) -> bool:
        """Send a ``candles`` update."""
        events = f'[{{"type":"update","candles":[{candle_json(market, bar)}]}}]'
        return self._send(market.candle_topics[interval], "candles", events)

    def heartbeat(self, conn: Conn) -> str | None:
        """Return a ``heartbeats`` message if the connection asked for them."""
        if "heartbeats" not in conn.topics:
            return None
        conn.beats += 1
        clock = self.fake.clock_ms
        day = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(clock // 1000))
        uptime = (time.monotonic_ns() - _UPTIME_NS) / 1e9
        now = f"{day}.{clock % 1000:03d}000000 +0000 UTC m=+{uptime:.9f}"
        events = DUMPS([{"current_time": now, "heartbeat_counter": conn.beats}])
        return self.message(conn, "heartbeats", events)

    # ------------------------------------------------------------------ websocket

    def on_message(self, conn: Conn, message: str | bytes) -> None:
        """Handle ``subscribe``/``unsubscribe``."""
        try:
            request = json.loads(message)
        except ValueError:
            conn.push(DUMPS({"type": "error", "message": "failure to unmarshal message"}))
            return
        kind = request.get("type") if isinstance(request, dict) else None
        if kind not in ("subscribe", "unsubscribe"):
            conn.push(DUMPS({"type": "error", "message": f"unknown message type {kind!r}"}))
            return
        channel = request.get("channel")
        ids = request.get("product_ids") or []
        if channel not in CHANNELS or not isinstance(ids, list):
            conn.push(DUMPS({"type": "error", "message": f"Failed to subscribe to {channel}"}))
            return
        markets: list[Market] = []
        if channel != "heartbeats" and not ids:
            conn.push(DUMPS({"type": "error", "message": "product_ids are required"}))
            return
        if channel != "heartbeats":
            for product in ids:
                market = self.fake._markets.get(str(product))
                if market is None:
                    text = f"Failed to subscribe: {product} is not a valid product"
                    conn.push(DUMPS({"type": "error", "message": text}))
                    return
                markets.append(market)
        topics = [f"{channel}:{m.id}" for m in markets] or [channel]
        if kind == "unsubscribe":
            for topic in topics:
                self.fake.unsubscribe(conn, topic)
        else:
            for market, topic in zip(markets, topics, strict=False):
                if topic not in conn.topics:
                    self._snapshot(conn, channel, market)
            for topic in topics:
                self.fake.subscribe(conn, topic)
        conn.push(self.message(conn, "subscriptions", DUMPS([self._listing(conn)])))

    def _snapshot(self, conn: Conn, channel: str, market: Market) -> None:
        """Send a new subscription's snapshot: recent trades or recent candles."""
        if channel == "market_trades":
            recent = market.replayed[-_SNAPSHOT:][::-1]
            if not recent:
                return
            body = ",".join(trade_json(market, t) for t in recent)
            events = f'[{{"type":"snapshot","trades":[{body}]}}]'
        else:
            builder = market.builder("5m")
            bars = [b for b in builder.upto(self.fake.clock_ms) if b.n][-_SNAPSHOT:]
            if not bars:
                return
            body = ",".join(candle_json(market, b) for b in bars)
            events = f'[{{"type":"snapshot","candles":[{body}]}}]'
        conn.push(self.message(conn, channel, events))

    @staticmethod
    def _listing(conn: Conn) -> dict[str, Any]:
        """Return the ``subscriptions`` event: channel -> product ids."""
        channels: dict[str, list[str]] = {}
        for topic in sorted(conn.topics):
            channel, _, product = topic.partition(":")
            channels.setdefault(channel, []).append(product or channel)
        return {"subscriptions": channels}

    # ------------------------------------------------------------------ REST

    def rest(self, path: str, query: dict[str, str]) -> Any:
        """Route the brokerage and ``/v2`` paths."""
        fake = self.fake
        clock = fake.clock_ms
        if path == "/api/v3/brokerage/market/products":
            return self._products(query)
        if path == "/api/v3/brokerage/time":
            return {
                "iso": iso_time(clock, 3),
                "epochSeconds": str(clock // 1000),
                "epochMillis": str(clock),
            }
        if path == "/v2/time":
            return {"data": {"iso": iso_time(clock, 0), "epoch": clock // 1000}}
        if path == "/v2/currencies":
            fiat = [c for c in self._currencies() if c in _FIAT]
            return {"data": [{"id": c, "name": _NAMES.get(c, c), "min_size": "0.01"} for c in fiat]}
        if path == "/v2/currencies/crypto":
            crypto = [c for c in self._currencies() if c not in _FIAT]
            return {"data": [self._crypto(i, c) for i, c in enumerate(crypto)]}
        if path == "/v2/exchange-rates":
            return {"data": {"currency": query.get("currency", "USD"), "rates": self._rates()}}
        found = _PRODUCT_PATH.match(path)
        if found is None:
            raise _error(404, "NOT_FOUND", f"{path} not found")
        market = fake._markets.get(found.group(1))
        if market is None:
            raise _error(404, "NOT_FOUND", "ProductID is invalid")
        if found.group(2) == "candles":
            return {"candles": self._candles(market, query)}
        if found.group(2) == "ticker":
            return self._ticker(market, query)
        return self._product(market)

    def _currencies(self) -> list[str]:
        """Return every currency of the replayed markets."""
        found: dict[str, None] = {}
        for market in self.fake._markets.values():
            found[market.base] = found[market.quote] = None
        return list(found)

    @staticmethod
    def _crypto(index: int, code: str) -> dict[str, Any]:
        """Return one ``/v2/currencies/crypto`` entry."""
        return {
            "asset_id": f"00000000-0000-4000-8000-{index:012d}",
            "code": code,
            "name": _NAMES.get(code, code),
            "color": "#000000",
            "sort_index": index,
            "exponent": 8,
            "type": "crypto",
            "address_regex": "^.+$",
        }

    def _rates(self) -> dict[str, str]:
        """Return USD exchange rates from the capture's first prices."""
        rates = {"USD": "1"}
        for market in self.fake._markets.values():
            price = Decimal(market.trades[0]["p"])
            rates[market.base] = plain(round(1 / price, 12))
            rates.setdefault(market.quote, "1")
        return rates

    def _product(self, market: Market) -> dict[str, Any]:
        """Return one product as ``/api/v3/brokerage/market/products`` lists it."""
        last = market.replayed[-1]["p"] if market.replayed else market.trades[0]["p"]
        return product_info(
            market.id,
            market.base,
            market.quote,
            trim(last),
            market.price_decimals,
            market.qty_decimals,
        )

    def _products(self, query: dict[str, str]) -> dict[str, Any]:
        """Return the spot products (none for ``product_type=FUTURE``), those of ``product_ids``.

        Like Coinbase, an unknown id in ``product_ids`` is left out, not refused.
        """
        markets = list(self.fake._markets.values())
        if "product_ids" in query:
            asked = set(query["product_ids"].split(","))
            markets = [m for m in markets if m.id in asked]
        products = []
        if query.get("product_type", "SPOT").upper() == "SPOT":
            products = [self._product(m) for m in markets]
        return {"products": products, "num_products": len(products)}

    def _candles(self, market: Market, query: dict[str, str]) -> list[dict[str, str]]:
        """Return candles with trades opening in [start, end], newest first."""
        interval = GRANULARITIES.get(query.get("granularity", ""))
        if interval is None:
            raise _error(400, "INVALID_ARGUMENT", "granularity is invalid")
        start = _seconds(query, "start", True)
        end = _seconds(query, "end", True)
        assert start is not None and end is not None
        dur_s = INTERVALS_MS[interval] // 1000
        if end < start or (end - start) // dur_s > _MAX_CANDLES:
            text = (
                "start and end argument is invalid - number of candles requested should be"
                f" less than {_MAX_CANDLES}"
            )
            raise _error(400, "INVALID_ARGUMENT", text)
        limit = _seconds(query, "limit", False) or _MAX_CANDLES
        bars = market.builder(interval).upto(self.fake.clock_ms)
        chosen = [b for b in bars if b.n and start * 1000 <= b.t <= end * 1000][-limit:]
        return [
            {
                "start": str(b.t // 1000),
                "low": plain(b.l),
                "high": plain(b.h),
                "open": plain(b.o),
                "close": plain(b.c),
                "volume": plain(b.v),
            }
            for b in reversed(chosen)
        ]

    def _ticker(self, market: Market, query: dict[str, str]) -> dict[str, Any]:
        """Return recent trades newest first, ``limit`` of them, within [start, end)."""
        limit = _seconds(query, "limit", False) or 100
        if not 0 < limit <= 1000:
            raise _error(400, "INVALID_ARGUMENT", "limit must be between 1 and 1000")
        start = _seconds(query, "start", False)
        end = _seconds(query, "end", False)
        trades = market.replayed
        if start is not None or end is not None:
            low = -1 if start is None else start * 1000
            high = 1 << 62 if end is None else end * 1000
            trades = [t for t in trades if low <= t["T"] < high]
        chosen = trades[-limit:][::-1]
        return {
            "trades": [
                {
                    "trade_id": str(t["t"]),
                    "product_id": market.id,
                    "price": trim(t["p"]),
                    "size": trim(t["q"]),
                    "time": iso_time(t["T"], strip=True),
                    "side": "SELL" if t["m"] else "BUY",
                    "bid": "",
                    "ask": "",
                }
                for t in chosen
            ],
            "best_bid": "",
            "best_ask": "",
        }

    def aliases(self, market: Market) -> Iterable[str]:
        """Return the product id, the ccxt and the capture symbol."""
        return (market.id, market.symbol, market.capture, f"{market.base}{market.quote}")
