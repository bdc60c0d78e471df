"""Alpaca market data v2 equity trades over its websocket (IEX feed by default).

The protocol: connect to ``wss://stream.data.alpaca.markets/v2/iex``, receive
``[{"T":"success","msg":"connected"}]``, send ``{"action":"auth","key":KEY,"secret":SECRET}``
(within 10 s), receive ``[{"T":"success","msg":"authenticated"}]`` or an error such as
``[{"T":"error","code":402,"msg":"auth failed"}]``, send
``{"action":"subscribe","trades":["IWM"]}``, receive ``[{"T":"subscription","trades":["IWM"],
...}]``, then batches of trades ``[{"T":"t","S":"IWM","i":52983525029461,"x":"V","p":201.3,
"s":100,"t":"2024-12-31T14:30:00.123456789Z","c":["@"],"z":"B"}]`` (``t`` RFC-3339 with up to
nanoseconds, ``s`` the trade's size, ``i`` its id). Control messages always come alone in a
one-element array. One connection per feed and account: a second gets error 406.
"""

from __future__ import annotations

import asyncio
import json
import re
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr
from websockets.asyncio.client import ClientConnection

from moodring.feeds.base import FeedSink
from moodring.feeds.streamer import EquityStreamer, FrameError, StreamerOptions, require_secret

if TYPE_CHECKING:
    from typing_extensions import Unpack

ALPACA_URL = "wss://stream.data.alpaca.markets/v2/iex"

_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?([Zz]|[+-]\d{2}:\d{2})"
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# what to tell the operator about the stream's error codes (the server's msg is logged too)
ERROR_HINTS = {
    401: "sent before authenticating",
    402: "check feeds.{feed}.api_key and feeds.{feed}.api_secret",
    404: "authentication took too long",
    405: "too many symbols for the key's plan",
    406: "another connection already uses this key on this feed; Alpaca allows one",
    407: "the client read too slowly",
    409: "the key's plan does not include this feed; the free plan has v2/iex",
}


def rfc3339_ms(text: object) -> int | None:
    """Return epoch milliseconds of an RFC-3339 time (fraction truncated), or None if invalid."""
    if not isinstance(text, str):
        return None
    match = _RFC3339.fullmatch(text.strip())
    if match is None:
        return None
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    try:
        moment = datetime(year, month, day, hour, minute, second, tzinfo=UTC)
    except ValueError:
        return None
    zone = match.group(8)
    if zone not in ("Z", "z"):
        offset = timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))
        moment -= offset if zone[0] == "+" else -offset
    # whole seconds through integer timedelta arithmetic: no float rounding of the ms
    whole = (moment - _EPOCH) // timedelta(seconds=1)
    return whole * 1000 + int((match.group(7) or "").ljust(3, "0")[:3])


class AlpacaStreamer(EquityStreamer):
    """Streams one US equity's trades from Alpaca's market data websocket into a sink."""

    provider = "alpaca"

    def __init__(
        self,
        feed: str,
        symbol: str,
        sink: FeedSink,
        *,
        url: str = ALPACA_URL,
        api_key: str | SecretStr | None,
        api_secret: str | SecretStr | None,
        **options: Unpack[StreamerOptions],
    ):
        key = require_secret(feed, "alpaca", api_key, "api_key")
        secret = require_secret(feed, "alpaca", api_secret, "api_secret")
        super().__init__(feed, symbol, sink, url=url, secrets=(key, secret), **options)
        self._key = key
        self._secret = secret

    async def _login(self, ws: ClientConnection) -> str | None:
        """Wait for the welcome, authenticate, and subscribe to the symbol's trades."""
        problem = await self._expect(ws, "connected")
        if problem is not None:
            return problem
        auth = json.dumps({"action": "auth", "key": self._key, "secret": self._secret})
        async with asyncio.timeout(self.timeout):
            await ws.send(auth)
        problem = await self._expect(ws, "authenticated")
        if problem is not None:
            return problem
        subscribe = json.dumps({"action": "subscribe", "trades": [self.symbol]})
        async with asyncio.timeout(self.timeout):
            await ws.send(subscribe)
        return None

    async def _expect(self, ws: ClientConnection, wanted: str) -> str | None:
        """Read until ``{"T":"success","msg":wanted}``; return a server error's reason, or None."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        while True:
            left = deadline - loop.time()
            if left <= 0:
                raise TimeoutError(f"no {wanted!r} message")
            async with asyncio.timeout(left):
                frame = await ws.recv()
            items = self._items(frame)
            found = False
            for item in items:
                if isinstance(item, dict) and item.get("T") == "success":
                    found = found or item.get("msg") == wanted
                    self.ignored["control"] += 1
                    continue
                problem = self._take(item)
                if problem is not None:
                    return problem
            if found:
                return None

    def handle_frame(self, frame: str | bytes) -> str | None:
        """Pass a batch's valid trades of our symbol on; give up on a server error."""
        for item in self._items(frame):
            problem = self._take(item)
            if problem is not None:
                return problem
        return None

    def _items(self, frame: str | bytes) -> list[Any]:
        """Return a frame's messages (an array, or one bare object); [] when it is malformed."""
        try:
            message = self._json(frame)
        except FrameError as exc:
            self._bad(exc.reason, exc.detail, frame)
            return []
        if isinstance(message, dict):
            return [message]
        if not isinstance(message, list):
            self._bad("shape", f"expected an array, got {type(message).__name__}", frame)
            return []
        return message

    def _take(self, item: Any) -> str | None:
        """Handle one message; return why the connection must be given up, or None."""
        if not isinstance(item, dict):
            self._bad("shape", f"message is a {type(item).__name__}", item)
            return None
        kind = item.get("T")
        if kind == "t":
            self._take_trade(item)
        elif kind == "error":
            code = item.get("code")
            hint = ERROR_HINTS.get(code, "") if isinstance(code, int) else ""
            return self._server_error(
                f"{item.get('msg', '?')} (code {code})",
                auth=code == 402,
                hint=hint.format(feed=self.feed),
            )
        elif kind == "subscription":
            trades = item.get("trades")
            if not isinstance(trades, list) or self.symbol not in trades:
                self._log.error(
                    "alpaca %s: the subscription lacks the symbol: %s", self.symbol, trades
                )
                return f"{self.symbol} not subscribed"
            self.ignored["control"] += 1
        elif kind == "success":
            self.ignored["control"] += 1
        else:
            # quotes, bars, trade corrections ("c") and cancels ("x") are not used
            self.ignored[f"T={kind}"[:16]] += 1
        return None

    def _take_trade(self, item: dict[str, Any]) -> None:
        """Check one trade message and pass it on."""
        if item.get("S") != self.symbol:
            self.ignored["symbol"] += 1
            return
        stamp = item.get("t")
        t_ms = None if stamp is None else rfc3339_ms(stamp)
        if stamp is not None and t_ms is None:
            self._bad("bad timestamp", f"not an RFC-3339 time: {stamp!r}", item)
            return
        problem = self._trade(t_ms, item.get("p"), item.get("s"), item.get("i"))
        if problem is not None:
            self._bad(problem, "", item)
