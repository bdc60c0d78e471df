"""Yahoo Finance equity feed: the streamer websocket (protobuf ticks) and chart-API history.

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
import re
import struct
from dataclasses import dataclass, fields
from datetime import UTC, date, datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any
from urllib.parse import quote
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
from websockets.asyncio.client import ClientConnection

from moodring.feeds.base import FeedSink
from moodring.feeds.streamer import EquityStreamer, FrameError, StreamerOptions, frame_text
from moodring.market.frame import BarFrame

if TYPE_CHECKING:
    from typing_extensions import Unpack

log = logging.getLogger("moodring.feeds.yahoo")

STREAMER_URL = "wss://streamer.finance.yahoo.com/?version=2"
CHART_BASE_URL = "https://query2.finance.yahoo.com"
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
        await asyncio.wait_for(ws.send(self._subscribe), self.timeout)
        self._last_sub = asyncio.get_running_loop().time()
        return None

    async def _tend(self, ws: ClientConnection, now: float, in_session: bool) -> str | None:
        """Give up a connection silent for ``timeout`` in session; resubscribe as a keep-alive."""
        if in_session and now - max(self._last_frame, self._session_start) >= self.timeout:
            return f"no frame for {self.timeout:g}s in session"
        if now - self._last_sub >= self.resubscribe_every:
            await asyncio.wait_for(ws.send(self._subscribe), self.timeout)
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


# --- chart API history --------------------------------------------------------------------


class HistoryError(RuntimeError):
    """The chart API gave no usable bars for a symbol."""

    def __init__(self, symbol: str, status: int | None, message: str):
        where = f"HTTP {status}" if status is not None else "no HTTP status"
        super().__init__(f"Yahoo chart history for {symbol!r} failed ({where}): {message}")
        self.symbol = symbol
        self.status = status
        self.message = message


_DAILY_INTERVALS = {"1d", "5d", "1wk", "1mo", "3mo"}
_INTERVAL = re.compile(r"^(\d+)([mh])$")


def _exchange_tz(meta: dict[str, Any]) -> timezone | ZoneInfo:
    """Return the exchange time zone named in the chart meta (gmtoffset as a fallback)."""
    name = meta.get("exchangeTimezoneName")
    if isinstance(name, str) and name:
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    offset = meta.get("gmtoffset")
    return timezone(timedelta(seconds=int(offset))) if isinstance(offset, int | float) else UTC


def parse_chart(symbol: str, body: Any, interval: str = "1d") -> BarFrame:
    """Turn a ``/v8/finance/chart`` JSON body into bars (daily bars stamped at UTC midnight)."""
    try:
        chart = body["chart"]
        error = chart.get("error")
        if error:
            raise HistoryError(symbol, 200, _describe(error))
        result = chart["result"][0]
        meta = result.get("meta") or {}
        stamps = result.get("timestamp") or []
        quote_cols = result["indicators"]["quote"][0] if stamps else {}
    except HistoryError:
        raise
    except (KeyError, IndexError, TypeError, AttributeError) as exc:
        raise HistoryError(symbol, 200, f"unexpected chart JSON ({exc!r})") from exc

    def column(name: str) -> list[Any]:
        values = quote_cols.get(name) or []
        if len(values) != len(stamps):
            raise HistoryError(
                symbol, 200, f"{name} has {len(values)} values for {len(stamps)} timestamps"
            )
        return values

    opens, highs, lows = column("open"), column("high"), column("low")
    closes, volumes = column("close"), column("volume")
    tz = _exchange_tz(meta)
    daily = interval in _DAILY_INTERVALS
    step_ms = None if daily else _interval_ms(interval)
    periods = [] if daily else _regular_periods(meta)
    rows: dict[int, tuple[float, float, float, float, float]] = {}
    last_ms: int | None = None
    for i, stamp in enumerate(stamps):
        close = closes[i]
        if stamp is None or close is None:
            continue
        c = float(close)
        o = float(opens[i]) if opens[i] is not None else c
        h = float(highs[i]) if highs[i] is not None else max(o, c)
        lo = float(lows[i]) if lows[i] is not None else min(o, c)
        v = float(volumes[i]) if volumes[i] is not None else 0.0
        if daily:
            day = datetime.fromtimestamp(stamp, tz).date()
            t_ms = int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()) * 1000
            rows[t_ms] = (o, h, lo, c, v)  # a later row for the same day wins (the live bar)
            continue
        t_ms = int(stamp) * 1000
        if last_ms is not None and (
            (step_ms is not None and t_ms < last_ms + step_ms)
            or (periods and not any(a <= t_ms < b for a, b in periods))
        ):
            # Yahoo's last row: the last trade inside the forming bar, or the closing print
            # stamped at the session's end; either updates the bar before it
            po, ph, pl, _, pv = rows[last_ms]
            rows[last_ms] = (po, max(ph, h), min(pl, lo), c, pv + v)
            continue
        rows[t_ms] = (o, h, lo, c, v)
        last_ms = t_ms
    times = np.array(sorted(rows), dtype=np.int64)
    cols = np.array([rows[t] for t in times.tolist()], dtype=np.float64).reshape(-1, 5)
    return BarFrame(
        times,
        cols[:, 0].copy(),
        cols[:, 1].copy(),
        cols[:, 2].copy(),
        cols[:, 3].copy(),
        cols[:, 4].copy(),
    )


def _interval_ms(interval: str) -> int | None:
    """Return the length of an intraday chart interval (``5m``, ``60m``, ``1h``) in ms."""
    match = _INTERVAL.match(interval)
    if match is None:
        return None
    return int(match.group(1)) * (60_000 if match.group(2) == "m" else 3_600_000)


def _regular_periods(meta: dict[str, Any]) -> list[tuple[int, int]]:
    """Return the regular sessions (epoch ms) the chart meta lists in ``tradingPeriods``."""
    listed = meta.get("tradingPeriods")
    if isinstance(listed, dict):  # includePrePost=true nests them under "regular"
        listed = listed.get("regular")
    periods: list[tuple[int, int]] = []
    for day in listed if isinstance(listed, list) else []:
        for period in day if isinstance(day, list) else [day]:
            if isinstance(period, dict):
                start, end = period.get("start"), period.get("end")
                if isinstance(start, int) and isinstance(end, int):
                    periods.append((start * 1000, end * 1000))
    return periods


def _describe(error: Any) -> str:
    """Return a one-line description of a chart API error object."""
    if isinstance(error, dict):
        code, text = error.get("code"), error.get("description")
        return ": ".join(str(x) for x in (code, text) if x) or json.dumps(error)
    return str(error)


async def fetch_history(
    symbol: str,
    interval: str = "1d",
    range_: str = "6mo",
    *,
    base_url: str = CHART_BASE_URL,
    timeout: float = 30.0,
) -> BarFrame:
    """Fetch bars from Yahoo's chart API (``/v8/finance/chart/{symbol}``) as a BarFrame."""
    import aiohttp

    url = f"{base_url.rstrip('/')}/v8/finance/chart/{quote(symbol, safe='')}"
    params = {"interval": interval, "range": range_, "includePrePost": "false"}
    headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session,
            session.get(url, params=params, headers=headers) as response,
        ):
            text = await response.text()
            status = response.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise HistoryError(symbol, None, f"{type(exc).__name__}: {exc}") from exc
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    if status != 200:
        detail = text.strip()[:200] or "empty body"
        if isinstance(body, dict) and isinstance(body.get("chart"), dict):
            detail = _describe(body["chart"].get("error")) or detail
        raise HistoryError(symbol, status, detail)
    if body is None:
        raise HistoryError(symbol, status, f"response is not JSON: {text[:200]!r}")
    frame = parse_chart(symbol, body, interval)
    log.info("yahoo %s: fetched %d %s bars (%s)", symbol, len(frame), interval, range_)
    return frame
