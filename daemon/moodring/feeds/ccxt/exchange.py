"""Crypto feeds through ccxt.pro: one client per exchange, trades or candles in, REST repairs."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import ccxt.pro as ccxtpro
from ccxt.base.errors import BaseError, ExchangeError, ExchangeNotAvailable, NetworkError

from moodring.backoff import Backoff
from moodring.feeds.base import FeedSink
from moodring.feeds.ccxt import CcxtFeedConfig
from moodring.feeds.ccxt.patch import guarded
from moodring.feeds.ccxt.venues import GENERIC, Venue, client_setup, share_tls, venue
from moodring.feeds.clock import EARLY_MS, FUTURE_MS, StreamClock
from moodring.feeds.frames import trade_problem
from moodring.feeds.source import Clock, FeedPart
from moodring.lifecycle import STOP_TIMEOUT, first_completed
from moodring.market.bar import Bar
from moodring.market.builder import HOLD_ALL, BarBuilder
from moodring.market.timeframe import Timeframe
from moodring.times import iso_time

log = logging.getLogger("moodring.feeds.ccxt")

# Reconnect before exchanges drop a stream themselves (Binance: after 24 h).
RECONNECT_EVERY = 23 * 3600.0
# Seconds between two calls of a watch (each races a future per symbol; see ``_keep``).
WATCH_EVERY = 1.0
# The most symbols ccxt.pro takes in one watch_trades_for_symbols call (Binance's 200).
SYMBOLS_PER_WATCH = 200
# Seconds between tries at an exchange that refuses this location (HTTP 451/403): it will
# not change its mind soon, and hammering it changes nothing.
RESTRICTED_RETRY = 600.0
# Seconds between two measures of the exchange's clock offset (not at every reconnect).
OFFSET_EVERY = 600.0
# The most REST calls one history request (a warm-up, a repair) makes, page by page.
MAX_PAGES = 20
# Seconds a client may take to close its sockets.
CLOSE_TIMEOUT = 1.0
# ccxt's own caches stay small: trades and candles are taken as ccxt parses them (never read
# back from its caches), and moodring's ring buffers are the source of truth.
CACHE_LIMIT = 10
# The most klines one REST call asks for (Binance's cap; each venue has its own).
KLINES_LIMIT = 1000
# The most markets a client asks for by name; more load every market. 400 Coinbase ids make
# a 9 KB query, past the 8 KB request lines CDNs and servers commonly take.
ASKED_MARKETS_MAX = 100
# The parts of a stream name or ccxt message hash: ``ethusdt@trade``, ``trade::ETH/USDT``.
_STREAM_PARTS = re.compile(r"[@:.|\s]+")


@dataclass(slots=True)
class _Repair:
    """A builder's gap: held bars waiting for the exchange's klines."""

    builder: BarBuilder
    feed: str
    task: asyncio.Task[None] | None = None


@dataclass(slots=True)
class _Candle:
    """The latest candle of one (symbol, timeframe) stream, and whether it was closed."""

    bar: Bar
    closed: bool


# an item's take (with whether its bars must be repaired) and skip
_Take = Callable[[bool], None]
_Skip = Callable[[], None]


@dataclass(slots=True)
class _Waiting:
    """A stream's items stamped too far ahead, waiting for its next frame to confirm them."""

    frame: int
    first_ms: int
    items: list[tuple[int, _Take, _Skip]] = field(default_factory=list)


@dataclass
class ExchangeStats:
    """Counters of one exchange connection."""

    trades: int = 0
    candles: int = 0
    missed: int = 0
    reconnects: int = 0
    repairs: int = 0
    duplicates: int = 0
    lost_messages: int = 0


