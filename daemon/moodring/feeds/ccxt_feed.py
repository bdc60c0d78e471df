"""Crypto feeds through ccxt.pro: one client per exchange, trades in, gaps repaired from REST."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import ccxt.pro as ccxtpro
from ccxt.base.errors import BaseError, NetworkError

from moodring.feeds.backoff import Backoff
from moodring.feeds.base import FeedSink
from moodring.feeds.health import trade_problem
from moodring.market.bar import Bar
from moodring.market.builder import HOLD_ALL, BarBuilder
from moodring.settings import FeedConfig
from moodring.times import iso_time

log = logging.getLogger("moodring.feeds.ccxt")

# Reconnect before exchanges drop a stream themselves (Binance: after 24 h).
RECONNECT_EVERY = 23 * 3600.0
# Seconds a client may take to close its sockets.
CLOSE_TIMEOUT = 1.0
# ccxt's own caches stay small: trades are taken as ccxt parses them (never read back from
# its cache), and moodring's ring buffers are the source of truth.
CACHE_LIMIT = 100


@dataclass(slots=True)
class _Repair:
    """A builder's gap: held bars waiting for the exchange's klines."""

    builder: BarBuilder
    feed: str
    task: asyncio.Task[None] | None = None


@dataclass
class ExchangeStats:
    """Counters of one exchange connection."""

    trades: int = 0
    missed: int = 0
    reconnects: int = 0
    repairs: int = 0
    last_frame: float = 0.0
    per_feed: dict[str, int] = field(default_factory=dict)


class ExchangeFeeds:
    """All feeds of one exchange on one ccxt.pro client.

    Watches trades (``watch_trades_for_symbols`` where the exchange has it), each call
    bounded by a timeout; on a network error, a silent socket or the daily forced
    reconnect it reconnects with capped backoff. The bars a disconnection overlapped are
    held back in the bar builders and settled from the exchange's REST klines once the
    first bar seen whole since has closed, so closed bars equal an unbroken stream.
    """

    def __init__(
        self,
        exchange: str,
        feeds: Mapping[str, FeedConfig],
        sink: FeedSink,
        builders: Callable[[str], list[BarBuilder]],
        *,
        timeout: float = 30.0,
        reconnect_every: float = RECONNECT_EVERY,
        client_factory: Callable[[], Any] | None = None,
    ) -> None:
        self.exchange = exchange
        self.feeds = dict(feeds)
        self.sink = sink
        self._builders = builders
        self.timeout = timeout
        self.reconnect_every = reconnect_every
        self.stats = ExchangeStats()
        for name, feed in self.feeds.items():
            if feed.stream == "ohlcv":
                log.warning("%s: stream: ohlcv is not supported yet; watching trades", name)
        self._by_symbol: dict[str, list[str]] = {}
        self._by_stream: dict[str, list[str]] = {}  # "ethusdt" -> feeds, for bad frames
        for name, feed in self.feeds.items():
            self._by_symbol.setdefault(feed.symbol, []).append(name)
            self._by_stream.setdefault(feed.symbol.replace("/", "").lower(), []).append(name)
        self._factory = client_factory or self._make_client
        self._client = self._factory()
        self._offset_ms = 0
        self._last_trade_ms = -1
        self._last_trade_at = 0.0
        self._repairs: dict[int, _Repair] = {}
        self._last_id: dict[str, int] = {}
        self._heard: dict[str, float] = {}  # feed -> monotonic time of its latest trade
        self._stale: set[str] = set()
        self._started = time.monotonic()
        limits = [f.stale_after for f in self.feeds.values() if f.stale_after]
        # a socket silent for this long (all symbols at once) is reconnected
        self._silence = min([timeout, *limits])
        self._awaiting_first: set[str] = set()
        self.warmed = asyncio.Event()

    def _make_client(self) -> Any:
        cls = getattr(ccxtpro, self.exchange, None)
        if cls is None:
            raise ValueError(f"ccxt.pro has no exchange {self.exchange!r}")
        client = guarded(cls, self._bad_frame, self._on_trade)(
            {"enableRateLimit": True, "newUpdates": True}
        )
        client.options["tradesLimit"] = CACHE_LIMIT
        client.options["OHLCVLimit"] = CACHE_LIMIT
        first = next(iter(self.feeds.values()))
        if first.ws_url or first.rest_url:
            configure_urls(client, first.ws_url, first.rest_url)
        return client

    def now_ms(self) -> int:
        """Return the exchange's clock (local time corrected by the measured offset)."""
        return int(time.time() * 1000) + self._offset_ms

    def clock_ms(self) -> int:
        """Return the latest trade time moved on by the wall time since it arrived.

        The bar-closing timer uses this: it never runs ahead of the stream (a replay that
        is faster than real time only makes it lag, and trades close bars anyway).
        """
        if self._last_trade_ms < 0:
            return self.now_ms()
        return self._last_trade_ms + int((time.monotonic() - self._last_trade_at) * 1000)

    async def run(self) -> None:
        """Stream until cancelled, reconnecting as needed."""
        backoff = Backoff(1.0, 60.0)
        first = True
        try:
            while True:
                try:
                    await self._connect()
                    if first:
                        await self._warm_up()
                        first = False
                        self.warmed.set()
                        self._gap_begins()  # the forming bar came from REST: repair it too
                    backoff.reset()
                    await self._stream()
                except (BaseError, TimeoutError, OSError) as exc:
                    self.stats.reconnects += 1
                    self._gap_begins()
                    delay = backoff.next()
                    log.warning(
                        "%s: %s: %s; reconnecting in %.1f s",
                        self.exchange, type(exc).__name__, str(exc)[:200], delay,
                    )  # fmt: skip
                    await self._close_sockets()
                    await asyncio.sleep(delay)
        finally:
            for repair in self._repairs.values():
                if repair.task is not None:
                    repair.task.cancel()
            await self._close_quietly(self._client)

    async def _connect(self) -> None:
        client = self._client
        await asyncio.wait_for(client.load_markets(), self.timeout)
        try:
            server = await asyncio.wait_for(client.fetch_time(), self.timeout)
            self._offset_ms = int(server) - int(time.time() * 1000)
        except (BaseError, TimeoutError, TypeError):
            self._offset_ms = 0  # not every exchange tells its time
        log.info("%s: connected (%d symbols)", self.exchange, len(self._by_symbol))

    async def _warm_up(self) -> None:
        """Fill every builder with closed history bars, so metrics are valid from the start."""
        for name, feed in self.feeds.items():
            for builder in self._builders(name):
                bars = await self._klines(feed.symbol, builder, None)
                now = self.now_ms()
                tf = builder.timeframe.ms
                closed = [bar for bar in bars if bar.time + tf <= now]
                self.sink.history(name, closed, length_ms=tf)
                for bar in bars[len(closed) :]:
                    self.sink.candle(name, bar, closed=False, length_ms=tf)
                log.info("%s: warmed up %d %s bars", name, len(closed), builder.timeframe)

    async def _klines(self, symbol: str, builder: BarBuilder, since: int | None) -> list[Bar]:
        tf = builder.timeframe
        limit = builder.bars.time.capacity + 1
        if since is None:
            since = self.now_ms() - limit * tf.ms
        rows = await asyncio.wait_for(
            self._client.fetch_ohlcv(symbol, tf.name, since=since, limit=min(limit, 1000)),
            self.timeout,
        )
        return [Bar(int(r[0]), float(r[1]), float(r[2]), float(r[3]), float(r[4]),
                    float(r[5] or 0.0)) for r in rows]  # fmt: skip

    async def _stream(self) -> None:
        client = self._client
        symbols = list(self._by_symbol)
        batch = client.has.get("watchTradesForSymbols") and len(symbols) > 1
        started = time.monotonic()
        while time.monotonic() - started < self.reconnect_every:
            # the watch keeps the subscription and tells a silent socket; the trades
            # themselves already went to _on_trade as ccxt parsed them, none lost to its cache
            watch = client.watch_trades_for_symbols(symbols) if batch else self._any(symbols)
            await asyncio.wait_for(watch, self._silence)
            self.stats.last_frame = time.monotonic()
        log.info("%s: daily reconnect", self.exchange)
        raise NetworkError("scheduled reconnect")

    async def _any(self, symbols: list[str]) -> None:
        """Return when any symbol's watch answers."""
        tasks = [asyncio.ensure_future(self._client.watch_trades(s)) for s in symbols]
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        for task in done:
            task.result()  # raises the watch's error, if any

    def _on_trade(self, trade: dict[str, Any]) -> None:
        names = self._by_symbol.get(trade.get("symbol") or "")
        if not names:
            return
        t, price, amount = trade.get("timestamp"), trade.get("price"), trade.get("amount")
        # the stream's own latest time also counts: a stale clock offset (or a fast replay)
        # must not make good trades look like they come from the future
        reference = max(self.now_ms(), self._last_trade_ms)
        for name in names:
            problem = trade_problem(t, price, amount, reference)
            if problem is not None:
                self.sink.bad_frame(name, problem, repr(trade.get("info"))[:200])
                continue
            self.stats.trades += 1
            self._heard[name] = time.monotonic()
            if name in self._stale:
                self._stale.discard(name)
                self.sink.state(name, "ok", t)
            if t > self._last_trade_ms:
                self._last_trade_ms, self._last_trade_at = t, time.monotonic()
            self.stats.per_feed[name] = self.stats.per_feed.get(name, 0) + 1
            if name in self._awaiting_first:
                self._awaiting_first.discard(name)
                for builder in self._builders(name):
                    builder.hold(builder.timeframe.floor(t))  # this bar may lack trades
            trade_id = trade.get("id")
            self._check_sequence(name, trade_id, t)
            self.sink.trade(name, t, price, amount, trade_id)
            for builder in self._builders(name):
                self._maybe_repair(name, builder)

    def _bad_frame(self, reason: str, frame: object) -> None:
        """Count a frame ccxt could not take, against the feed its stream names."""
        feed = self.exchange
        stream = frame.get("stream") if isinstance(frame, dict) else None
        if isinstance(stream, str):
            names = self._by_stream.get(stream.partition("@")[0])
            feed = names[0] if names else feed
        self.sink.bad_frame(feed, reason, repr(frame)[:200])

    def _check_sequence(self, feed: str, trade_id: object, t: int) -> None:
        """Treat a jump in consecutive trade ids (Binance's) as a gap to repair."""
        try:
            seq = int(trade_id)  # type: ignore[call-overload]
        except (TypeError, ValueError):
            return  # ids that are not sequence numbers tell nothing
        last = self._last_id.get(feed)
        if last is not None and seq > last + 1:
            self.stats.missed += seq - last - 1
            log.warning("%s: %d trade(s) missed between ids %d and %d; repairing from REST",
                        feed, seq - last - 1, last, seq)  # fmt: skip
            for builder in self._builders(feed):
                builder.hold(max(builder.hold_through, builder.timeframe.floor(t)))
        if last is None or seq > last:
            self._last_id[feed] = seq

    def _gap_begins(self) -> None:
        """Hold every builder's closed bars until the gap is repaired."""
        for name in self.feeds:
            self._awaiting_first.add(name)
            for builder in self._builders(name):
                builder.hold(HOLD_ALL)

    def on_clock(self) -> None:
        """Once a second: report feeds silent past ``stale_after``; repair closed held bars."""
        now = time.monotonic()
        for name, feed in self.feeds.items():
            limit = feed.stale_after
            heard = self._heard.get(name, self._started)
            if limit and name not in self._stale and now - heard > limit:
                self._stale.add(name)
                log.warning("%s: no trade for %.0f s", name, now - heard)
                self.sink.state(name, "stale", self.clock_ms())
            for builder in self._builders(name):
                self._maybe_repair(name, builder)

    def _maybe_repair(self, feed: str, builder: BarBuilder) -> None:
        if not builder.holding:
            return
        key = id(builder)
        repair = self._repairs.get(key)
        if repair is not None and repair.task is not None and not repair.task.done():
            return
        repair = self._repairs[key] = _Repair(builder, feed)
        repair.task = asyncio.get_running_loop().create_task(self._repair(repair))

    async def _repair(self, repair: _Repair) -> None:
        """Settle the held bars, all closed at the exchange, with its own klines."""
        builder, feed = repair.builder, repair.feed
        symbol = self.feeds[feed].symbol
        since, through = builder.held_from, builder.held_until
        backoff = Backoff(1.0, 30.0)
        for _ in range(8):
            try:
                bars = await self._klines(symbol, builder, since)
            except (BaseError, TimeoutError, OSError) as exc:
                log.warning("%s: gap repair failed (%s); retrying", feed, type(exc).__name__)
                await asyncio.sleep(backoff.next())
                continue
            builder.settle(bars, through)
            self.stats.repairs += 1
            log.info("%s: %s bars from %s to %s repaired from REST", feed, builder.timeframe,
                     iso_time(since), iso_time(through))  # fmt: skip
            return
        log.error("%s: gap repair gave up; releasing the bars as received", feed)
        builder.settle((), through)

    async def _close_sockets(self) -> None:
        """Close the client's sockets; a closed ccxt client is spent, so make a new one."""
        await self._close_quietly(self._client)
        self._client = self._factory()

    async def _close_quietly(self, client: Any) -> None:
        """Close a client within a bound; a socket half-way through a drop may never answer."""
        try:
            await asyncio.wait_for(client.close(), CLOSE_TIMEOUT)
        except (Exception, TimeoutError) as exc:  # closing a broken client must not stop us
            log.debug("%s: close: %s", self.exchange, exc)


