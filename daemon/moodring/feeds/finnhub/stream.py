"""Finnhub equity trades over its websocket.

Finnhub's protocol: connect to ``wss://ws.finnhub.io?token=KEY`` (a bad key is refused in the
handshake with HTTP 401), send ``{"type":"subscribe","symbol":"IWM"}`` (no acknowledgement),
then receive ``{"type":"trade","data":[{"s":"IWM","p":201.3,"t":1700000000000,"v":100,
"c":["1"]}]}`` (``t`` epoch ms, ``v`` the trade's own size), ``{"type":"ping"}`` and
``{"type":"error","msg":"..."}``. There is no free history endpoint (``/stock/candle`` needs a
paid plan): warm keyed equity feeds up from Yahoo's chart API instead.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import SecretStr
from websockets.asyncio.client import ClientConnection

from moodring.feeds.base import FeedSink
from moodring.feeds.streamer import EquityStreamer, FrameError, StreamerOptions, require_secret

if TYPE_CHECKING:
    from typing_extensions import Unpack

FINNHUB_URL = "wss://ws.finnhub.io"


class FinnhubStreamer(EquityStreamer):
    """Streams one US equity's trades from Finnhub's websocket (``?token=`` key) into a sink."""

    provider = "finnhub"

    def __init__(
        self,
        feed: str,
        symbol: str,
        sink: FeedSink,
        *,
        url: str = FINNHUB_URL,
        api_key: str | SecretStr | None,
        **options: Unpack[StreamerOptions],
    ):
        key = require_secret(feed, "finnhub", api_key, "api_key")
        super().__init__(feed, symbol, sink, url=url, secrets=(key,), **options)
        self._key = key

    def _connect_url(self) -> str:
        """Return the configured URL with ``token=`` set to the key."""
        parts = urlsplit(self.url)
        query = [(k, v) for k, v in parse_qsl(parts.query) if k != "token"]
        query.append(("token", self._key))
        return urlunsplit(parts._replace(query=urlencode(query)))

    async def _login(self, ws: ClientConnection) -> str | None:
        """Subscribe to the symbol's trades (the key went in the URL; there is no ack)."""
        message = json.dumps({"type": "subscribe", "symbol": self.symbol})
        async with asyncio.timeout(self.timeout):
            await ws.send(message)
        return None

    def handle_frame(self, frame: str | bytes) -> str | None:
        """Pass a trade batch's valid trades of our symbol on; give up on a server error."""
        try:
            message = self._json(frame)
        except FrameError as exc:
            self._bad(exc.reason, exc.detail, frame)
            return None
        if not isinstance(message, dict):
            self._bad("shape", f"expected an object, got {type(message).__name__}", frame)
            return None
        kind = message.get("type")
        if kind == "ping":
            self.ignored["ping"] += 1
            return None
        if kind == "error":
            return self._server_error(str(message.get("msg", message)))
        if kind != "trade":
            self.ignored["type"] += 1
            return None
        data = message.get("data")
        if not isinstance(data, list):
            self._bad("shape", "trade message without a data list", frame)
            return None
        for item in data:
            if not isinstance(item, dict):
                self._bad("shape", f"trade is a {type(item).__name__}", item)
                continue
            if item.get("s") != self.symbol:
                self.ignored["symbol"] += 1
                continue
            problem = self._trade(item.get("t"), item.get("p"), item.get("v"), None)
            if problem is not None:
                self._bad(problem, "", item)
        return None