class ExchangeFeeds(FeedPart):
    """All feeds of one exchange on one ccxt.pro client.

    ``async with feeds:`` connects, warms every feed up from the exchange's REST klines
    (``warmed`` is set then) and streams until the block ends, which closes the client.

    Feeds with ``stream: trades`` watch trades (``watch_trades_for_symbols`` where the
    exchange has it), feeds with ``stream: ohlcv`` watch the exchange's candles
    (``watch_ohlcv_for_symbols`` likewise); each watch is bounded by a timeout. On a network
    error, a silent socket or the daily forced reconnect it reconnects with capped backoff.
    The bars a disconnection overlapped are held back in the bar builders and settled from
    the exchange's REST klines once the first bar seen whole since has closed, so closed
    bars equal an unbroken stream.

    Each stream (a symbol's trades, a symbol's candles of one timeframe) has its own clock,
    which closes its feeds' bars and judges its timestamps, and which no single frame can
    move: a frame stamped far ahead waits for the stream's next frame to confirm it, and the
    bars one stamped a little ahead closes are held until the clock has passed them (and
    repaired from REST if an item came late for them).
    """

    # stopping closes its clients (within CLOSE_TIMEOUT) after its tasks are cancelled
    stop_timeout = STOP_TIMEOUT + CLOSE_TIMEOUT

    def __init__(
        self,
        exchange: str,
        feeds: Mapping[str, CcxtFeedConfig],
        sink: FeedSink,
        builders: Callable[[str], list[BarBuilder]],
        *,
        timeout: float = 30.0,
        reconnect_every: float = RECONNECT_EVERY,
        client_factory: Callable[[], Any] | None = None,
        on_reconnect: Callable[[str], None] | None = None,
    ) -> None:
        self.exchange = exchange
        self.feeds: dict[str, CcxtFeedConfig] = dict(feeds)
        self.sink = sink
        self._builders = builders
        self.timeout = timeout
        self.reconnect_every = reconnect_every
        self.stats = ExchangeStats()
        self.venue: Venue = venue(exchange)
        self._numbered = self.venue.numbered
        self.restricted_retry = RESTRICTED_RETRY
        self.offset_ms: int | None = None  # the exchange's clock less ours, once measured
        self.last_error: str | None = None  # why the latest connection failed
        self._problem: str | None = None  # what the status line and /healthz say, if anything
        self._factory = client_factory or self._make_client
        self._on_reconnect = on_reconnect
        self._client = self._factory()  # the websocket side: a new one for each connection
        # REST (warm-up, repairs, markets, the clock): one client kept across reconnects
        self._rest = client_factory() if client_factory else self._make_client(rest=True)
        self._offset_at = -math.inf  # when the clock offset was measured (monotonic)
        self._by_market: dict[str, list[str]] = {}  # "ethusdt" -> feeds, for bad frames
        self._stream_of: dict[str, Hashable] = {}  # feed -> its stream: symbol or (symbol, tf)
        self._trade_feeds: dict[str, list[str]] = {}  # symbol -> feeds
        self._candle_feeds: dict[tuple[str, str], list[str]] = {}  # (symbol, tf) -> feeds
        self._candle_ms: dict[tuple[str, str], int] = {}
        self._candles: dict[tuple[str, str], _Candle] = {}
        offered = _timeframes(getattr(self._client, "timeframes", None))
        self._rest_timeframes = offered
        streams_candles = getattr(self._client, "has", {}).get("watchOHLCV") is not False
        for name, feed in self.feeds.items():
            self._by_market.setdefault(_market_key(feed.symbol), []).append(name)
            if feed.stream == "ohlcv" and not streams_candles:
                log.warning("%s: %s streams no candles; watching trades", name, exchange)
            elif feed.stream == "ohlcv":
                tf = candle_timeframe([b.timeframe for b in builders(name)], offered)
                if tf is not None:
                    key = (feed.symbol, tf.name)
                    self._candle_feeds.setdefault(key, []).append(name)
                    self._candle_ms[key] = tf.ms
                    self._stream_of[name] = key
                    continue
                log.warning(
                    "%s: %s has no candles its timeframes fold from; watching trades",
                    name,
                    exchange,
                )
            self._trade_feeds.setdefault(feed.symbol, []).append(name)
            self._stream_of[name] = feed.symbol
        self._offset_ms = 0
        self._clocks = {key: StreamClock() for key in self._stream_of.values()}
        # every stream's items on one clock: the exchange's time as its busiest streams show
        # it, which a thin stream's own clock trails by the gap between its items
        self._exchange_clock = StreamClock()
        self._waiting: dict[Hashable, _Waiting] = {}
        self._frame = 0  # websocket frames received: items of one frame share its number
        self._accounted = -1  # the latest frame that gave a trade or candle, or was counted bad
        self._message_seq: int | None = None  # the latest message number (Coinbase's)
        self._repairs: dict[int, _Repair] = {}
        # builder -> its first held bar that an item stamped ahead may only have closed early:
        # such bars are released as built once over, unless an item came late for them
        self._early_from: dict[int, int] = {}
        self._may_hold: set[str] = set()  # feeds whose builders were told to hold bars
        self._last_id: dict[str, int] = {}
        self._heard: dict[str, float] = {}  # feed -> monotonic time of its latest trade/candle
        self._stale: set[str] = set()
        self._started = time.monotonic()
        limits = [f.stale_after for f in self.feeds.values() if f.stale_after]
        # a socket silent for this long (all its symbols at once) is reconnected
        self._silence = min([timeout, *limits])
        self._awaiting_first: set[str] = set()
        self._lost = asyncio.Event()  # a websocket connection of the client failed or closed
        self._lost_reason = ""
        self.warmed = asyncio.Event()

    clock: ClassVar[Clock] = "stream"

    @property
    def name(self) -> str:
        """Return the exchange's name (what the status line calls the part)."""
        return self.exchange

    async def _setup(self) -> None:
        self.spawn(self.run(), name=self.exchange)

    @property
    def candle_streams(self) -> list[tuple[str, str]]:
        """Return the (symbol, exchange timeframe) candle streams the client watches."""
        return list(self._candle_feeds)

    def _make_client(self, *, rest: bool = False) -> Any:
        """Return a client of the exchange for REST calls, or for its websocket streams.

        Only the REST client is rate-limited: ccxt throttles websocket messages by the REST
        limit too (Kraken: one a second), which would hold a second subscription back.
        """
        client = guarded(
            exchange_class(self.exchange),
            self._bad_frame,
            self._on_trade,
            self._on_candle,
            self._on_frame,
            self._after_frame,
            self._on_lost,
        )({"enableRateLimit": rest, "newUpdates": True})
        client.options["tradesLimit"] = CACHE_LIMIT
        client.options["OHLCVLimit"] = CACHE_LIMIT
        client_setup(self.exchange, client)
        first = next(iter(self.feeds.values()))
        if first.ws_url or first.rest_url:
            self.venue.configure(client, first.ws_url, first.rest_url)
        return client

    def problem(self) -> str | None:
        """Return what keeps these feeds from streaming (a refused location), or None."""
        return self._problem

    def now_ms(self) -> int:
        """Return the exchange's clock (local time corrected by the measured offset)."""
        return int(time.time() * 1000) + self._offset_ms

    def exchange_ms(self) -> int:
        """Return the exchange's time as its streams show it (never behind ``now_ms``).

        Items are judged ahead (``_admit``) against the later of this and their own
        stream's clock: one exchange keeps one time, so a thin stream's item stamped at the
        time its busy streams have reached is on time, even when the measured offset is
        stale (a clock stepped since it was measured).
        """
        return self._exchange_clock.read(self.now_ms())

    def clock_ms(self, feed: str) -> int:
        """Return the clock of a feed's stream (the exchange's, or the stream's running ahead).

        The bar-closing timer uses this: no single frame moves it, and it never runs ahead
        of the stream (a replay faster than real time only makes it lag; trades close bars).
        """
        return self._clocks[self._stream_of[feed]].read(self.now_ms())

    async def run(self) -> None:
        """Stream until cancelled, reconnecting as needed (the task of ``async with``)."""
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
                    self._problem = None
                    await self._stream()
                except (BaseError, TimeoutError, OSError) as exc:
                    self.stats.reconnects += 1
                    self.last_error = f"{type(exc).__name__}: {str(exc)[:200]}"
                    if self._on_reconnect is not None:
                        for name in self.feeds:
                            self._on_reconnect(name)
                    self._gap_begins()
                    status = self.venue.refused(exc)
                    if status is not None:
                        delay = self.restricted_retry
                        advice = self.venue.refusal_advice(status)
                        self.last_error = advice
                        if self._problem != advice:  # said once, not at every retry
                            log.error("%s: %s", ", ".join(self.feeds), advice)
                        else:
                            log.info("%s: still refused; next try in %.0f s", self.exchange, delay)
                        self._problem = advice
                    else:
                        delay = backoff.next()
                        log.warning(
                            "%s: %s; reconnecting in %.1f s", self.exchange, self.last_error, delay
                        )
                    await self._close_sockets()
                    await asyncio.sleep(delay)
        finally:
            rest = [self._rest] if self._rest is not self._client else []
            await asyncio.gather(*(self._close_quietly(c) for c in (self._client, *rest)))

    async def _connect(self) -> None:
        """Load the markets (once) and measure the clock offset (now and then) over REST."""
        self._lost.clear()
        rest = self._rest
        async with asyncio.timeout(self.timeout):
            await load_markets(rest, self.venue, [feed.symbol for feed in self.feeds.values()])
        if self._client is not rest and not self._client.markets:
            self._client.set_markets(rest.markets, rest.currencies)  # no REST per reconnect
        if time.monotonic() - self._offset_at >= OFFSET_EVERY:
            try:
                async with asyncio.timeout(self.timeout):
                    server = await rest.fetch_time()
                self._offset_ms = int(server) - int(time.time() * 1000)
                self.offset_ms = self._offset_ms
                self._offset_at = time.monotonic()
            except (BaseError, TimeoutError, TypeError, ValueError):
                pass  # not every exchange tells its time; one that told it keeps its offset
        self._message_seq = None  # a new connection numbers its messages anew
        symbols = {feed.symbol for feed in self.feeds.values()}
        log.info("%s: connected (%d symbols)", self.exchange, len(symbols))

    async def _warm_up(self) -> None:
        """Fill every builder with closed history bars, so metrics are valid from the start.

        A builder holding restored bars gets every bar since its last one (at most
        ``KLINES_LIMIT``): the bars that closed while moodring was down, in order.
        """
        for name, feed in self.feeds.items():
            for builder in self._builders(name):
                tf = builder.timeframe.ms
                since, limit = None, 0
                if builder.last_time >= 0:  # restored: from the first bar closed since
                    since = builder.last_time + tf
                    limit = (self.now_ms() - since) // tf + 2
                bars = await self._klines(feed.symbol, builder, since, limit)
                now = self.now_ms()
                closed = [bar for bar in bars if bar.time + tf <= now]
                self.sink.history(name, closed, length_ms=tf)
                for bar in bars[len(closed) :]:
                    self.sink.candle(name, bar, closed=False, length_ms=tf)
                log.info(
                    "%s: warmed up %d %s bars",
                    name,
                    len(closed),
                    builder.timeframe,
                    extra={"feed": name},
                )

    async def _klines(
        self, symbol: str, builder: BarBuilder, since: int | None, limit: int = 0
    ) -> list[Bar]:
        """Return the exchange's bars of ``builder``'s timeframe from ``since`` (``limit`` or more).

        From its REST candles of that timeframe, or folded from finer ones where it has none
        (Coinbase has no 4h), or from its trades since a time where every candle is coarser.
        """
        tf = builder.timeframe
        limit = max(limit, builder.bars.time.capacity + 1)
        if since is None:
            since = self.now_ms() - limit * tf.ms
        offered = self._rest_timeframes
        source = tf if not offered or tf in offered else candle_timeframe([tf], offered)
        if source is None:
            return await self._trade_bars(symbol, tf, since, limit)
        per_bar = tf.ms // source.ms
        bars = await self._candles_from(symbol, source, since, min(limit, KLINES_LIMIT) * per_bar)
        return bars if source == tf else fold(bars, tf)

    async def _candles_from(self, symbol: str, tf: Timeframe, since: int, count: int) -> list[Bar]:
        """Return up to ``count`` REST candles from ``since``, page by page as the venue caps."""
        page = min(KLINES_LIMIT, self.venue.klines_limit)
        bars: list[Bar] = []
        for _ in range(MAX_PAGES):
            async with asyncio.timeout(self.timeout):
                rows = await self._rest.fetch_ohlcv(
                    symbol, tf.name, since=since, limit=min(count - len(bars), page)
                )
            fresh = [_bar(r) for r in rows if int(r[0]) >= since]
            bars.extend(fresh)
            # a short page is not the end where empty candles are left out (Coinbase)
            if not fresh or len(bars) >= count:
                break
            since = fresh[-1].time + tf.ms
            if since > self.now_ms():
                break
        return bars

    async def _trade_bars(self, symbol: str, tf: Timeframe, since: int, limit: int) -> list[Bar]:
        """Return bars folded from the REST trades since ``since`` (none if it cannot say)."""
        if not self.venue.trades_since:
            log.warning("%s: %s has no %s candles and no trade history", symbol, self.exchange, tf)
            return []
        end = min(since + limit * tf.ms, self.now_ms())
        trades: list[dict[str, Any]] = []
        cursor = since
        for _ in range(MAX_PAGES):
            async with asyncio.timeout(self.timeout):
                page = await self._rest.fetch_trades(symbol, since=cursor, limit=1000)
            page = [t for t in page if isinstance(t.get("timestamp"), int)]
            page = [t for t in page if t["timestamp"] >= cursor]
            if not page:
                break
            trades.extend(page)
            cursor = max(t["timestamp"] for t in page) + 1
            if cursor >= end:
                break
        seen: set[object] = set()
        rows = []
        for t in sorted(trades, key=lambda t: t["timestamp"]):
            key = t.get("id") or (t["timestamp"], t.get("price"), t.get("amount"))
            if key not in seen:
                seen.add(key)
                price = float(t["price"])
                rows.append(Bar(t["timestamp"], price, price, price, price, float(t["amount"])))
        return fold(rows, tf)

    async def _stream(self) -> None:
        """Run the trade and candle watches side by side; return by raising, as they do."""
        # the watches keep the subscriptions and tell a silent socket; the trades and candles
        # themselves already went to _on_trade/_on_candle as ccxt parsed them
        watches = []
        if self._trade_feeds:
            watches.append(self._keep(self._watch_trades))
        if self._candle_feeds:
            watches.append(self._keep(self._watch_candles))
        # the watches only end by failing (the caller reconnects); else the day is over
        await first_completed(*watches, asyncio.sleep(self.reconnect_every))
        log.info("%s: daily reconnect", self.exchange)
        raise NetworkError("scheduled reconnect")

    async def _keep(self, watch: Callable[[], Awaitable[object]]) -> None:
        """Call a watch again and again; raise when it fails or stays silent too long.

        The updates themselves reach the taps as ccxt parses them; a watch only says the
        stream lives. Each call races a future per symbol (work in proportion to the
        symbols), so it is called once per ``WATCH_EVERY`` at most, not once per update;
        a connection lost in between is told by ``_on_lost``.
        """
        while True:
            async with asyncio.timeout(self._silence):
                await watch()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(WATCH_EVERY):
                    await self._lost.wait()
            if self._lost.is_set():
                raise NetworkError(f"connection lost: {self._lost_reason}")

    def _on_lost(self, client: Any, error: BaseException) -> None:
        """Note that a websocket connection of the current client failed or closed."""
        if client is self._client and not self._lost.is_set():
            self._lost_reason = f"{type(error).__name__}: {error}"[:200]
            self._lost.set()

    def _watch_trades(self) -> Awaitable[object]:
        client = self._client
        symbols = list(self._trade_feeds)
        if client.has.get("watchTradesForSymbols") and len(symbols) > 1:
            # ccxt takes so many symbols per call (Binance: each call its own connection)
            step = SYMBOLS_PER_WATCH
            chunks = [symbols[i : i + step] for i in range(0, len(symbols), step)]
            return first_completed(*(client.watch_trades_for_symbols(c) for c in chunks))
        return first_completed(*(client.watch_trades(s) for s in symbols))

    def _watch_candles(self) -> Awaitable[object]:
        client = self._client
        pairs = [[symbol, tf] for symbol, tf in self._candle_feeds]
        if client.has.get("watchOHLCVForSymbols"):
            return client.watch_ohlcv_for_symbols(pairs)
        return first_completed(*(client.watch_ohlcv(symbol, tf) for symbol, tf in pairs))

    def _hear(self, name: str, t_ms: int) -> None:
        """Note that a feed spoke: it is no longer stale."""
        self._heard[name] = time.monotonic()
        if name in self._stale:
            self._stale.discard(name)
            self.sink.state(name, "ok", t_ms)

    def _first_since_gap(self, name: str, t_ms: int) -> None:
        """Hold the feed's bars through the one at ``t_ms``: it may lack what the gap took."""
        if name in self._awaiting_first:
            self._awaiting_first.discard(name)
            for builder in self._builders(name):
                self._early_from.pop(id(builder), None)
                self._hold(name, builder, builder.timeframe.floor(t_ms))

    def _on_frame(self, data: object = None) -> None:
        """Count a websocket frame as it arrives; a jump in its message number is a gap."""
        self._frame += 1
        sequence = self.venue.sequence
        if sequence is None or not isinstance(data, str):
            return
        number = sequence(data)
        last = self._message_seq
        if number is None or (last is not None and number <= last):
            return  # not numbered, or not in this connection's order (a frame to ignore)
        self._message_seq = number
        if last is not None and number > last + 1:
            self._messages_lost(number - last - 1)

    def _messages_lost(self, count: int) -> None:
        """Hold every feed's bars up to now: a lost message may have held any of their items."""
        self.stats.lost_messages += count
        log.warning("%s: %d message(s) lost; repairing from REST", self.exchange, count)
        for name in self.feeds:
            now = self.clock_ms(name)
            for builder in self._builders(name):
                self._early_from.pop(id(builder), None)
                self._hold(name, builder, max(builder.hold_through, builder.timeframe.floor(now)))

    def _after_frame(self, data: object) -> None:
        """Count a frame that gave no trade or candle, unless it is one that never does."""
        if self._accounted == self._frame:
            return
        try:
            message = json.loads(data) if isinstance(data, str | bytes) else data
        except ValueError:
            message = None
        if not self.venue.control(message):
            self._bad_frame("no usable trade", data)

    def _on_trade(self, trade: dict[str, Any]) -> None:
        # every trade passes here: kept lean (helpers only for what is rare)
        self._accounted = self._frame
        symbol = trade.get("symbol") or ""
        names = self._trade_feeds.get(symbol)
        if not names:
            self._bad_frame("unknown market", trade.get("info"))
            return
        t, price, amount = trade.get("timestamp"), trade.get("price"), trade.get("amount")
        # the stream's clock runs ahead with it: a stale clock offset (or a fast replay)
        # must not make good trades look like they come from the future
        reference = self._clocks[symbol].read(self.exchange_ms())
        problem = trade_problem(t, price, amount, reference)
        trade_id = trade.get("id")
        seq = sequence_number(trade_id)
        if problem is None and self._numbered:
            last = self._last_id.get(names[0])
            if last is None:
                pass
            elif seq is None:
                problem = "bad trade id"  # the feed's trades are numbered: so must this one be
            elif seq <= last:
                self.stats.duplicates += 1  # seen (Coinbase re-sends 100 on subscribing)
                return
        if problem is not None:
            self._skip_trade(names, trade, problem)
            return
        # trade_problem checked them
        assert isinstance(t, int) and price is not None and amount is not None
        repair = self._admit(symbol, t, reference)
        if repair is None:
            take = functools.partial(self._take_trade, names, t, price, amount, trade_id, seq)
            skip = functools.partial(self._skip_trade, names, trade, "timestamp in the future")
            self._wait(symbol, t, take, skip)
        else:
            self._take_trade(names, t, price, amount, trade_id, seq, repair)

    def _take_trade(
        self,
        names: list[str],
        t: int,
        price: float,
        amount: float,
        trade_id: object,
        seq: int | None,
        repair: bool,
    ) -> None:
        last_id, take, heard = self._last_id, self.sink.trade, self._heard
        now = time.monotonic()
        taken = len(names)
        for name in names:
            heard[name] = now
            if name in self._stale:
                self._hear(name, t)
            if name in self._awaiting_first:
                self._first_since_gap(name, t)
            if self._early_from:
                self._check_late(name, t)
            if repair:
                self._hold_early(name, t)
            if seq is not None:
                last = last_id.get(name)
                if last is not None and seq == last + 1:
                    last_id[name] = seq  # the next id: no gap (the usual case)
                elif last is not None and seq <= last:
                    # a copy of it was taken since it came (one of the two waited for a frame)
                    self.stats.duplicates += 1
                    taken -= 1
                    continue
                else:
                    self._check_sequence(name, seq, t)
            take(name, t, price, amount, trade_id)
            if name in self._may_hold:
                self._repair_held(name)
        self.stats.trades += taken

    def _hold(self, name: str, builder: BarBuilder, through_ms: int) -> None:
        """Hold a builder's closed bars through ``through_ms``; its feed's trades then check it."""
        builder.hold(through_ms)
        self._may_hold.add(name)

    def _repair_held(self, name: str) -> None:
        """Repair a feed's held bars that are over; forget the feed once it holds none."""
        holding = False
        for builder in self._builders(name):
            if builder.holding or builder.hold_through >= 0:
                holding = True
                self._maybe_repair(name, builder)
        if not holding:
            self._may_hold.discard(name)

    def _skip_trade(self, names: list[str], trade: dict[str, Any], reason: str) -> None:
        self._accounted = self._frame
        for name in names:
            self.sink.bad_frame(name, reason, repr(trade.get("info"))[:200])

    def _admit(self, stream: Hashable, t_ms: int, reference: int) -> bool | None:
        """Judge an item's time by its stream's clock (``reference``): None if it must wait.

        Otherwise return whether the bars it closes must be repaired: an item stamped a
        little ahead may have closed its bar early. One stamped further ahead waits: a later
        frame at least as late confirms the jump (a fast replay, a stream back after a pause)
        and both go on; an earlier one shows it stamped wrong, and it is skipped.
        """
        clock = self._clocks[stream]
        frame = self._frame
        waiting = self._waiting.get(stream) if self._waiting else None
        confirmed = False
        if waiting is not None and waiting.frame != frame:
            del self._waiting[stream]
            confirmed = t_ms >= waiting.first_ms - EARLY_MS
            self._settle(clock, waiting, take=confirmed, repair=False)
        if not confirmed and t_ms > reference + FUTURE_MS:
            return None
        clock.note(t_ms, frame)
        self._exchange_clock.note(t_ms, frame)
        return not confirmed and t_ms > reference + EARLY_MS

    def _wait(self, stream: Hashable, t_ms: int, take: _Take, skip: _Skip) -> None:
        """Keep an item stamped far ahead until its stream's next frame says if it is right."""
        waiting = self._waiting.get(stream)
        if waiting is None:
            waiting = self._waiting[stream] = _Waiting(self._frame, t_ms)
        waiting.first_ms = min(waiting.first_ms, t_ms)
        waiting.items.append((t_ms, take, skip))

    @staticmethod
    def _settle(clock: StreamClock, waiting: _Waiting, *, take: bool, repair: bool) -> None:
        """Pass waiting items on (their bars repaired or not), or skip them."""
        for t_ms, take_item, skip_item in waiting.items:
            if take:
                clock.note(t_ms, waiting.frame)
                take_item(repair)
            else:
                skip_item()

    def _hold_early(self, name: str, t_ms: int) -> None:
        """Hold the bars an item stamped ahead closes, and its own, until the clock passes them."""
        for builder in self._builders(name):
            tf = builder.timeframe
            start = tf.floor(t_ms)
            if builder.time >= 0:
                closes = start > builder.time
            else:  # the clock closed the last bar: bars between it and this one are filled
                closes = 0 <= builder.last_time < start - tf.ms
            if closes and builder.hold_through < start:
                held = builder.hold_through  # bars a gap holds up to here need REST anyway
                self._early_from.setdefault(id(builder), held + tf.ms if held >= 0 else 0)
                self._hold(name, builder, start)

    def _check_late(self, name: str, t_ms: int) -> None:
        """Note an item whose bar already closed: bars held as maybe early need REST now."""
        for builder in self._builders(name):
            if builder.timeframe.floor(t_ms) <= builder.last_time:
                self._early_from.pop(id(builder), None)

    def _on_candle(self, symbol: str, timeframe: str, row: Any, raw: object) -> None:
        """Pass one candle update on; close the previous candle once a later one opens.

        Binance's kline events say when a candle is final (``x``): it is closed at once.
        Elsewhere a candle is closed by the first update of a later candle.
        """
        self._accounted = self._frame
        key = (symbol, timeframe)
        names = self._candle_feeds.get(key)
        if not names:
            return
        shown = raw if raw is not None else row
        reference = self._clocks[key].read(self.exchange_ms())
        problem = candle_problem(row, reference)
        if problem is not None:
            self._skip_candle(names, shown, problem)
            return
        bar = Bar(
            int(row[0]), float(row[1]), float(row[2]), float(row[3]), float(row[4]), float(row[5])
        )
        flags = self.venue.candle_flags
        final, event_ms = flags(raw, bar.time) if flags is not None else (False, None)
        stamp = event_ms if event_ms is not None and event_ms >= bar.time else bar.time
        repair = self._admit(key, stamp, reference)
        if repair is None:
            take = functools.partial(self._take_candle, key, bar, final, stamp)
            skip = functools.partial(self._skip_candle, names, shown, "timestamp in the future")
            self._wait(key, stamp, take, skip)
        else:
            self._take_candle(key, bar, final, stamp, repair)

    def _skip_candle(self, names: list[str], shown: object, reason: str) -> None:
        self._accounted = self._frame
        for name in names:
            self.sink.bad_frame(name, reason, repr(shown)[:200])

    def _take_candle(
        self, key: tuple[str, str], bar: Bar, final: bool, stamp: int, repair: bool
    ) -> None:
        prev = self._candles.get(key)
        if prev is not None and (
            bar.time < prev.bar.time or (bar.time == prev.bar.time and prev.closed)
        ):
            for name in self._candle_feeds[key] if self._early_from else ():
                self._check_late(name, bar.time)
            return  # an update of a candle already closed here
        self.stats.candles += 1
        length = self._candle_ms[key]
        self._candles[key] = _Candle(bar, final)
        for name in self._candle_feeds[key]:
            self._hear(name, stamp)
            self._first_since_gap(name, bar.time)
            if repair:
                self._hold_early(name, bar.time)
            if prev is not None and not prev.closed and bar.time > prev.bar.time:
                self.sink.candle(name, prev.bar, closed=True, length_ms=length)
            self.sink.candle(name, bar, closed=final, length_ms=length)
            for builder in self._builders(name):
                self._maybe_repair(name, builder)

    def _bad_frame(self, reason: str, frame: object) -> None:
        """Count a frame ccxt could not take against the feed its stream names (or the exchange)."""
        self._accounted = self._frame
        names = self._feeds_named(self.venue.stream_name(frame))
        self.sink.bad_frame(names[0] if names else self.exchange, reason, repr(frame)[:200])

    def _feeds_named(self, stream: str | None) -> list[str]:
        """Return the feeds of the market a stream name or ccxt message hash names."""
        for part in _STREAM_PARTS.split(stream or ""):
            names = self._by_market.get(_market_key(part))
            if names:
                return names
        return []

    def _check_sequence(self, feed: str, seq: int, t: int) -> None:
        """Treat a jump in consecutive trade ids (where the venue's are) as a gap to repair."""
        last = self._last_id.get(feed)
        if last is not None and seq > last + 1 and self.venue.trade_ids == "consecutive":
            self.stats.missed += seq - last - 1
            log.warning(
                "%s: %d trade(s) missed between ids %d and %d; repairing from REST",
                feed,
                seq - last - 1,
                last,
                seq,
            )
            for builder in self._builders(feed):
                self._early_from.pop(id(builder), None)
                self._hold(feed, builder, max(builder.hold_through, builder.timeframe.floor(t)))
        if last is None or seq > last:
            self._last_id[feed] = seq

    def resync(self) -> None:
        """Repair every feed's current bars from REST (the builders were replaced)."""
        self._gap_begins()

    def _gap_begins(self) -> None:
        """Hold every builder's closed bars until the gap is repaired."""
        # Items waiting for a later frame to confirm their time came before the gap: no frame
        # after it can judge them, and taken later they would end the gap at their own bar.
        # They are let go: the bars they fall in are held and repaired from REST.
        self._waiting.clear()
        self._early_from.clear()  # every held bar is repaired from REST now
        for name in self.feeds:
            self._awaiting_first.add(name)
            for builder in self._builders(name):
                self._hold(name, builder, HOLD_ALL)

    def on_clock(self) -> None:
        """Once a second: report feeds silent past ``stale_after``; repair closed held bars."""
        now = time.monotonic()
        for name, feed in self.feeds.items():
            limit = feed.stale_after
            heard = self._heard.get(name, self._started)
            if limit and name not in self._stale and now - heard > limit:
                self._stale.add(name)
                log.warning("%s: nothing heard for %.0f s", name, now - heard)
                self.sink.state(name, "stale", self.clock_ms(name))
            for builder in self._builders(name):
                self._maybe_repair(name, builder)
        for stream, waiting in list(self._waiting.items()):
            clock = self._clocks[stream]
            if waiting.first_ms <= clock.read(self.exchange_ms()) + FUTURE_MS:
                # the clock caught up: no longer from the future, but maybe a bar too early
                del self._waiting[stream]
                self._settle(clock, waiting, take=True, repair=True)

    def _maybe_repair(self, feed: str, builder: BarBuilder) -> None:
        if not builder.holding:
            return
        if builder.held_until + builder.timeframe.ms > self.clock_ms(feed):
            return  # not over at the exchange yet (a bar closed early waits for its end)
        key = id(builder)
        early = self._early_from.get(key)
        if early is not None and builder.held_from >= early:
            builder.settle((), builder.held_until)  # nothing came late for them: they were whole
            if builder.hold_through < 0:
                del self._early_from[key]
            return
        repair = self._repairs.get(key)
        if repair is not None and repair.task is not None and not repair.task.done():
            return
        repair = self._repairs[key] = _Repair(builder, feed)
        repair.task = self.spawn(self._repair(repair), name=f"{feed} repair")

    async def _repair(self, repair: _Repair) -> None:
        """Settle the held bars, all closed at the exchange, with its own klines."""
        builder, feed = repair.builder, repair.feed
        symbol = self.feeds[feed].symbol
        since, through = builder.held_from, builder.held_until
        step = builder.timeframe.ms
        early = self._early_from.get(id(builder))
        if early is not None:
            through = min(through, early - step)  # the bars after need no REST
        last = builder.bars.last()
        if last is not None:
            # bars that never formed here (candles are not filled in) sit before the held ones
            since = min(since, last.time + step)
        count = (through - since) // step + 1
        backoff = Backoff(1.0, 30.0)
        for _ in range(8):
            try:
                bars = await self._klines(symbol, builder, since, count)
            except (BaseError, TimeoutError, OSError) as exc:
                log.warning("%s: gap repair failed (%s); retrying", feed, type(exc).__name__)
                await asyncio.sleep(backoff.next())
                continue
            builder.settle(bars, through)
            self.stats.repairs += 1
            log.info(
                "%s: %s bars from %s to %s repaired from REST",
                feed,
                builder.timeframe,
                iso_time(since),
                iso_time(through),
            )
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
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await client.close()
        except (Exception, TimeoutError) as exc:  # closing a broken client must not stop us
            log.debug("%s: close: %s", self.exchange, exc)


