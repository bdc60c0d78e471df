"""Dynamic watchlists live: ranked from the exchange's REST API at start and every ``refresh``.

A ranking loads the markets and ``fetch_tickers()``, takes the busiest eligible ``quote``
markets by 24-hour quote volume (three times ``top``, as the live altseason index does),
fetches each one's last ``volume_days + 2`` daily candles one after the other under ccxt's
rate limiter (Binance's request weights respected; an HTTP 429 is waited out for as long as
its ``Retry-After`` says, up to ``RETRY_AFTER_MAX``) and ranks them with the backtest's own
ranking (``metrics.ranking``: trailing quote volume, the Altcoin Season Index's
exclusions, ``include``/``exclude``): the members are those of the last closed day. A
candidate whose candles cannot be fetched is left out of that ranking; a failed ranking
keeps the current members, says so once and is retried every ``RETRY`` seconds (or once
the exchange's ``Retry-After`` has passed, if later).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import numpy as np
from ccxt.base.errors import BaseError, NetworkError

from moodring.feeds.altseason_feed import busiest
from moodring.feeds.ccxt.exchange import CLOSE_TIMEOUT, spot_client
from moodring.feeds.ccxt.limits import RateLimitedError, heeding_retry_after
from moodring.lifecycle import Component
from moodring.metrics.ranking import Daily, rank_by_volume, ranked_members
from moodring.settings import Member, WatchlistConfig

__all__ = ["RETRY", "Ranker", "rank_watchlist"]

log = logging.getLogger("moodring.watchlists")

# Seconds between two attempts after a failed ranking.
RETRY = 60.0
# Seconds one REST call may take.
TIMEOUT = 30.0

Members = tuple[Member, ...]
# failures said in one line (any other is logged with its traceback)
_EXPECTED = (BaseError, OSError, TimeoutError, RateLimitedError)
WatchlistsGetter = Callable[[], Mapping[str, WatchlistConfig]]
MembersListener = Callable[[str, Members], Awaitable[None]]


def _client(config: WatchlistConfig) -> Any:
    """Return a new rate-limited ccxt.pro client of the watchlist's exchange (spot only)."""
    return spot_client(config.exchange, rest_url=config.rest_url)


async def rank_watchlist(
    name: str, config: WatchlistConfig, client: Any, timeout: float = TIMEOUT
) -> Members:
    """Return the members of a dynamic watchlist ranked from the exchange's daily candles."""

    async def call(what: str, request: Callable[[], Awaitable[Any]]) -> Any:
        return await heeding_retry_after(client, request, timeout=timeout, what=what)

    await call("markets", lambda: client.load_markets(True))
    tickers = await call("tickers", client.fetch_tickers)
    top = config.top or 1
    chosen = busiest(client.markets, tickers, config.quote, config.rules(), 3 * top)
    coins: dict[str, Daily] = {}
    forming = 0  # the open time of the latest candle seen: the forming day's
    for symbol, base in chosen.items():
        try:
            rows = await call(
                f"{symbol} candles",
                functools.partial(client.fetch_ohlcv, symbol, "1d", limit=config.volume_days + 2),
            )
        except (NetworkError, TimeoutError, RateLimitedError):
            raise
        except (BaseError, ValueError, TypeError) as exc:
            log.warning(
                "watchlist %s: %s left out of this ranking: %s", name, symbol, str(exc)[:200]
            )
            continue
        if not rows:
            continue
        table = np.asarray([[float(x or 0.0) for x in row[:6]] for row in rows])
        times = table[:, 0].astype(np.int64)
        forming = max(forming, int(times[-1]))
        coins[base] = (times, table[:, 4].copy(), table[:, 5].copy())
    # the ranking of a day holds once it has closed: the day before the forming one's
    return ranked_members(rank_by_volume(coins, config), forming, config.quote)


class Ranker(Component):
    """Ranks every dynamic watchlist in use at start and every ``refresh``; hands on changes.

    ``watchlists()`` gives the dynamic watchlists to rank (read anew each time, so a
    reload's changes are followed: a changed watchlist is ranked at once);
    ``on_members(name, members)`` is awaited with each new member list.
    """

    def __init__(
        self,
        watchlists: WatchlistsGetter,
        on_members: MembersListener,
        *,
        client_factory: Callable[[WatchlistConfig], Any] = _client,
        retry: float = RETRY,
    ) -> None:
        self.watchlists = watchlists
        self.on_members = on_members
        self.retry = retry
        self.members: dict[str, Members] = {}  # the latest ranking of each watchlist
        self.failing: set[str] = set()  # watchlists whose latest ranking failed
        self.tried: set[str] = set()  # watchlists ranked at least once, or failed to be
        self._factory = client_factory
        self.ranked_by: dict[str, WatchlistConfig] = {}  # the config each was last ranked by
        self._due: dict[str, float] = {}  # monotonic time of each one's next ranking

    async def _setup(self) -> None:
        self.spawn(self.run(), name="watchlist ranking")

    def waiting(self) -> list[str]:
        """Return the watchlists not ranked yet (nor failed to be) since they were declared."""
        return sorted(set(self.watchlists()) - self.tried)

    async def run(self) -> None:
        """Rank what is due, forever."""
        while True:
            now = time.monotonic()
            for name, config in list(self.watchlists().items()):
                if self.ranked_by.get(name) != config or now >= self._due.get(name, 0.0):
                    await self.rank(name, config)
            await asyncio.sleep(1.0)

    async def rank(self, name: str, config: WatchlistConfig) -> None:
        """Rank one watchlist now; hand on its members if they changed."""
        if self.ranked_by.get(name) != config:
            self.tried.discard(name)
        self.ranked_by[name] = config
        client = self._factory(config)
        try:
            members = await rank_watchlist(name, config, client)
        except Exception as exc:  # any failure: the current members stay
            self.tried.add(name)
            wait = min(self.retry, config.refresh)
            if isinstance(exc, RateLimitedError):
                wait = max(wait, exc.wait)  # asking sooner would only prolong a ban
            self._due[name] = time.monotonic() + wait
            if name not in self.failing:
                self.failing.add(name)
                held = len(self.members.get(name, ()))
                log.warning(
                    "watchlist %s: ranking failed (%s: %s); keeping its %d current member(s), "
                    "retrying every %.0f s",
                    name,
                    type(exc).__name__,
                    str(exc)[:200] or "no detail",
                    held,
                    wait,
                    exc_info=not isinstance(exc, _EXPECTED),
                )
            return
        finally:
            await _close_quietly(client)
        self._due[name] = time.monotonic() + config.refresh
        if name in self.failing:
            self.failing.discard(name)
            log.info("watchlist %s: ranked again", name)
        if members != self.members.get(name):
            shown = ", ".join(m.base for m in members[:10])
            more = f" and {len(members) - 10} more" if len(members) > 10 else ""
            log.info("watchlist %s: %d member(s) ranked: %s%s", name, len(members), shown, more)
            self.members[name] = members
            await self.on_members(name, members)
        self.tried.add(name)


async def _close_quietly(client: Any) -> None:
    """Close a client within a bound; a broken socket may never answer."""
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT):
            await client.close()
    except (Exception, TimeoutError) as exc:  # closing a broken client must not stop us
        log.debug("watchlist ranking: close: %s", exc)
