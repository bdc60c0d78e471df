"""Check one ccxt feed: markets and clock over REST, one trade over the websocket."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from ccxt.base.errors import BadSymbol, BaseError

from moodring.feeds.ccxt import CcxtFeedConfig
from moodring.feeds.ccxt.exchange import exchange_class, load_markets
from moodring.feeds.ccxt.venues import Venue, client_setup, venue
from moodring.feeds.check import FeedCheck
from moodring.settings import FeedConfig

CLOSE_TIMEOUT = 1.0


def _why(exc: BaseException, where: str, known: Venue) -> str:
    """Return why a call failed, in one line (a refused location in plain words)."""
    status = known.refused(exc)
    if status is not None:
        return known.refusal_advice(status, retrying=False)
    text = " ".join(str(exc).split())[:160] or "no detail"
    cause = exc.__cause__ or exc.__context__
    if cause is not None and str(cause):  # ccxt's text names the URL, its cause the reason
        text += f" ({' '.join(str(cause).split())[:120]})"
    return f"{where}: {type(exc).__name__}: {text}"


async def check(name: str, feed: FeedConfig, timeout: float) -> FeedCheck:
    """Load the markets, read the clock and a recent candle over REST, then watch one trade."""
    assert isinstance(feed, CcxtFeedConfig)
    found = FeedCheck(name, f"ccxt {feed.exchange}", False)
    try:
        cls = exchange_class(feed.exchange)
    except ValueError as exc:
        found.reason = str(exc)
        return found
    known = venue(feed.exchange)
    client: Any = cls({"enableRateLimit": True, "newUpdates": True})
    try:
        client_setup(feed.exchange, client)
        known.configure(client, feed.ws_url, feed.rest_url)
        try:
            async with asyncio.timeout(timeout):
                await load_markets(client, known, [feed.symbol])
        except (BaseError, TimeoutError, OSError) as exc:
            found.reason = _why(exc, "REST", known) if str(exc) else "REST: no answer in time"
            return found
        try:
            market = client.market(feed.symbol)
        except BadSymbol:
            found.reason = f"{feed.exchange} has no market {feed.symbol}"
            return found
        found.market = f"{market['symbol']} (id {market['id']})"
        try:
            async with asyncio.timeout(timeout):
                server = await client.fetch_time()
            found.offset_ms = int(server) - int(time.time() * 1000)
            async with asyncio.timeout(timeout):
                rows = await client.fetch_ohlcv(
                    feed.symbol, "1m", since=int(server) - 3_600_000, limit=60
                )
            if rows:
                found.price = float(rows[-1][4])
        except (BaseError, TimeoutError, OSError, TypeError, ValueError) as exc:
            found.reason = _why(exc, "REST", known) if str(exc) else "REST: no answer in time"
            return found
        try:
            async with asyncio.timeout(timeout):
                trades = await client.watch_trades(feed.symbol)
            if trades:
                found.price = float(trades[-1]["price"])
        except TimeoutError:
            if not _connected(client):
                found.reason = f"websocket: not connected within {timeout:g} s"
                return found
            found.reason = f"websocket connected; no trade within {timeout:g} s"
        except (BaseError, OSError) as exc:
            found.reason = _why(exc, "websocket", known)
            return found
        found.usable = True
        return found
    finally:
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await client.close()
        except (Exception, TimeoutError):  # a half-open socket: nothing more to learn
            pass


def _connected(client: Any) -> bool:
    """Return whether one of the client's websockets is open."""
    for ws in getattr(client, "clients", {}).values():
        connected = getattr(ws, "connected", None)
        if connected is not None and connected.done() and not connected.exception():
            return True
    return False
