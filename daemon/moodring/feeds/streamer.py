"""The loop shared by the equity streamers (Yahoo, Finnhub, Alpaca).

Reconnects with backoff, the calendar-aware stale watchdog, trade checks, and keeping keys
out of every log line; subclasses speak their provider's protocol.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any, Protocol, TypedDict, cast

from pydantic import SecretStr
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException
from websockets.http11 import USER_AGENT as WEBSOCKETS_USER_AGENT

from moodring.backoff import Backoff
from moodring.feeds.base import FeedSink
from moodring.feeds.clock import StreamClock
from moodring.feeds.frames import trade_problem
from moodring.feedstate import FeedState
from moodring.lifecycle import Component

REDACTED = "[REDACTED]"
# query parameters whose values are credentials, whoever put them into a URL
_CREDENTIAL_PARAM = re.compile(r"(?i)\b(token|api_?key|key|secret)=[^&\s'\"]*")
_AUTH_STATUS = {401, 403}


class FrameError(ValueError):
    """A frame that cannot be decoded; ``reason`` is a short counter key."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class Sessions(Protocol):
    """What a streamer asks of a market calendar (``MarketCalendar`` fits)."""

    def is_open(self, t_ms: int) -> bool:
        """Return True when the market is in its regular session at ``t_ms``."""
        ...


class StreamerOptions(TypedDict, total=False):
    """The keyword options every equity streamer takes (see ``EquityStreamer``)."""

    calendar: Sessions | None
    stale_after: float | None
    timeout: float
    healthy_after: float
    regular_hours_only: bool
    backoff: Backoff | None
    clock: Callable[[], float]


def frame_text(frame: str | bytes) -> str:
    """Return a frame as text (FrameError when a binary frame is not UTF-8)."""
    if isinstance(frame, bytes | bytearray | memoryview):
        try:
            return bytes(frame).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise FrameError("encoding", "binary frame is not UTF-8 text") from exc
    return frame


def require_secret(feed: str, source: str, value: str | SecretStr | None, key: str) -> str:
    """Return a configured key as text, or raise ValueError saying where it can be given."""
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if value is None or not value.strip():
        raise ValueError(
            f"feeds.{feed}.{key} is required for a {source} feed: set it in the config file, "
            f"in MOODRING_FEEDS__{feed.upper()}__{key.upper()}, or with {key}_file (a file "
            f"holding it) or {key}_credential (a systemd credential)"
        )
    return value.strip()


def redact(text: str, secrets: Iterable[str]) -> str:
    """Return ``text`` with every secret and every ``token=``-like URL parameter blanked."""
    for secret in secrets:
        if not secret:
            continue
        text = text.replace(secret, REDACTED)
        # websockets shortens a long frame in its log to head...tail, cutting a secret in two
        for n in range(len(secret) - 1, 2, -1):
            text = text.replace(secret[:n] + "...", REDACTED + "...")
            text = text.replace("..." + secret[-n:], "..." + REDACTED)
    return _CREDENTIAL_PARAM.sub(lambda m: f"{m.group(1)}={REDACTED}", text)


class RedactingLogger(logging.LoggerAdapter[logging.Logger]):
    """A logger that blanks secrets in every line it logs (a streamer's own, and websockets')."""

    # at debug level websockets logs the request line (Finnhub's ``?token=``) and the start
    # and end of every frame sent (Alpaca's auth message, the secret cut in half); the
    # streamer's own lines carry server messages and tracebacks that may echo a key

    def __init__(self, logger: logging.Logger, scrub: Callable[[str], str]) -> None:
        super().__init__(logger, {})
        self.scrub = scrub

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        """Format the record, blank secrets in it (and its traceback), and log it."""
        if not self.isEnabledFor(level):
            return
        try:
            text = str(msg) % args if args else str(msg)
        except (TypeError, ValueError):
            text = f"{msg} {args!r}"
        exc_info = kwargs.pop("exc_info", None)
        if exc_info:
            info = sys.exc_info() if exc_info is True else exc_info
            if isinstance(info, BaseException):
                info = (type(info), info, info.__traceback__)
            if isinstance(info, tuple) and info[0] is not None:
                text += "\n" + "".join(traceback.format_exception(*info)).rstrip()
        kwargs.pop("extra", None)
        self.logger.log(level, "%s", self.scrub(text), **kwargs)


