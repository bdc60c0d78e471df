"""Yahoo Finance's streamer websocket: protobuf ticks of one symbol.

The streamer speaks the protocol yfinance's ``WebSocket`` uses: send
``{"subscribe": [symbols]}`` (repeated every 15 s as a keep-alive), receive JSON text frames
``{"message": <base64 PricingData>}``. ``PricingData`` is decoded here with a small protobuf
wire-format reader, so neither yfinance nor the protobuf package is needed.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import math
import struct
from dataclasses import dataclass, fields
from datetime import date, datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from websockets.asyncio.client import ClientConnection

from moodring.feeds.base import FeedSink
from moodring.feeds.streamer import EquityStreamer, FrameError, StreamerOptions, frame_text

if TYPE_CHECKING:
    from typing_extensions import Unpack

log = logging.getLogger("moodring.feeds.yahoo")

STREAMER_URL = "wss://streamer.finance.yahoo.com/?version=2"
USER_AGENT = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"
)
# Ticks stamped before 1973-03-03 are taken as seconds or garbage, never as epoch ms.
MIN_TIME_MS = 100_000_000_000

# --- protobuf wire format -----------------------------------------------------------------

_VARINT, _FIXED64, _LEN, _FIXED32 = 0, 1, 2, 5
_U64 = (1 << 64) - 1
_STR, _F32, _F64, _S64, _I32 = "string", "float", "double", "sint64", "int32"
_WIRE_OF = {_STR: _LEN, _F32: _FIXED32, _F64: _FIXED64, _S64: _VARINT, _I32: _VARINT}
_FLOAT = struct.Struct("<f")
_DOUBLE = struct.Struct("<d")

# Field numbers and types of yfinance's pricing.proto (message PricingData, proto3).
PRICING_FIELDS: dict[int, tuple[str, str]] = {
    1: ("id", _STR),
    2: ("price", _F32),
    3: ("time", _S64),
    4: ("currency", _STR),
    5: ("exchange", _STR),
    6: ("quote_type", _I32),
    7: ("market_hours", _I32),
    8: ("change_percent", _F32),
    9: ("day_volume", _S64),
    10: ("day_high", _F32),
    11: ("day_low", _F32),
    12: ("change", _F32),
    13: ("short_name", _STR),
    14: ("expire_date", _S64),
    15: ("open_price", _F32),
    16: ("previous_close", _F32),
    17: ("strike_price", _F32),
    18: ("underlying_symbol", _STR),
    19: ("open_interest", _S64),
    20: ("options_type", _S64),
    21: ("mini_option", _S64),
    22: ("last_size", _S64),
    23: ("bid", _F32),
    24: ("bid_size", _S64),
    25: ("ask", _F32),
    26: ("ask_size", _S64),
    27: ("price_hint", _S64),
    28: ("vol_24hr", _S64),
    29: ("vol_all_currencies", _S64),
    30: ("from_currency", _STR),
    31: ("last_market", _STR),
    32: ("circulating_supply", _F64),
    33: ("market_cap", _F64),
}

# PricingData.MarketHours and the QuoteType values seen on index and equity streams.
PRE_MARKET, REGULAR_MARKET, POST_MARKET, EXTENDED_HOURS_MARKET = 0, 1, 2, 3
QUOTE_HEARTBEAT, QUOTE_EQUITY, QUOTE_INDEX, QUOTE_ETF = 7, 8, 9, 20


@dataclass(frozen=True, slots=True)
class PricingTick:
    """One decoded ``PricingData`` message (proto3 defaults for absent fields)."""

    id: str = ""
    price: float = 0.0
    time_ms: int = 0
    day_volume: int = 0
    market_hours: int = 0
    change_percent: float = 0.0
    day_high: float = 0.0
    day_low: float = 0.0
    quote_type: int = 0
    currency: str = ""
    exchange: str = ""
    change: float = 0.0
    short_name: str = ""
    open_price: float = 0.0
    previous_close: float = 0.0
    last_size: int = 0
    bid: float = 0.0
    ask: float = 0.0
    price_hint: int = 0
    market_cap: float = 0.0


_TICK_FIELDS = frozenset(f.name for f in fields(PricingTick))


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    """Return (unsigned 64-bit value, next position) of the varint at ``pos``."""
    result = 0
    shift = 0
    end = len(buf)
    while True:
        if pos >= end:
            raise FrameError("truncated", f"varint runs past the end at byte {pos}")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result & _U64, pos
        shift += 7
        if shift >= 70:
            raise FrameError("protobuf", f"varint longer than 10 bytes before byte {pos}")


def _zigzag(value: int) -> int:
    """Decode a zigzag-encoded sint64."""
    return (value >> 1) ^ -(value & 1)


def _int32(value: int) -> int:
    """Return the signed int32 held in the low 32 bits of a varint."""
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


def _b64(payload: str | bytes) -> bytes:
    """Decode standard base64, tolerating whitespace and missing padding."""
    if isinstance(payload, str):
        try:
            raw = payload.encode("ascii")
        except UnicodeEncodeError as exc:
            raise FrameError("base64", "non-ASCII characters") from exc
    else:
        raw = bytes(payload)
    raw = b"".join(raw.split())
    if len(raw) % 4:
        raw += b"=" * (-len(raw) % 4)
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise FrameError("base64", str(exc)) from exc


def parse_pricing(buf: bytes) -> dict[str, Any]:
    """Parse raw ``PricingData`` bytes into {field name: value}; unknown fields are skipped."""
    out: dict[str, Any] = {}
    pos = 0
    end = len(buf)
    while pos < end:
        key, pos = _read_varint(buf, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise FrameError("protobuf", f"field number 0 at byte {pos}")
        spec = PRICING_FIELDS.get(number)
        if spec is not None and wire != _WIRE_OF[spec[1]]:
            raise FrameError(
                "wire_type",
                f"field {number} ({spec[0]}) has wire type {wire}, expected a {spec[1]}",
            )
        if wire == _VARINT:
            value, pos = _read_varint(buf, pos)
            if spec is not None:
                out[spec[0]] = _zigzag(value) if spec[1] == _S64 else _int32(value)
        elif wire == _FIXED64:
            if pos + 8 > end:
                raise FrameError("truncated", f"fixed64 field {number} runs past the end")
            if spec is not None:
                out[spec[0]] = _DOUBLE.unpack_from(buf, pos)[0]
            pos += 8
        elif wire == _LEN:
            size, pos = _read_varint(buf, pos)
            if pos + size > end:
                raise FrameError(
                    "truncated", f"field {number} wants {size} bytes, {end - pos} left"
                )
            if spec is not None:
                try:
                    out[spec[0]] = buf[pos : pos + size].decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise FrameError("utf8", f"field {number} ({spec[0]}): {exc}") from exc
            pos += size
        elif wire == _FIXED32:
            if pos + 4 > end:
                raise FrameError("truncated", f"fixed32 field {number} runs past the end")
            if spec is not None:
                out[spec[0]] = _FLOAT.unpack_from(buf, pos)[0]
            pos += 4
        else:
            raise FrameError("wire_type", f"unsupported wire type {wire} for field {number}")
    return out


def decode_pricing(payload: str | bytes) -> PricingTick:
    """Decode one base64 ``PricingData`` message (the streamer's ``message``) into a tick."""
    parsed = parse_pricing(_b64(payload))
    parsed["time_ms"] = parsed.pop("time", 0)
    return PricingTick(**{k: v for k, v in parsed.items() if k in _TICK_FIELDS})


def frame_payload(frame: str | bytes) -> str | None:
    """Return the base64 of a ``{"message": ...}`` or bare base64 frame; None if it has none."""
    text = frame_text(frame).strip()
    if not text.startswith(("{", "[")):
        return text
    try:
        obj = json.loads(text)
    except ValueError as exc:
        raise FrameError("json", str(exc)) from exc
    if not isinstance(obj, dict):
        raise FrameError("json", f"expected an object, got {type(obj).__name__}")
    message = obj.get("message")
    if message is None:
        return None
    if not isinstance(message, str):
        raise FrameError("json", f"'message' is a {type(message).__name__}, not a string")
    return message


# --- the streamer -------------------------------------------------------------------------


class YahooStreamer(EquityStreamer):
    """Streams one symbol's ticks from Yahoo's websocket into a ``FeedSink``, reconnecting."""

    provider = "yahoo"
    unit = "tick"
    user_agent = USER_AGENT

    def __init__(
        self,
        feed: str,
        symbol: str,
        sink: FeedSink,
        *,
        url: str = STREAMER_URL,
        resubscribe_every: float = 15.0,
        tz: str = "America/New_York",
        **options: Unpack[StreamerOptions],
    ):
        super().__init__(feed, symbol, sink, url=url, **options)
        self.resubscribe_every = resubscribe_every
        self.tz = ZoneInfo(tz)
        self._subscribe = json.dumps({"subscribe": [symbol]})
        self._last_sub = -math.inf
        self._vol_day: date | None = None
        self._vol_mark = 0

    async def _login(self, ws: ClientConnection) -> str | None:
        """Subscribe to the symbol (Yahoo needs no key and sends no acknowledgement)."""
        async with asyncio.timeout(self.timeout):
            await ws.send(self._subscribe)
        self._last_sub = asyncio.get_running_loop().time()
        return None

    def _silence(self, now: float, start: float, in_session: bool) -> str | None:
        """Give up a connection stale, or silent for ``timeout``, in session."""
        problem = super()._silence(now, start, in_session)
        silent = now - max(self._last_frame, self._session_start)
        if problem is None and in_session and silent >= self.timeout:
            return f"no frame for {self.timeout:g}s in session"
        return problem

    async def _tend(self, ws: ClientConnection, now: float, in_session: bool) -> str | None:
        """Resubscribe now and then as a keep-alive."""
        if now - self._last_sub >= self.resubscribe_every:
            async with asyncio.timeout(self.timeout):
                await ws.send(self._subscribe)
            self._last_sub = now
        return None

    def handle_frame(self, frame: str | bytes) -> None:
        """Decode one frame and pass a valid tick of our symbol on to the sink."""
        try:
            payload = frame_payload(frame)
            if payload is None:
                self.ignored["control"] += 1
                return
            tick = decode_pricing(payload)
        except FrameError as exc:
            self._bad(exc.reason, exc.detail, frame)
            return
        if tick.quote_type == QUOTE_HEARTBEAT:  # Yahoo's keep-alive: an id and a time, no price
            self.ignored["control"] += 1
            if tick.time_ms >= MIN_TIME_MS:
                self._server_time(tick.time_ms)
            return
        if tick.id != self.symbol:
            self.ignored["symbol"] += 1
            return
        if not math.isfinite(tick.price) or tick.price <= 0:
            self._bad("price", f"price {tick.price!r} at {tick.time_ms}", frame)
            return
        if tick.time_ms < MIN_TIME_MS:
            self._bad("time", f"time {tick.time_ms} is not epoch milliseconds", frame)
            return
        volume = self._volume_delta(tick)
        self._deliver(tick.time_ms, float(tick.price), volume, None)

    def _volume_delta(self, tick: PricingTick) -> float:
        """Return the rise of the cumulative day volume since the last tick of the same day."""
        day = datetime.fromtimestamp(tick.time_ms / 1000, self.tz).date()
        volume = max(0, tick.day_volume)
        if self._vol_day is None or day > self._vol_day:
            self._vol_day = day
            self._vol_mark = volume
            return 0.0
        if day < self._vol_day or volume <= self._vol_mark:
            return 0.0
        delta = volume - self._vol_mark
        self._vol_mark = volume
        return float(delta)