async def load_markets(client: Any, known: Venue, symbols: Sequence[str]) -> None:
    """Load the markets of ``symbols`` only where the venue can ask for them, else all."""
    params = known.markets_params(symbols) if known.markets_params else None
    if params is not None and known.spot_options:
        known.spot_only(client)  # spot symbols only: spot markets are all a load needs
    if params is None or len(symbols) > ASKED_MARKETS_MAX:
        await client.load_markets()
        return
    # an id guessed wrong (ccxt renames some currencies), an unknown symbol or a request
    # refused as such (HTTP 400 is ccxt's ExchangeNotAvailable): all markets are loaded, as
    # without asking, so the market is found or told missing as ever
    try:
        await client.load_markets(params=params)
    except (ExchangeError, ExchangeNotAvailable) as exc:  # BadSymbol; Kraken's plain one
        if known.refused(exc):
            raise  # this location is refused: every market would be too
        text = " ".join(str(exc).split())[:200]
        why = f"refused the markets {', '.join(symbols)} ({text})"
    else:
        missing = [symbol for symbol in symbols if symbol not in client.markets]
        if not missing:
            return
        why = f"sent no market {', '.join(missing)} when asked for it"
    log.info("%s %s; loading all", known.name, why)
    await client.load_markets(reload=True)


