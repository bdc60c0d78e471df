"""The Altcoin Season Index live: the exchange's universe, daily closes and intraday tickers.

A refresh (at start, once each UTC day has closed, and every ``altseason.refresh``) loads
the markets and ``fetch_tickers()``; the candidates are the spot ``quote`` markets not
excluded, the busiest ``candidates`` of them by 24-hour quote volume (default three times
``top``). A coin outside those is assumed not to be among the ``top`` by ``volume_days``
quote volume, so it is not fetched (the backtest ranks every coin it is given). Then
``fetch_ohlcv(symbol, "1d")`` fetches, one symbol after the other under ccxt's rate
limiter, what each candidate and BTC lack: the whole window the first time (the last
``max(days, volume_days - 1) + 1`` closed days), afterwards only the days closed since.
A symbol whose fetch fails (delisted, BadSymbol) is logged and left out of that refresh;
a network error ends the refresh and it is retried with backoff. The closed days go
through ``AltseasonIndex.update_day`` (the definition shared with the backtest) and the
last closed day's ``altseason_index``, ``altseason_members`` and ``altseason_skipped`` are
handed on closed (``on_value``), stamped with the day's open time.

Between refreshes ``watch_tickers`` (or ``fetch_tickers`` once a minute where the exchange
has no ticker stream) keeps the latest price of every coin, and at most once per
``throttle`` seconds the forming day's value (``AltseasonIndex.peek``; the forming day's
own volume counts as 0 until it closes) is handed on as not closed.

``client_factory`` must return a fresh ccxt.pro client on each call (one per refresh and
stream; a closed client is spent); ``clock`` gives the time in epoch seconds.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from ccxt.base.errors import BadSymbol, BaseError, NetworkError

from moodring.backoff import Backoff
from moodring.feeds.ccxt.exchange import CLOSE_TIMEOUT, spot_client
from moodring.feeds.ccxt.patch import guarded
from moodring.lifecycle import Component, first_completed
from moodring.metrics.altseason import (
    DAY_MS,
    AltseasonIndex,
    AltseasonValue,
    ExclusionRules,
    excluded,
)
from moodring.settings import AltseasonConfig
from moodring.times import iso_time

__all__ = ["AltseasonFeed", "AltseasonStats", "ValueListener", "busiest"]

log = logging.getLogger("moodring.feeds.altseason")

# (column, day open time in epoch ms, value, closed)
ValueListener = Callable[[str, int, float, bool], None]
T = TypeVar("T")

# Seconds between two values of the forming day handed on.
THROTTLE = 5.0
# Seconds between two ticker polls where the exchange has no ticker stream.
POLL_EVERY = 60.0
# Seconds a ticker stream may stay silent (every coin at once) before it is reconnected.
SILENCE = 120.0
# Seconds into a UTC day before the day before it is taken as closed: the exchange's last
# trades of a day may reach its daily candle a moment after midnight.
SETTLE = 10.0
# The most candles one REST call asks for (Binance's cap).
KLINES_LIMIT = 1000


@dataclass
class AltseasonStats:
    """Counters of the altseason feed."""

    refreshes: int = 0  # refreshes completed
    requests: int = 0  # REST calls made
    failed: int = 0  # symbol fetches that failed and were left out
    reconnects: int = 0  # refreshes or streams ended by an error
    tickers: int = 0  # ticker updates received
    values: int = 0  # values handed on, closed or of the forming day


class AltseasonFeed(Component):
    """The Altcoin Season Index of one exchange: closed daily, and of the forming day intraday.

    ``async with feed:`` refreshes and streams (``run()``) until the block ends.
    """

    def __init__(
        self,
        config: AltseasonConfig,
        on_value: ValueListener,
        *,
        client_factory: Callable[[], Any] | None = None,
        clock: Callable[[], float] = time.time,
        timeout: float = 30.0,
        candidates: int | None = None,
        throttle: float = THROTTLE,
        poll_every: float = POLL_EVERY,
        silence: float = SILENCE,
        settle: float = SETTLE,
    ) -> None:
        self.config = config
        self.on_value = on_value
        self.timeout = timeout
        self.candidates = candidates if candidates is not None else 3 * config.top
        if self.candidates < 1:
            raise ValueError("candidates must be at least 1")
        self.throttle = throttle
        self.poll_every = poll_every
        self.silence = silence
        self.settle = settle
        self.btc = config.btc if "/" in config.btc else f"BTC/{config.quote}"
        self.stats = AltseasonStats()
        self.latest: AltseasonValue | None = None  # the latest value handed on
        self.closed: AltseasonValue | None = None  # the last closed day's value
        self.coins: dict[str, str] = {}  # market symbol -> base: the coins the index holds
        self.failed: set[str] = set()  # symbols left out by the latest refresh
        self._factory = client_factory or self._make_client
        self._clock = clock
        # the window of closed days kept: the index at day D reads back to D - span
        self._span = max(config.days, config.volume_days - 1)
        self._bars: dict[str, dict[int, tuple[float, float]]] = {}  # symbol -> day -> (c, v)
        self._through: dict[str, int] = {}  # symbol -> the last closed day fetched
        self._index: AltseasonIndex | None = None
        self._index_day = -1
        self._index_coins: frozenset[str] = frozenset()
        self._prices: dict[str, float] = {}  # symbol -> latest price
        self._dirty = False
        self._emitted_at = -math.inf  # monotonic time of the forming day's latest value
        self._refreshed_at = -math.inf  # clock time of the latest refresh

    async def _setup(self) -> None:
        self.spawn(self.run(), name="altseason")

    def _make_client(self) -> Any:
        """Return a new rate-limited ccxt.pro client of the configured exchange."""
        config = self.config
        wrap = functools.partial(guarded, on_bad=self._bad_frame)
        return spot_client(config.exchange, config.ws_url, config.rest_url, wrap)

    def _bad_frame(self, reason: str, frame: object) -> None:
        """Log a websocket frame ccxt could not take; the stream goes on."""
        log.warning("altseason: %s: %s", reason, repr(frame)[:200])

    def today(self) -> int:
        """Return the UTC day number of the forming day, ``settle`` seconds behind the clock."""
        return (int(self._clock() * 1000) - int(self.settle * 1000)) // DAY_MS

    async def run(self) -> None:
        """Refresh and stream until cancelled, retrying with backoff after any error."""
        backoff = Backoff(1.0, 60.0)
        while True:
            try:
                await self._cycle(backoff)
            except Exception as exc:  # any failure: log it, wait, start again
                self.stats.reconnects += 1
                delay = backoff.next()
                if isinstance(exc, NetworkError | TimeoutError | OSError):
                    log.warning(
                        "altseason: %s: %s; retrying in %.1f s",
                        type(exc).__name__,
                        str(exc)[:200],
                        delay,
                    )
                else:
                    log.error(
                        "altseason: %s: %s; retrying in %.1f s",
                        type(exc).__name__,
                        str(exc)[:300],
                        delay,
                        exc_info=not isinstance(exc, BaseError),
                    )
                await asyncio.sleep(delay)

    async def _cycle(self, backoff: Backoff) -> None:
        """Refresh on a new client, then stream on it until the next refresh is due."""
        client = self._factory()
        try:
            await self._refresh(client)
            backoff.reset()
            await self._live(client)
        finally:
            await self._close_quietly(client)

    # ------------------------------------------------------------------ refresh

    async def _call(self, call: Awaitable[T]) -> T:
        """Await one REST call within the timeout, counting it."""
        self.stats.requests += 1
        async with asyncio.timeout(self.timeout):
            return await call

    async def _refresh(self, client: Any) -> None:
        """Re-rank the universe, fetch the closed days missing, hand on the closed value."""
        started = self.stats.requests
        await self._call(client.load_markets(True))
        markets = client.markets
        if self.btc not in markets:
            raise BadSymbol(f"{self.btc} is not a market of {self.config.exchange}")
        tickers = await self._call(client.fetch_tickers())
        chosen = self._candidates(markets, tickers)
        last = self.today() - 1
        first = last - self._span
        await self._fetch(client, self.btc, first, last)  # without BTC there is no index
        failed: set[str] = set()
        for symbol in chosen:
            try:
                await self._fetch(client, symbol, first, last)
            except (NetworkError, TimeoutError):
                raise
            except (BaseError, ValueError, TypeError, IndexError) as exc:
                failed.add(symbol)
                self.stats.failed += 1
                log.warning(
                    "altseason: %s left out of this refresh: %s: %s",
                    symbol,
                    type(exc).__name__,
                    str(exc)[:200],
                )
        for symbol in set(self._bars) - set(chosen) - {self.btc}:
            del self._bars[symbol]
            self._through.pop(symbol, None)
        self.failed = failed
        self.coins = {s: base for s, base in chosen.items() if s not in failed}
        value = self._build(first, last)
        self._prices = {}
        self._take(tickers)
        self._refreshed_at = self._clock()
        self.stats.refreshes += 1
        log.info(
            "altseason: refreshed %d coins (%d left out) in %d requests; %s: %.1f, "
            "%d members, %d skipped",
            len(self.coins),
            len(failed),
            self.stats.requests - started,
            iso_time(value.time)[:10],
            value.index,
            len(value.members),
            value.skipped,
        )
        if self.closed is None or value.time > self.closed.time:
            self.closed = value
            self._emit(value, closed=True)
        self._emit_forming_day()

    def _candidates(self, markets: Mapping[str, Any], tickers: Mapping[str, Any]) -> dict[str, str]:
        """Return symbol -> base of the busiest eligible markets by 24-hour quote volume."""
        return busiest(markets, tickers, self.config.quote, self.config.rules(), self.candidates)

    async def _fetch(self, client: Any, symbol: str, first: int, last: int) -> None:
        """Fetch the closed days ``first..last`` of a symbol that its cache lacks."""
        through = self._through.get(symbol)
        since = first if through is None or through < first else through + 1
        fresh: dict[int, tuple[float, float]] = {}
        while since <= last:
            rows = await self._call(
                client.fetch_ohlcv(symbol, "1d", since=since * DAY_MS, limit=KLINES_LIMIT)
            )
            days = []
            for row in rows:
                t = int(row[0])
                if t % DAY_MS:
                    raise ValueError(f"a daily candle opens at {iso_time(t)}, not 00:00 UTC")
                day = t // DAY_MS
                days.append(day)
                if since <= day <= last:  # the forming day's candle is not closed
                    fresh[day] = (float(row[4]), float(row[5] or 0.0))
            if len(rows) < KLINES_LIMIT or not days or max(days) >= last:
                break
            since = max(days) + 1
        bars = self._bars.get(symbol) if through is not None and through >= first else None
        bars = {**(bars or {}), **fresh}
        self._bars[symbol] = {day: bar for day, bar in sorted(bars.items()) if day >= first}
        self._through[symbol] = last

    def _build(self, first: int, last: int) -> AltseasonValue:
        """Bring the index to day ``last`` (one more day if its coins stayed, else anew)."""
        coins = frozenset(self.coins)
        index = self._index
        value: AltseasonValue | None = None
        if index is not None and coins == self._index_coins and self._index_day == last:
            value = index.value
        elif index is not None and coins == self._index_coins and self._index_day == last - 1:
            value = self._update(index, last)
        else:
            index = AltseasonIndex.from_config(self.config)
            for day in range(first, last + 1):
                value = self._update(index, day)
        assert value is not None  # first <= last: at least one day went in
        self._index, self._index_day, self._index_coins = index, last, coins
        return value

    def _update(self, index: AltseasonIndex, day: int) -> AltseasonValue:
        """Fold one closed day of the cached bars into the index; return its value."""
        closes = {}
        for symbol, base in self.coins.items():
            bar = self._bars[symbol].get(day)
            if bar is not None:
                closes[base] = bar
        btc = self._bars[self.btc].get(day, (math.nan, 0.0))[0]
        return index.update_day(day * DAY_MS, closes, btc)

    # ------------------------------------------------------------------ intraday

    async def _live(self, client: Any) -> None:
        """Stream (or poll) tickers until a refresh is due; raise on a stream failure."""
        await first_completed(self._watch(client), self._pulse(client))

    async def _watch(self, client: Any) -> None:
        """Take every ticker update of the index's coins and BTC, forever."""
        symbols = [self.btc, *self.coins]
        if client.has.get("watchTickers"):
            while True:
                async with asyncio.timeout(self.silence):
                    tickers = await client.watch_tickers(symbols)
                self._take(tickers)
        while True:
            await asyncio.sleep(self.poll_every)
            self._take(await self._call(client.fetch_tickers(symbols)))

    async def _pulse(self, client: Any) -> None:
        """Hand on the forming day's value at most each ``throttle``; return when to refresh."""
        while True:
            await asyncio.sleep(min(self.throttle, 1.0))
            if (
                self.today() - 1 > self._index_day
                or self._clock() - self._refreshed_at >= self.config.refresh
            ):
                return
            # a watch returns only the update that resolved it: the ones arriving before the
            # next watch are only in the client's ticker cache
            self._take(getattr(client, "tickers", None), count=False)
            if self._dirty and time.monotonic() - self._emitted_at >= self.throttle:
                self._emit_forming_day()

    def _take(self, tickers: Mapping[str, Any] | None, *, count: bool = True) -> None:
        """Keep the latest price of the tracked symbols among these tickers."""
        for symbol, ticker in (tickers or {}).items():
            if symbol != self.btc and symbol not in self.coins:
                continue
            price = _price(ticker)
            if price is not None and price != self._prices.get(symbol):
                self._prices[symbol] = price
                self._dirty = True
            if price is not None and count:
                self.stats.tickers += 1

    def _emit_forming_day(self) -> None:
        """Hand on the index as if the forming day closed at the latest prices."""
        index = self._index
        today = self.today()
        if index is None or today != self._index_day + 1:
            return  # the day just closed: the refresh due hands it on
        prices = {
            base: self._prices[symbol]
            for symbol, base in self.coins.items()
            if symbol in self._prices
        }
        btc = self._prices.get(self.btc, math.nan)
        self._emit(index.peek(prices, btc, day_ms=today * DAY_MS), closed=False)
        self._dirty = False
        self._emitted_at = time.monotonic()

    def _emit(self, value: AltseasonValue, *, closed: bool) -> None:
        """Hand on a value's three columns."""
        self.latest = value
        self.on_value("altseason_index", value.time, value.index, closed)
        self.on_value("altseason_members", value.time, float(len(value.members)), closed)
        self.on_value("altseason_skipped", value.time, float(value.skipped), closed)
        self.stats.values += 1

    async def _close_quietly(self, client: Any) -> None:
        """Close a client within a bound; a socket half-way through a drop may never answer."""
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await client.close()
        except (Exception, TimeoutError) as exc:  # closing a broken client must not stop us
            log.debug("altseason: close: %s", exc)


