"""Check one Yahoo feed: the chart API (market, price, clock) and a tick from the streamer."""

from __future__ import annotations

import asyncio
import email.utils
import json
import time
from urllib.parse import quote

import aiohttp
from websockets.asyncio.client import connect
from websockets.exceptions import WebSocketException

from moodring.feeds.check import FeedCheck
from moodring.feeds.streamer import FrameError
from moodring.feeds.yahoo.history import CHART_BASE_URL, HistoryError, parse_chart
from moodring.feeds.yahoo.stream import (
    QUOTE_HEARTBEAT,
    STREAMER_URL,
    USER_AGENT,
    decode_pricing,
    frame_payload,
)
from moodring.settings import FeedConfig


async def check(name: str, feed: FeedConfig, timeout: float) -> FeedCheck:
    """Fetch five daily bars of the symbol, then wait for one of its ticks on the streamer."""
    found = FeedCheck(name, "yahoo", False)
    base = (feed.rest_url or CHART_BASE_URL).rstrip("/")
    url = f"{base}/v8/finance/chart/{quote(feed.symbol, safe='')}"
    params = {"interval": "1d", "range": "5d"}
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session,
            session.get(url, params=params, headers={"User-Agent": USER_AGENT}) as response,
        ):
            text = await response.text()
            status, date = response.status, response.headers.get("Date")
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        found.reason = f"REST: {type(exc).__name__}: {exc}"[:200]
        return found
    if date:
        stamp = email.utils.parsedate_to_datetime(date).timestamp()
        found.offset_ms = int((stamp + 0.5) * 1000) - int(time.time() * 1000)  # 1 s steps
    if status != 200:
        found.reason = f"REST: HTTP {status}: {' '.join(text.split())[:160]}"
        return found
    try:
        bars = parse_chart(feed.symbol, json.loads(text))
    except (ValueError, HistoryError) as exc:
        found.reason = f"REST: {exc}"[:200]
        return found
    found.market = feed.symbol
    if len(bars):
        found.price = float(bars.close[-1])
    try:
        async with asyncio.timeout(timeout):
            tick_price = await _first_tick(feed.ws_url or STREAMER_URL, feed.symbol, timeout)
    except TimeoutError:
        found.reason = f"websocket: no tick within {timeout:g} s (market closed?)"
        found.usable = True
        return found
    except (WebSocketException, OSError) as exc:
        found.reason = f"websocket: {type(exc).__name__}: {exc}"[:200]
        return found
    if tick_price is not None:
        found.price = tick_price
    found.usable = True
    return found


async def _first_tick(url: str, symbol: str, timeout: float) -> float | None:
    """Subscribe to ``symbol`` and return the price of its first tick."""
    async with connect(url, open_timeout=timeout, user_agent_header=USER_AGENT) as ws:
        await ws.send(json.dumps({"subscribe": [symbol]}))
        async for frame in ws:
            try:
                payload = frame_payload(frame)
                tick = decode_pricing(payload) if payload is not None else None
            except (FrameError, ValueError):
                continue
            if tick is not None and tick.quote_type != QUOTE_HEARTBEAT and tick.id == symbol:
                return float(tick.price)
    return None