def configure_urls(client: Any, ws_url: str | None, rest_url: str | None) -> None:
    """Point a ccxt.pro client at other endpoints (testnet, proxy, fake), as its venue lays them."""
    venue(str(getattr(client, "id", ""))).configure(client, ws_url, rest_url)


def exchange_class(exchange: str) -> type:
    """Return ccxt.pro's client class of ``exchange``; ValueError naming it if there is none."""
    cls = getattr(ccxtpro, exchange, None)
    if cls is None:
        raise ValueError(f"ccxt.pro has no exchange {exchange!r}")
    return cls


def spot_client(
    exchange: str,
    ws_url: str | None = None,
    rest_url: str | None = None,
    wrap: Callable[[type], type] = lambda cls: cls,
) -> Any:
    """Return a new rate-limited ccxt.pro client of ``exchange`` loading spot markets only.

    ``wrap`` wraps the client class (``guarded``, to hear its bad frames).
    """
    client = wrap(exchange_class(exchange))({"enableRateLimit": True, "newUpdates": True})
    share_tls(client)
    fetch_markets = client.options.get("fetchMarkets")
    if isinstance(fetch_markets, dict) and "types" in fetch_markets:
        fetch_markets["types"] = ["spot"]  # derivatives' markets would cost requests
    if ws_url or rest_url:
        configure_urls(client, ws_url, rest_url)
    return client