def busiest(
    markets: Mapping[str, Any],
    tickers: Mapping[str, Any],
    quote: str,
    rules: ExclusionRules,
    count: int,
) -> dict[str, str]:
    """Return symbol -> base of the ``count`` busiest eligible ``quote`` spot markets (24 h)."""
    ranked = []
    for symbol, ticker in tickers.items():
        market = markets.get(symbol)
        if (
            market is None
            or not market.get("spot")
            or market.get("active") is False
            or market.get("quote") != quote
        ):
            continue
        base = str(market.get("base") or "")
        if not base or excluded(base, rules) is not None:
            continue
        ranked.append((-_quote_volume(ticker), base, symbol))
    ranked.sort()
    return {symbol: base for _, base, symbol in ranked[:count]}


def _finite(value: object) -> float | None:
    """Return a value as a finite float, or None."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _price(ticker: Mapping[str, Any]) -> float | None:
    """Return a ticker's last price if it is usable."""
    price = _finite(ticker.get("last"))
    if price is None:
        price = _finite(ticker.get("close"))
    return price if price is not None and price > 0 else None


def _quote_volume(ticker: Mapping[str, Any]) -> float:
    """Return a ticker's 24-hour quote volume (base volume times price where missing), or 0."""
    volume = _finite(ticker.get("quoteVolume"))
    if volume is None:
        base, price = _finite(ticker.get("baseVolume")), _price(ticker)
        volume = base * price if base is not None and price is not None else None
    return volume if volume is not None and volume >= 0 else 0.0