TradeCallback = Callable[[dict[str, Any]], None]


def guarded(
    cls: type, on_bad: Callable[[str, object], None], on_trade: TradeCallback | None = None
) -> type:
    """Return ``cls`` (a ccxt.pro exchange) whose websocket frames cannot break it.

    ccxt parses each frame and hands it to the exchange's handler unguarded: a malformed
    frame raises inside its receive path. Here every frame that fails to decode or to be
    handled is passed to ``on_bad(reason, frame)`` and skipped; the stream goes on.

    With ``on_trade``, every trade the exchange's handler stores is also passed to it at
    once: ccxt's bounded per-symbol cache overflows in bursts between two ``watch_trades``
    answers, and whatever it evicted before being read would be lost.
    """

    class Guarded(cls):  # type: ignore[misc, valid-type]
        @property
        def trades(self) -> dict[str, Any]:
            return self.__dict__.get("_moodring_trades")  # type: ignore[no-any-return]

        @trades.setter
        def trades(self, caches: dict[str, Any] | None) -> None:
            if on_trade is not None and caches is not None:
                caches = _TradeTap(on_trade, caches)
            self._moodring_trades = caches

        def client(self, url: str) -> Any:
            ws = super().client(url)
            if not getattr(ws, "_moodring_guarded", False):
                decode = ws.handle_text_or_binary_message

                def guard(data: Any) -> None:
                    try:
                        decode(data)
                    except Exception as exc:  # any frame, any failure: count and skip
                        on_bad(f"unreadable frame ({type(exc).__name__})", data)

                ws.handle_text_or_binary_message = guard
                ws._moodring_guarded = True
            return ws

        def handle_message(self, client: Any, message: Any) -> Any:
            if not isinstance(message, dict | list):
                on_bad("not JSON", message)
                return None
            return super().handle_message(client, message)

    Guarded.__name__ = cls.__name__
    return Guarded