class EquityStreamer(Component):
    """Streams one symbol's trades from a provider's websocket into a ``FeedSink``, reconnecting.

    ``async with streamer:`` streams (``run()``) until the block ends. The data's time
    (``data_ms``) is the stream's own (``stream_clock``: its trades' times, which no single
    frame can move, ahead of or behind the local clock, as a replay runs), the local clock's
    until the stream has told it; sessions and staleness are judged by it.
    ``on_gap`` is called whenever a connection ends (trades may be missing from then on).
    """

    # subclasses set ``provider`` and implement ``_login`` and ``handle_frame``; they may
    # override ``_connect_url`` (a key in the URL), ``_tend`` (keep-alives) and ``user_agent``

    provider = "equity"
    unit = "trade"  # what the counters and the stale message call a delivered trade
    user_agent = WEBSOCKETS_USER_AGENT

    def __init__(
        self,
        feed: str,
        symbol: str,
        sink: FeedSink,
        *,
        url: str,
        secrets: tuple[str, ...] = (),
        calendar: Sessions | None = None,
        stale_after: float | None = None,
        timeout: float = 30.0,
        healthy_after: float = 60.0,
        regular_hours_only: bool = False,
        backoff: Backoff | None = None,
        clock: Callable[[], float] = time.time,
    ):
        self.feed = feed
        self.symbol = symbol
        self.sink = sink
        self.url = url
        self.calendar = calendar
        self.stale_after = stale_after
        self.timeout = timeout
        self.healthy_after = healthy_after
        self.regular_hours_only = regular_hours_only
        self.backoff = backoff or Backoff(1.0, 60.0)
        self.clock = clock
        self._secrets = secrets
        self._log = RedactingLogger(
            logging.getLogger(f"moodring.feeds.{self.provider}"), self.redact
        )
        self._wire_log = RedactingLogger(logging.getLogger("websockets.client"), self.redact)
        checks = [1.0, timeout / 4]
        if stale_after is not None:
            checks.append(stale_after / 4)
        self._poll = max(0.005, min(checks))
        # Counters.
        self.ticks = 0
        self.bad_frames: Counter[str] = Counter()
        self.ignored: Counter[str] = Counter()
        self.server_errors = 0
        self.auth_failures = 0
        self.connects = 0
        self.reconnects = 0
        # State.
        self.state: FeedState | None = None
        self.stream_clock = StreamClock()
        self.on_gap: Callable[[], None] | None = None
        self._frame = 0  # frames read: the trades of one frame share its number
        self._told = False  # whether the stream has told its time
        self._lead_ms = 0  # how far the server's time ran ahead of the trades in session
        self._in_session = False
        self._session_start = -math.inf
        self._last_tick = -math.inf
        self._last_frame = -math.inf
        self._last_trade_ms = 0
        self._conn_ticks = 0

    @property
    def name(self) -> str:
        """Return what the logs call the streamer."""
        return f"{self.provider} {self.symbol}"

    async def _setup(self) -> None:
        self.spawn(self.run())

    def redact(self, text: str) -> str:
        """Return ``text`` with this feed's secrets (if it has any) blanked."""
        return redact(text, self._secrets)

    def counters(self) -> dict[str, Any]:
        """Return the feed's counters: trades, bad frames by reason, ignored, errors, reconnects."""
        return {
            f"{self.unit}s": self.ticks,
            "bad_frames": dict(self.bad_frames),
            "ignored": dict(self.ignored),
            "server_errors": self.server_errors,
            "auth_failures": self.auth_failures,
            "connects": self.connects,
            "reconnects": self.reconnects,
            "state": self.state,
        }

    async def run(self) -> None:
        """Stream until cancelled: connect, log in, subscribe, read; reconnect with backoff."""
        attempt = 0
        while True:
            if attempt:
                self.reconnects += 1
            attempt += 1
            try:
                reason = await self._connection()
            except asyncio.CancelledError:
                raise
            except InvalidStatus as exc:
                reason = self._refused(exc.response.status_code)
            except ConnectionClosed as exc:
                code = exc.rcvd.code if exc.rcvd is not None else "no close frame"
                reason = f"connection closed ({code})"
            except TimeoutError:
                reason = f"timed out after {self.timeout:g}s"
            except (OSError, WebSocketException) as exc:
                reason = f"{type(exc).__name__}: {exc}"
            except Exception as exc:
                self._log.exception("%s %s: unexpected error", self.provider, self.symbol)
                reason = f"{type(exc).__name__}: {exc}"
            self._refresh_state()
            if self.on_gap is not None:
                self.on_gap()
            delay = self.backoff.next()
            self._log.warning(
                "%s %s: %s; reconnecting in %.1fs", self.provider, self.symbol, reason, delay
            )
            await self._sleep(delay)

    def _refused(self, status: int) -> str:
        """Log a handshake the server refused; return the reason to reconnect with."""
        if status in _AUTH_STATUS and self._secrets:
            self.auth_failures += 1
            self._log.error(
                "%s %s: the server refused the API key (HTTP %d); check feeds.%s.api_key",
                self.provider,
                self.symbol,
                status,
                self.feed,
            )
            return f"API key refused (HTTP {status})"
        if status == 429:
            self._log.error(
                "%s %s: rate limited by the server (HTTP 429)", self.provider, self.symbol
            )
            return "rate limited (HTTP 429)"
        return f"handshake refused (HTTP {status})"

    def _server_error(self, message: str, *, auth: bool = False, hint: str = "") -> str:
        """Log an error message from the server; return the reason to reconnect with."""
        self.server_errors += 1
        if auth:
            self.auth_failures += 1
        text = self.redact(message)
        shown = f"{text} ({hint})" if hint else text
        self._log.error("%s %s: server error: %s", self.provider, self.symbol, shown)
        return f"server error: {text}"

    async def _sleep(self, delay: float) -> None:
        """Wait ``delay`` seconds, keeping the session state current meanwhile."""
        loop = asyncio.get_running_loop()
        until = loop.time() + delay
        while (left := until - loop.time()) > 0:
            await asyncio.sleep(min(left, self._poll))
            self._refresh_state()

    def _connect_url(self) -> str:
        """Return the URL to connect to (may carry a secret: never log it)."""
        return self.url

    async def _login(self, ws: ClientConnection) -> str | None:
        """Authenticate and subscribe; return why the connection must be given up, or None."""
        raise NotImplementedError

    def handle_frame(self, frame: str | bytes) -> str | None:
        """Take one frame; return why the connection must be given up, or None."""
        raise NotImplementedError

    async def _receive(self, ws: ClientConnection) -> str | bytes | None:
        """Return the next frame, or None when none came within the poll (none is waiting)."""
        for wait in (self._poll, 0.0):
            try:
                # not wait_for: on 3.11 it loses a cancel that comes as a frame arrives
                async with asyncio.timeout(wait):
                    return await ws.recv()
            except TimeoutError:
                # a frame may have come as the time ran out (the loop held up): a read that
                # need not wait takes it
                continue
        return None

    def _silence(self, now: float, start: float, in_session: bool) -> str | None:
        """Return why a connection with no frame waiting is given up for silence, or None."""
        if in_session and self.stale_after is not None:
            since = max(start, self._session_start, self._last_tick)
            if now - since >= self.stale_after:
                return f"stale, no {self.unit} for {now - since:.1f}s in session"
        return None

    async def _tend(self, ws: ClientConnection, now: float, in_session: bool) -> str | None:
        """Look after the connection between frames; return why to give it up, or None."""
        return None

    async def _connection(self) -> str:
        """Run one connection; return why it was given up (or raise what ended it)."""
        async with connect(
            self._connect_url(),
            open_timeout=self.timeout,
            close_timeout=min(5.0, self.timeout),
            user_agent_header=self.user_agent,
            logger=self._wire_log,
        ) as ws:
            self.connects += 1
            problem = await self._login(ws)
            if problem is not None:
                return problem
            self._log.info(
                "%s %s: connected to %s and subscribed", self.provider, self.symbol, self.url
            )
            return await self._read(ws)

    async def _read(self, ws: ClientConnection) -> str:
        """Read frames until the connection ends, the server objects, or it goes stale."""
        loop = asyncio.get_running_loop()
        start = self._last_frame = loop.time()
        self._conn_ticks = 0
        healthy = False
        # Silence is judged only once a read found no frame waiting: after the loop was held
        # up (a busy machine, a flood from another connection), frames may sit unread.
        idle = False
        while True:
            in_session = self._refresh_state(idle=idle)
            now = loop.time()
            if (
                not healthy
                and now - start >= self.healthy_after
                and (self._conn_ticks or not in_session)
            ):
                healthy = True
                self.backoff.reset()
            if idle:
                problem = self._silence(now, start, in_session)
                if problem is not None:
                    return problem
            problem = await self._tend(ws, now, in_session)
            if problem is not None:
                return problem
            frame = await self._receive(ws)
            idle = frame is None
            if frame is None:
                continue
            self._last_frame = loop.time()
            self._frame += 1
            problem = self.handle_frame(frame)
            if problem is not None:
                return problem

    def _json(self, frame: str | bytes) -> Any:
        """Decode a JSON text frame (FrameError when it is not)."""
        text = frame_text(frame)
        try:
            return json.loads(text)
        except ValueError as exc:
            raise FrameError("json", str(exc)) from exc

    def _trade(self, t_ms: object, price: object, amount: object, trade_id: object) -> str | None:
        """Check a trade and pass it on; return why it was refused, or None."""
        reference = max(int(self.clock() * 1000), self._last_trade_ms)
        problem = trade_problem(t_ms, price, amount, reference)
        if problem is None and (isinstance(price, bool) or isinstance(amount, bool)):
            problem = "bad number"
        if problem is not None:
            return problem
        size = float(cast(float, amount))
        self._deliver(cast(int, t_ms), float(cast(float, price)), size, trade_id)
        return None

    def data_ms(self) -> int:
        """Return the data's time: the stream's own, the local clock's until the stream told it."""
        told = self.stream_clock.time()
        return int(self.clock() * 1000) if told is None else told

    def _server_time(self, t_ms: int) -> None:
        """Take the server's time from a keep-alive: it moves the clock through closed hours.

        In session only trades move the clock, and the keep-alives measure by how much the
        server's time leads them (a delayed quote); outside sessions a keep-alive moves the
        clock to its time less that lead. So the data's time passes closes, nights and
        holidays without a trade, and never ends a delayed stream's session early.
        """
        if self.calendar is None:
            return
        if self.calendar.is_open(t_ms):
            if self._last_trade_ms:
                self._lead_ms = max(0, t_ms - self._last_trade_ms)
            return
        self.stream_clock.note(t_ms - self._lead_ms, self._frame)

    def _deliver(self, t_ms: int, price: float, size: float, trade_id: object) -> None:
        """Count a checked trade and pass it on, unless it is outside a session we keep to."""
        self.stream_clock.note(t_ms, self._frame)
        if (
            self.regular_hours_only
            and self.calendar is not None
            and not self.calendar.is_open(t_ms)
        ):
            self.ignored["outside session"] += 1
            return
        self.ticks += 1
        self._conn_ticks += 1
        self._last_tick = asyncio.get_running_loop().time()
        self._last_trade_ms = max(self._last_trade_ms, t_ms)
        if self.calendar is None or self._in_session:
            self._set_state("ok")
        self.sink.trade(self.feed, t_ms, price, size, trade_id)

    def _bad(self, reason: str, detail: str, frame: object) -> None:
        """Count and report a skipped frame (or one item of it)."""
        self.bad_frames[reason] += 1
        shown = self.redact(repr(frame)[:160])
        self._log.debug(
            "%s %s: bad frame (%s: %s) %s", self.provider, self.symbol, reason, detail, shown
        )
        self.sink.bad_frame(self.feed, reason, f"{detail} | {shown}" if detail else shown)

    def _refresh_state(self, *, idle: bool = True) -> bool:
        """Re-evaluate session (by the data's time) and staleness; return True in session.

        Silence is measured in the local clock's seconds: in session the data's time moves
        as the local clock does between trades, so a silent replay goes stale as a live
        stream does, and one running fast through the night does not. Staleness is judged
        only when ``idle`` (no frame waiting to be read).
        """
        now_ms = self.data_ms()
        told = self.stream_clock.time() is not None
        if told != self._told:  # the local clock's time gave way to the stream's
            self._told, self._in_session = told, False
        in_session = self.calendar is None or self.calendar.is_open(now_ms)
        if in_session and not self._in_session:
            self._session_start = asyncio.get_running_loop().time()
        self._in_session = in_session
        if not in_session:
            self._set_state("closed", now_ms)
        elif idle and self.stale_after is not None:
            since = max(self._session_start, self._last_tick)
            if asyncio.get_running_loop().time() - since >= self.stale_after:
                self._set_state("stale", now_ms)
        return in_session

    def _set_state(self, state: FeedState, now_ms: int | None = None) -> None:
        """Report a change of the feed's health."""
        if state == self.state:
            return
        self.state = state
        t_ms = self.data_ms() if now_ms is None else now_ms
        self._log.info("%s %s: state %s", self.provider, self.symbol, state)
        self.sink.state(self.feed, state, t_ms)
