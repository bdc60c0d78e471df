"""Yahoo's streamer frames encoded independently, a recording feed sink, a stub calendar."""

from __future__ import annotations

import base64
import struct
from typing import Any

from moodring.backoff import Backoff

# --- an independent protobuf encoder, written from yfinance's pricing.proto ----------------

MASK64 = (1 << 64) - 1
# name: (field number, proto type), as in `message PricingData`.
PROTO = {
    "id": (1, "string"),
    "price": (2, "float"),
    "time": (3, "sint64"),
    "currency": (4, "string"),
    "exchange": (5, "string"),
    "quote_type": (6, "int32"),
    "market_hours": (7, "int32"),
    "change_percent": (8, "float"),
    "day_volume": (9, "sint64"),
    "day_high": (10, "float"),
    "day_low": (11, "float"),
    "change": (12, "float"),
    "short_name": (13, "string"),
    "open_price": (15, "float"),
    "previous_close": (16, "float"),
    "last_size": (22, "sint64"),
    "price_hint": (27, "sint64"),
    "market_cap": (33, "double"),
}


def varint(n: int) -> bytes:
    n &= MASK64
    out = bytearray()
    while True:
        low = n & 0x7F
        n >>= 7
        if n:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def tag(number: int, wire: int) -> bytes:
    return varint(number << 3 | wire)


def field(number: int, kind: str, value: Any) -> bytes:
    if kind == "string":
        raw = value.encode() if isinstance(value, str) else value
        return tag(number, 2) + varint(len(raw)) + raw
    if kind == "float":
        return tag(number, 5) + struct.pack("<f", value)
    if kind == "double":
        return tag(number, 1) + struct.pack("<d", value)
    if kind == "sint64":
        return tag(number, 0) + varint((value << 1) ^ (value >> 63))
    if kind == "int32":  # negative int32 is sign-extended to ten bytes
        return tag(number, 0) + varint(value)
    raise AssertionError(kind)


def pricing(**values: Any) -> bytes:
    return b"".join(field(*PROTO[name], value) for name, value in values.items())


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def f32(x: float) -> float:
    return struct.unpack("<f", struct.pack("<f", x))[0]


RUT_FIELDS: dict[str, Any] = {
    "id": "^RUT",
    "price": 2663.78,
    "time": 1771621200000,  # 2026-02-20T21:00:00Z
    "currency": "USD",
    "exchange": "WCB",
    "quote_type": 9,  # INDEX
    "market_hours": 1,  # REGULAR_MARKET
    "change_percent": -0.0491,
    "day_volume": 5432480000,
    "day_high": 2682.42,
    "day_low": 2642.07,
    "change": -1.31,
    "short_name": "Russell 2000",
    "open_price": 2660.29,
    "previous_close": 2665.09,
    "price_hint": 2,
}


class RecordingSink:
    def __init__(self) -> None:
        self.trades: list[tuple[str, int, float, float]] = []
        self.states: list[str] = []
        self.state_times: list[int] = []
        self.bad: list[tuple[str, str]] = []

    def trade(self, feed: str, t_ms: int, price: float, amount: float, trade_id: object) -> None:
        assert trade_id is None
        self.trades.append((feed, t_ms, price, amount))

    def candle(self, feed: str, bar: Any, *, closed: bool, length_ms: int) -> None:
        raise AssertionError("the streamer sends no candles")

    def state(self, feed: str, state: str, t_ms: int) -> None:
        self.states.append(state)
        self.state_times.append(t_ms)

    def bad_frame(self, feed: str, reason: str, detail: str) -> None:
        self.bad.append((reason, detail))


class StubCalendar:
    """A calendar whose session is switched by the test, independent of today's date."""

    def __init__(self, is_open: bool) -> None:
        self.open = is_open

    def is_open(self, t_ms: int) -> bool:
        return self.open


def fast_backoff() -> Backoff:
    return Backoff(0.01, 0.05)