def configure_urls(client: Any, ws_url: str | None, rest_url: str | None) -> None:
    """Point a ccxt.pro Binance-like client at other endpoints (testnet, proxy, fake)."""
    if ws_url:
        client.urls["api"]["ws"]["spot"] = ws_url
    if rest_url:
        client.urls["api"]["public"] = rest_url
        client.options["fetchMarkets"] = {"types": ["spot"]}
        client.options["defaultType"] = "spot"


class _TradeTap(dict[str, Any]):
    """ccxt's trade caches by symbol; each cache put in passes its appended trades on."""

    def __init__(self, on_trade: TradeCallback, caches: dict[str, Any]) -> None:
        super().__init__()
        self._on_trade = on_trade
        for symbol, cache in caches.items():
            self[symbol] = cache

    def __setitem__(self, symbol: str, cache: Any) -> None:
        if not getattr(cache, "_moodring_tapped", False):
            for trade in list(cache):  # handlers may append the first trade before storing
                self._on_trade(trade)
            cache.__class__ = _tapped_class(type(cache))
            cache._moodring_tap = self._on_trade
        super().__setitem__(symbol, cache)


_TAPPED: dict[type, type] = {}


def _tapped_class(cls: type) -> type:
    """Return a subclass of a ccxt cache class whose ``append`` calls its tap."""
    if cls not in _TAPPED:

        def append(self: Any, item: Any) -> None:
            super(tapped, self).append(item)
            self._moodring_tap(item)

        tapped = type(cls.__name__, (cls,), {"append": append, "_moodring_tapped": True})
        _TAPPED[cls] = tapped
    return _TAPPED[cls]