def _bar(row: Any) -> Bar:
    """Return a REST candle ``[t, o, h, l, c, v]`` as a Bar (no volume: 0)."""
    return Bar(
        int(row[0]),
        float(row[1]),
        float(row[2]),
        float(row[3]),
        float(row[4]),
        float(row[5] or 0.0),
    )


def fold(bars: list[Bar], tf: Timeframe) -> list[Bar]:
    """Return ``bars`` (in time order, each within one bar of ``tf``) folded into ``tf`` bars."""
    out: list[Bar] = []
    for bar in bars:
        start = tf.floor(bar.time)
        last = out[-1] if out else None
        if last is None or last.time != start:
            out.append(Bar(start, bar.open, bar.high, bar.low, bar.close, bar.volume))
        else:
            out[-1] = Bar(
                start,
                last.open,
                max(last.high, bar.high),
                min(last.low, bar.low),
                bar.close,
                last.volume + bar.volume,
            )
    return out


def sequence_number(trade_id: object) -> int | None:
    """Return a trade id as a sequence number, or None if it is not a plain number."""
    if type(trade_id) is str:  # ccxt's ids: tested first
        return int(trade_id) if trade_id.isascii() and trade_id.isdigit() else None
    if isinstance(trade_id, int) and not isinstance(trade_id, bool):
        return trade_id
    if isinstance(trade_id, str) and trade_id.isascii() and trade_id.isdigit():
        return int(trade_id)
    return None


def stream_name(frame: object) -> str | None:
    """Return the stream (topic, product, symbol) a websocket frame names, parsed or not."""
    return GENERIC.stream_name(frame)


def _market_key(text: str) -> str:
    """Return a market symbol or id folded for comparing (``ETH/USDT``, ``ETH-USDT``: ethusdt)."""
    return text.replace("/", "").replace("-", "").replace("_", "").lower()


def _timeframes(offered: object) -> list[Timeframe]:
    """Return the exchange's candle timeframes that moodring can align (not months)."""
    found = []
    for name in offered if isinstance(offered, dict) else ():
        try:
            found.append(Timeframe.parse(str(name)))
        except ValueError:
            continue
    return found


def candle_timeframe(wanted: list[Timeframe], offered: list[Timeframe]) -> Timeframe | None:
    """Return the longest offered candle every wanted timeframe folds from (None if none).

    Every candle goes to every bar builder of its feed, so one stream serves them all: its
    candles must tile each wanted bar exactly (length divides it, open times aligned).
    """
    wanted = wanted or [Timeframe.parse("1m")]
    step = math.gcd(*(tf.ms for tf in wanted))
    fits = [
        tf
        for tf in offered or wanted
        if step % tf.ms == 0 and all((w.offset_ms - tf.offset_ms) % tf.ms == 0 for w in wanted)
    ]
    return max(fits, key=lambda tf: tf.ms, default=None)


def candle_problem(row: Any, now_ms: int) -> str | None:
    """Return why a unified candle ``[t, o, h, l, c, v]`` cannot be used, or None."""
    if not isinstance(row, list | tuple) or len(row) < 6:
        return "missing field"
    for price in row[1:5]:
        problem = trade_problem(row[0], price, row[5], now_ms)
        if problem is not None:
            return problem
    return None
