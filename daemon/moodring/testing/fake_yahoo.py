"""A local fake Yahoo Finance: the streamer websocket and the chart API, replaying bars as ticks.

One ``websockets`` server on 127.0.0.1 answers both:

- the streamer websocket (``ws://127.0.0.1:PORT/?version=2``): a client sends
  ``{"subscribe": [symbols]}`` (again every 15 s as a keep-alive; ``{"unsubscribe": [...]}``
  drops symbols) and receives text frames ``{"type":"pricing","message":<base64 PricingData>}``
  encoded with the field numbers and wire types of Yahoo's ``PricingData`` (``encode_pricing``
  reproduces a real frame byte for byte). Ticks carry the data's own timestamps, a cumulative
  ``day_volume`` that restarts each session, the day's open, high and low, the previous close
  and the change from it. Heartbeats are ``PricingData`` messages of quote type HEARTBEAT
  (7), the type Yahoo's clients skip, holding the symbol and the replay clock (never past
  a tick still to be sent: a replay that lags its clock does not stamp them ahead of its
  ticks), sent every ``heartbeat_every`` seconds to every subscriber.
- the chart API (``GET /v8/finance/chart/SYMBOL?interval=...&range=...`` or
  ``&period1=...&period2=...``, epoch seconds): the same bars up to the replay clock, with
  Yahoo's ``meta`` (``exchangeTimezoneName``, ``gmtoffset``, ``currentTradingPeriod``,
  ``tradingPeriods`` for intraday intervals, ``regularMarketPrice``/``Time`` ...). Intraday
  bars are aligned to the session open (60m bars open at 09:30, 10:30 ...), daily bars are
  stamped at the 09:30 open; the bar forming at the clock holds the ticks sent so far, and,
  like Yahoo, intraday answers end with a zero-volume "live" row at the last trade time (at
  the close once the session is over). Intervals finer than the input bars are built from
  the ticks, coarser ones from the bars. An unknown symbol gets Yahoo's 404.

Ticks are synthesised from each bar, only inside the NYSE session of its day (holidays get
none, half days end at 13:00): evenly spaced every ``tick_every`` seconds (at least four per
bar), the open first, then the low and the high (the high first on a falling bar) at a third
and two thirds of the bar, the close last, in straight lines between them; the bar's volume
is spread evenly over its ticks. Daily input bars span their whole session; intraday input
bars outside a session are left out. Prices travel as float32, as on Yahoo's wire: give
float32-exact prices (``equity_bars.session_bars`` makes them) for ticks equal to the bars.

The replay clock is the data's time: it starts at ``start`` (default: the first tick) when
the first client subscribes, and runs at ``speed`` times real time (0: as fast as the
clients read). ``loop`` replays the data again on the session days that follow it, and
again; ``skip_closed`` jumps the clock from a close to the next open.

Run it: ``python -m moodring.testing.fake_yahoo --bars SYMBOL=CSV [--bars SYMBOL=CSV ...]
[--speed X] [--start ISO-TIME] [--loop] [--skip-closed] [--tick-every S] [--port N]``.
The first stdout line is the port, the second ``ws_url=URL rest_url=URL``: the
``feeds.<name>.ws_url`` and ``rest_url`` of a ``source: yahoo`` feed. SIGUSR1 pauses the
stream (sockets stay open), SIGUSR2 resumes it.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import calendar as monthcal
import contextlib
import email.utils
import heapq
import http
import json
import logging
import math
import re
import struct
import sys
import time
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import numpy as np
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from moodring.backtest.csvfile import CsvError, load_csv
from moodring.feeds.yahoo.stream import (
    PRICING_FIELDS,
    QUOTE_EQUITY,
    QUOTE_ETF,
    QUOTE_HEARTBEAT,
    QUOTE_INDEX,
    REGULAR_MARKET,
)
from moodring.market.calendar import MarketCalendar
from moodring.market.frame import BarFrame
from moodring.testing.equity_bars import bar_length_ms
from moodring.testing.serving import serve_until_signalled

__all__ = ["FakeYahoo", "SessionTicks", "encode_pricing", "load_bars", "main", "pricing_frame"]

log = logging.getLogger("moodring.testing.fake_yahoo")

_DAY_MS = 86_400_000
_DUMPS = json.JSONEncoder(separators=(",", ":")).encode
# Intraday chart intervals, aligned to the session open; "1d", "1wk", "1mo" group sessions.
_MINUTES = {"1m": 1, "2m": 2, "5m": 5, "15m": 15, "30m": 30, "60m": 60, "90m": 90, "1h": 60}
_INTRADAY_MS = {name: minutes * 60_000 for name, minutes in _MINUTES.items()}
_PERIODS = ("1d", "1wk", "1mo")
_YAHOO_INTERVALS = "[1m, 2m, 5m, 15m, 30m, 60m, 90m, 1h, 4h, 1d, 5d, 1wk, 1mo, 3mo]"
_VALID_RANGES = ["1d", "5d", "1mo", "3mo", "6mo", "1y", "2y", "5y", "10y", "ytd", "max"]
_RANGE = re.compile(r"^(\d+)(d|wk|mo|y)$")
_PRE_OPEN_H, _POST_CLOSE_H = 5.5, 4  # pre-market from 04:00; post-market for 4 h
_YIELD_EVERY = 64  # at speed 0 the replay yields to the event loop this often

# --- protobuf encoding --------------------------------------------------------------------

_U64 = (1 << 64) - 1
_WIRE = {"string": 2, "float": 5, "double": 1, "sint64": 0, "int32": 0}
_FIELD_NAMES = frozenset(name for name, _ in PRICING_FIELDS.values())


def _varint(value: int) -> bytes:
    """Encode an integer as a protobuf varint (negatives as their 64-bit two's complement)."""
    value &= _U64
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def encode_pricing(values: Mapping[str, Any]) -> bytes:
    """Encode ``{field: value}`` (the names ``parse_pricing`` gives) as ``PricingData`` bytes."""
    # field-number order and proto3 defaults (0, 0.0, "") left out, as Yahoo's encoder does
    unknown = set(values) - _FIELD_NAMES
    if unknown:
        raise KeyError(f"not a PricingData field: {', '.join(sorted(unknown))}")
    out = bytearray()
    for number, (name, kind) in sorted(PRICING_FIELDS.items()):
        value = values.get(name)
        if value is None or value == 0 or value == "":
            continue
        out += _varint(number << 3 | _WIRE[kind])
        if kind == "string":
            raw = str(value).encode("utf-8")
            out += _varint(len(raw)) + raw
        elif kind == "float":
            out += struct.pack("<f", value)
        elif kind == "double":
            out += struct.pack("<d", value)
        elif kind == "sint64":
            number_value = int(value)
            out += _varint((number_value << 1) ^ (number_value >> 63))
        else:  # int32: a negative one is sign-extended to ten bytes
            out += _varint(int(value))
    return bytes(out)


def pricing_frame(values: Mapping[str, Any]) -> str:
    """Return the streamer's text frame for one ``PricingData`` message."""
    message = base64.b64encode(encode_pricing(values)).decode("ascii")
    return _DUMPS({"type": "pricing", "message": message})


# --- the bars, by session -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _About:
    """What Yahoo says about a symbol."""

    exchange: str
    full_exchange: str
    instrument: str
    quote_type: int
    name: str


def _about(symbol: str) -> _About:
    """Describe a symbol as Yahoo does (the two Russell 2000 symbols exactly, others plainly)."""
    if symbol == "^RUT":
        return _About("WCB", "Chicago Options", "INDEX", QUOTE_INDEX, "Russell 2000")
    if symbol == "IWM":
        return _About("PCX", "NYSEArca", "ETF", QUOTE_ETF, "iShares Russell 2000 ETF")
    if symbol.startswith("^"):
        return _About("SNP", "SNP", "INDEX", QUOTE_INDEX, symbol)
    return _About("NYQ", "NYSE", "EQUITY", QUOTE_EQUITY, symbol)


@dataclass(frozen=True, slots=True)
class _Session:
    """One session of the input: its day, bounds and rows of the kept bars."""

    day: date
    open_ms: int
    close_ms: int
    lo: int
    hi: int


@dataclass(frozen=True, slots=True)
class _Placed:
    """A session's bars placed on a calendar day (a loop pass moves them to later days)."""

    day: date
    open_ms: int
    close_ms: int
    time: np.ndarray
    end: np.ndarray
    bars: BarFrame


@dataclass(frozen=True, slots=True)
class SessionTicks:
    """The ticks of one session of one symbol, as the streamer sends them."""

    symbol: str
    day: date
    open_ms: int
    close_ms: int
    times: np.ndarray  # epoch ms
    prices: np.ndarray  # float32 values, as float64
    volumes: np.ndarray  # cumulative day volume (int64)
    day_high: np.ndarray
    day_low: np.ndarray
    bar_starts: np.ndarray  # index of each bar's first tick, then the tick count
    previous_close: float

    def upto(self, t_ms: int) -> int:
        """Return how many ticks are stamped at or before ``t_ms``."""
        return int(np.searchsorted(self.times, t_ms, "right"))


def _bar_ticks(
    start: int, length: int, bar: tuple[float, float, float, float], tick_ms: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return a bar's tick times, prices and volume fractions (0 at the first, 1 at the last)."""
    o, h, low, c = bar
    n = max(4, math.ceil(length / tick_ms))
    k = np.arange(n, dtype=np.int64)
    times = start + (k * length) // n
    first, second = (low, h) if c >= o else (h, low)
    anchors = [0, round((n - 1) / 3), round(2 * (n - 1) / 3), n - 1]
    prices = np.interp(k, anchors, [o, first, second, c])
    return times, prices.astype(np.float32).astype(np.float64), k / (n - 1)


class _Listing:
    """One symbol's bars grouped into NYSE sessions, their ticks and their chart rows."""

    def __init__(
        self,
        symbol: str,
        bars: BarFrame,
        calendar: MarketCalendar,
        tick_ms: int,
        loop: bool,
    ) -> None:
        self.symbol = symbol
        self.about = _about(symbol)
        self.calendar = calendar
        self.tick_ms = tick_ms
        self.loop = loop
        times = bars.time
        if len(bars) == 0:
            raise ValueError(f"{symbol}: no bars")
        self.daily = not np.any(times % _DAY_MS) and (
            len(bars) == 1 or int(np.diff(times).min()) >= _DAY_MS
        )
        if not self.daily and len(bars) < 2:
            raise ValueError(f"{symbol}: one intraday bar does not tell the bar length")
        self.length_ms = 0 if self.daily else bar_length_ms(times)
        keep: list[int] = []
        sessions: list[_Session] = []
        for row, t_ms in enumerate(times.tolist()):
            day = (
                datetime.fromtimestamp(t_ms / 1000, UTC).date()
                if self.daily
                else calendar.local_date(t_ms)
            )
            bounds = calendar.session(day)
            if bounds is None or (not self.daily and not bounds[0] <= t_ms < bounds[1]):
                continue
            if sessions and sessions[-1].day == day:
                last = sessions[-1]
                sessions[-1] = _Session(day, last.open_ms, last.close_ms, last.lo, len(keep) + 1)
            else:
                sessions.append(_Session(day, bounds[0], bounds[1], len(keep), len(keep) + 1))
            keep.append(row)
        if not sessions:
            raise ValueError(f"{symbol}: no bar lies inside an NYSE session")
        if len(keep) < len(bars):
            log.warning(
                "%s: %d of %d bars lie outside NYSE sessions and are left out",
                symbol,
                len(bars) - len(keep),
                len(bars),
            )
        self.bars = bars.take(np.array(keep, dtype=np.int64))
        self.sessions = sessions
        self._days: list[list[date]] = [[s.day for s in sessions]]
        self._ticks: OrderedDict[tuple[int, int], SessionTicks] = OrderedDict()

    # ---------------------------------------------------------------- placing sessions

    def days(self, pass_no: int) -> list[date]:
        """Return the calendar days of a pass: the data's own, then the session days after."""
        while len(self._days) <= pass_no:
            day = self._days[-1][-1]
            following: list[date] = []
            while len(following) < len(self.sessions):
                day += timedelta(days=1)
                if self.calendar.is_session_day(day):
                    following.append(day)
            self._days.append(following)
        return self._days[pass_no]

    def placed(self, pass_no: int, index: int) -> _Placed:
        """Return a session's bars on its day of ``pass_no``, cut at that day's close."""
        session = self.sessions[index]
        day = self.days(pass_no)[index]
        bounds = self.calendar.session(day)
        assert bounds is not None
        open_ms, close_ms = bounds
        bars = self.bars.slice(session.lo, session.hi)
        if self.daily:
            start = np.array([open_ms], dtype=np.int64)
            return _Placed(day, open_ms, close_ms, start, np.array([close_ms]), bars)
        start = bars.time + (open_ms - session.open_ms)
        inside = start < close_ms
        if not inside.all():
            bars, start = bars.take(np.flatnonzero(inside)), start[inside]
        end = np.minimum(start + self.length_ms, close_ms)
        return _Placed(day, open_ms, close_ms, start, end, bars)

    def previous_close(self, pass_no: int, index: int) -> float:
        """Return the close before a session (the first bar's open before the first one)."""
        while True:
            if index > 0:
                index -= 1
            elif pass_no > 0:
                pass_no, index = pass_no - 1, len(self.sessions) - 1
            else:
                return float(self.bars.open[0])
            bars = self.placed(pass_no, index).bars
            if len(bars):
                return float(bars.close[-1])

    def ticks(self, pass_no: int, index: int) -> SessionTicks:
        """Return a session's ticks (a few sessions are kept)."""
        key = (pass_no, index)
        cached = self._ticks.get(key)
        if cached is not None:
            self._ticks.move_to_end(key)
            return cached
        placed = self.placed(pass_no, index)
        bars = placed.bars
        parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        before = np.concatenate([[0.0], np.cumsum(bars.volume)])
        starts = [0]
        for j in range(len(bars)):
            values = (bars.open[j], bars.high[j], bars.low[j], bars.close[j])
            t0, span = int(placed.time[j]), int(placed.end[j] - placed.time[j])
            times, prices, share = _bar_ticks(t0, span, values, self.tick_ms)
            volumes = np.round(before[j] + float(bars.volume[j]) * share)
            parts.append((times, prices, volumes))
            starts.append(starts[-1] + times.size)
        if parts:
            times, prices, volumes = (np.concatenate(x) for x in zip(*parts, strict=True))
        else:
            times, prices, volumes = np.zeros(0, np.int64), np.zeros(0), np.zeros(0)
        ticks = SessionTicks(
            self.symbol,
            placed.day,
            placed.open_ms,
            placed.close_ms,
            times.astype(np.int64),
            prices,
            volumes.astype(np.int64),
            np.maximum.accumulate(prices) if prices.size else prices,
            np.minimum.accumulate(prices) if prices.size else prices,
            np.array(starts, dtype=np.int64),
            self.previous_close(pass_no, index),
        )
        self._ticks[key] = ticks
        if len(self._ticks) > 8:
            self._ticks.popitem(last=False)
        return ticks

    def tick_values(self, ticks: SessionTicks, k: int) -> dict[str, Any]:
        """Return the ``PricingData`` fields of tick ``k`` of a session."""
        price = float(ticks.prices[k])
        previous = ticks.previous_close
        return {
            "id": self.symbol,
            "price": price,
            "time": int(ticks.times[k]),
            "currency": "USD",
            "exchange": self.about.exchange,
            "quote_type": self.about.quote_type,
            "market_hours": REGULAR_MARKET,
            "change_percent": (price - previous) / previous * 100.0,
            "day_volume": int(ticks.volumes[k]),
            "day_high": float(ticks.day_high[k]),
            "day_low": float(ticks.day_low[k]),
            "change": price - previous,
            "short_name": self.about.name,
            "open_price": float(ticks.prices[0]),
            "previous_close": previous,
            "price_hint": 2,
        }

    def stream(self, start_ms: int) -> Iterator[tuple[int, SessionTicks, int]]:
        """Yield (time, session ticks, index) of every tick at or after ``start_ms``, in order."""
        pass_no = 0
        while True:
            for index, day in enumerate(self.days(pass_no)):
                bounds = self.calendar.session(day)
                if bounds is None or bounds[1] <= start_ms:
                    continue
                ticks = self.ticks(pass_no, index)
                first = int(np.searchsorted(ticks.times, start_ms, "left"))
                for k in range(first, ticks.times.size):
                    yield int(ticks.times[k]), ticks, k
            if not self.loop:
                return
            pass_no += 1

    def sessions_until(self, clock_ms: int) -> list[tuple[int, int, int, int]]:
        """Return (pass, index, open, close) of every session that opened by ``clock_ms``."""
        found: list[tuple[int, int, int, int]] = []
        pass_no = 0
        while True:
            for index, day in enumerate(self.days(pass_no)):
                bounds = self.calendar.session(day)
                assert bounds is not None
                if bounds[0] > clock_ms:
                    return found
                found.append((pass_no, index, bounds[0], bounds[1]))
            if not self.loop:
                return found
            pass_no += 1

    # ---------------------------------------------------------------- chart rows

    def needs_ticks(self, interval_ms: int) -> bool:
        """Tell whether bars of ``interval_ms`` must be built from ticks (finer than the input)."""
        return self.daily or interval_ms < self.length_ms or interval_ms % self.length_ms != 0

    def rows(self, pass_no: int, index: int, clock_ms: int, interval_ms: int | None) -> _Rows:
        """Return a session's chart rows up to ``clock_ms`` (one daily row without an interval)."""
        placed = self.placed(pass_no, index)
        if interval_ms is not None and self.needs_ticks(interval_ms):
            ticks = self.ticks(pass_no, index)
            m = ticks.upto(clock_ms)
            slots = (ticks.times[:m] - placed.open_ms) // interval_ms
            prices = ticks.prices[:m]
            return _Rows.of_ticks(placed.open_ms + slots * interval_ms, prices, ticks.volumes[:m])
        bars = placed.bars
        time_ms, end = placed.time, placed.end
        shown = int(np.searchsorted(time_ms, clock_ms, "right"))
        o, h, low, c, v = (
            x[:shown].copy() for x in (bars.open, bars.high, bars.low, bars.close, bars.volume)
        )
        if shown and end[shown - 1] > clock_ms:  # the bar forming at the clock, from its ticks
            ticks = self.ticks(pass_no, index)
            a = int(ticks.bar_starts[shown - 1])
            b = min(int(ticks.bar_starts[shown]), ticks.upto(clock_ms))
            part = ticks.prices[a:b]
            o[-1], h[-1], low[-1], c[-1] = part[0], part.max(), part.min(), part[-1]
            v[-1] = float(ticks.volumes[b - 1] - ticks.volumes[a])
        if interval_ms is None:
            stamps = np.full(shown, placed.open_ms, dtype=np.int64)
        else:
            slots = (time_ms[:shown] - placed.open_ms) // interval_ms
            stamps = placed.open_ms + slots * interval_ms
        return _Rows.of_bars(stamps, o, h, low, c, v)


@dataclass(frozen=True, slots=True)
class _Rows:
    """Chart rows: open times (epoch ms) and OHLCV columns."""

    time: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray

    @staticmethod
    def empty() -> _Rows:
        """Return no rows."""
        nothing = np.zeros(0)
        return _Rows(np.zeros(0, dtype=np.int64), nothing, nothing, nothing, nothing, nothing)

    @staticmethod
    def _groups(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return the first and last index of each run of equal keys."""
        first = np.flatnonzero(np.concatenate([[True], keys[1:] != keys[:-1]]))
        last = np.concatenate([first[1:] - 1, [keys.size - 1]])
        return first, last

    @classmethod
    def of_bars(
        cls,
        keys: np.ndarray,
        o: np.ndarray,
        h: np.ndarray,
        low: np.ndarray,
        c: np.ndarray,
        v: np.ndarray,
    ) -> _Rows:
        """Aggregate bars that share an open time (``keys``) into rows."""
        if keys.size == 0:
            return cls.empty()
        first, last = cls._groups(keys)
        return cls(
            keys[first],
            o[first],
            np.maximum.reduceat(h, first),
            np.minimum.reduceat(low, first),
            c[last],
            np.add.reduceat(v, first),
        )

    @classmethod
    def of_ticks(cls, keys: np.ndarray, prices: np.ndarray, volumes: np.ndarray) -> _Rows:
        """Aggregate ticks (cumulative day volumes) that share an open time into rows."""
        if keys.size == 0:
            return cls.empty()
        first, last = cls._groups(keys)
        ends = volumes[last].astype(np.float64)
        return cls(
            keys[first],
            prices[first],
            np.maximum.reduceat(prices, first),
            np.minimum.reduceat(prices, first),
            prices[last],
            np.diff(np.concatenate([[0.0], ends])),
        )

    @classmethod
    def concat(cls, parts: Sequence[_Rows]) -> _Rows:
        """Join rows in order."""
        if not parts:
            return cls.empty()
        columns = zip(
            *((p.time, p.open, p.high, p.low, p.close, p.volume) for p in parts), strict=True
        )
        time_ms, o, h, low, c, v = (np.concatenate(x) for x in columns)
        return cls(time_ms.astype(np.int64), o, h, low, c, v)

    def grouped(self, keys: np.ndarray) -> _Rows:
        """Aggregate consecutive rows that share a key, each stamped at its first row."""
        if keys.size == 0:
            return self
        first, last = self._groups(keys)
        return _Rows(
            self.time[first],
            self.open[first],
            np.maximum.reduceat(self.high, first),
            np.minimum.reduceat(self.low, first),
            self.close[last],
            np.add.reduceat(self.volume, first),
        )

    def between(self, start_ms: int, end_ms: int) -> _Rows:
        """Return the rows stamped in ``[start_ms, end_ms)``."""
        keep = (self.time >= start_ms) & (self.time < end_ms)
        columns = (self.time, self.open, self.high, self.low, self.close, self.volume)
        return _Rows(*(x[keep] for x in columns))


class _ChartError(Exception):
    """A chart request Yahoo answers with an error object."""

    def __init__(self, status: int, code: str, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.code = code
        self.description = description


def _json_response(status: int, payload: Any) -> Response:
    """Build an HTTP response with a JSON body."""
    body = _DUMPS(payload).encode()
    code = http.HTTPStatus(status)
    headers = Headers(
        [
            ("Date", email.utils.formatdate(usegmt=True)),
            ("Connection", "close"),
            ("Content-Type", "application/json;charset=utf-8"),
            ("Content-Length", str(len(body))),
        ]
    )
    return Response(code.value, code.phrase, headers, body)


def _months_back(day: date, months: int) -> date:
    """Return the same day ``months`` earlier (clamped to the month's end)."""
    month_index = day.year * 12 + day.month - 1 - months
    year, month = divmod(month_index, 12)
    last = monthcal.monthrange(year, month + 1)[1]
    return date(year, month + 1, min(day.day, last))


class _Conn:
    """One streamer connection and the symbols it subscribed to."""

    __slots__ = ("symbols", "ws")

    def __init__(self, ws: ServerConnection) -> None:
        self.ws = ws
        self.symbols: set[str] = set()


class FakeYahoo:
    """A fake Yahoo streamer and chart API replaying bars (see the module docstring)."""

    def __init__(
        self,
        bars: Mapping[str, BarFrame],
        *,
        speed: float = 0.0,
        start: int | str | None = None,
        loop: bool = False,
        tick_every: float = 5.0,
        heartbeat_every: float = 5.0,
        skip_closed: bool = False,
        autostart: bool = True,
        calendar: MarketCalendar | None = None,
    ) -> None:
        if not bars:
            raise ValueError("give the bars of at least one symbol")
        if speed < 0 or math.isnan(speed):
            raise ValueError("the speed must be >= 0 (0: as fast as the clients read)")
        if not tick_every > 0:
            raise ValueError("the tick spacing must be positive")
        self.calendar = calendar or MarketCalendar()
        self.speed = speed
        self.fast = speed == 0 or math.isinf(speed)
        self.loop = loop
        self.heartbeat_every = heartbeat_every
        self.skip_closed = skip_closed
        self.autostart = autostart
        tick_ms = max(1, round(tick_every * 1000))
        self._listings = {
            symbol: _Listing(symbol, frame, self.calendar, tick_ms, loop)
            for symbol, frame in bars.items()
        }
        first = min(next(x.stream(0))[0] for x in self._listings.values())
        last = (x.placed(0, len(x.sessions) - 1) for x in self._listings.values())
        self.end_ms = max(placed.close_ms for placed in last)
        self.start_ms = first if start is None else _instant(start)
        if self.start_ms >= self.end_ms and not loop:
            raise ValueError(
                f"the start {_iso(self.start_ms)} is not before the data's end {_iso(self.end_ms)}"
            )
        self._anchor_ms = self.start_ms
        self._anchor_wall: float | None = None  # None: the clock stands still
        self._running = asyncio.Event()
        self._running.set()
        self._muted = False
        self._conns: set[_Conn] = set()
        self._sub_changed = asyncio.Event()
        self._server: Server | None = None
        self._port = 0
        self._replay_task: asyncio.Task[None] | None = None
        self._heartbeat_task: asyncio.Task[None] | None = None
        self._pending_ms: int | None = None  # the next tick to send, while the replay runs
        self.replay_done = asyncio.Event()
        self.ticks_sent = 0
        self.heartbeats_sent = 0
        self.rest_requests: list[str] = []

    # ------------------------------------------------------------------ public API

    @property
    def port(self) -> int:
        """Return the listening port (0 before ``start``)."""
        return self._port

    @property
    def ws_url(self) -> str:
        """Return the streamer URL (a yahoo feed's ``ws_url``)."""
        return f"ws://127.0.0.1:{self._port}/?version=2"

    @property
    def rest_url(self) -> str:
        """Return the chart API base URL (a yahoo feed's ``rest_url``)."""
        return f"http://127.0.0.1:{self._port}"

    @property
    def clock_ms(self) -> int:
        """Return the replay clock in epoch ms: the data's time now."""
        if self._anchor_wall is None or self.fast:
            return self._anchor_ms
        elapsed = time.monotonic() - self._anchor_wall
        return self._anchor_ms + int(elapsed * self.speed * 1000)

    @property
    def symbols(self) -> list[str]:
        """Return the symbols served."""
        return list(self._listings)

    @property
    def paused(self) -> bool:
        """Return whether the stream is silenced."""
        return self._muted or not self._running.is_set()

    @property
    def connection_count(self) -> int:
        """Return the number of open streamer connections."""
        return len(self._conns)

    def bars(self, symbol: str) -> BarFrame:
        """Return a symbol's input bars that lie in sessions (the ones replayed)."""
        return self._listing(symbol).bars

    def ticks(self, symbol: str, end_ms: int | None = None) -> list[dict[str, Any]]:
        """Return the ``PricingData`` fields of the ticks replayed from the start to ``end_ms``."""
        listing = self._listing(symbol)
        end = self.end_ms if end_ms is None else end_ms
        out = []
        for t_ms, ticks, k in listing.stream(self.start_ms):
            if t_ms >= end:
                break
            out.append(listing.tick_values(ticks, k))
        return out

    def subscribers(self, symbol: str) -> int:
        """Return how many connections subscribe to ``symbol``."""
        return sum(symbol in c.symbols for c in self._conns)

    async def wait_subscribed(self, *symbols: str) -> None:
        """Wait until every given symbol has at least one subscriber."""
        while not all(self.subscribers(s) for s in symbols):
            self._sub_changed.clear()
            await self._sub_changed.wait()

    async def start(self, port: int = 0) -> int:
        """Start listening on 127.0.0.1 and return the port."""
        self._server = await serve(
            self._handler,
            "127.0.0.1",
            port,
            process_request=self._process_request,
            compression=None,
        )
        self._port = self._server.sockets[0].getsockname()[1]
        if not self.autostart:
            self.start_replay()
        if self.heartbeat_every > 0:
            self._heartbeat_task = asyncio.create_task(self._heartbeats())
        log.info("fake yahoo on port %d, symbols %s", self._port, ", ".join(self._listings))
        return self._port

    async def stop(self) -> None:
        """Stop the replay, close every connection and the server."""
        for task in (self._replay_task, self._heartbeat_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    def start_replay(self) -> None:
        """Start the replay clock now (otherwise the first subscription starts it)."""
        if self._replay_task is None:
            if not self.fast:
                self._anchor_wall = time.monotonic()
            self._replay_task = asyncio.create_task(self._replay())

    def pause(self, *, keep_clock: bool = False) -> None:
        """Stop sending (sockets stay open); ``keep_clock`` lets the clock run on unseen."""
        if keep_clock:
            self._muted = True
            return
        if self._running.is_set():
            self._anchor_ms = self.clock_ms
            self._anchor_wall = None
            self._running.clear()

    def resume(self) -> None:
        """Send again; a stopped clock resumes where it stood."""
        self._muted = False
        if not self._running.is_set():
            if self._replay_task is not None and not self.fast:
                self._anchor_wall = time.monotonic()
            self._running.set()

    async def drop_connections(self, code: int = 1001, reason: str = "fake yahoo drop") -> int:
        """Close every streamer connection now."""
        conns = list(self._conns)
        self._conns.clear()
        await asyncio.gather(*(c.ws.close(code, reason) for c in conns), return_exceptions=True)
        return len(conns)

    # ------------------------------------------------------------------ replay

    def _listing(self, symbol: str) -> _Listing:
        """Look a symbol up (exactly, or upper-cased)."""
        listing = self._listings.get(symbol) or self._listings.get(symbol.upper())
        if listing is None:
            raise KeyError(f"no symbol {symbol!r} in the fake Yahoo")
        return listing

    async def _replay(self) -> None:
        """Send every tick to the subscribers of its symbol when the clock reaches it."""
        streams = [listing.stream(self.start_ms) for listing in self._listings.values()]
        merged = heapq.merge(*streams, key=lambda item: item[0])
        sent_since_yield = 0
        try:
            for t_ms, ticks, k in merged:
                self._pending_ms = t_ms
                await self._wait_until(t_ms)
                if self._muted:
                    continue
                listing = self._listings[ticks.symbol]
                conns = [c for c in self._conns if ticks.symbol in c.symbols]
                if conns:
                    frame = pricing_frame(listing.tick_values(ticks, k))
                    for conn in conns:
                        await self._send(conn, frame)
                    self.ticks_sent += 1
                sent_since_yield += 1
                if sent_since_yield >= _YIELD_EVERY:
                    sent_since_yield = 0
                    await asyncio.sleep(0)
            self._pending_ms = None
            if self.fast:
                self._anchor_ms = max(self._anchor_ms, self.end_ms)
            self.replay_done.set()
            log.info("replay done, clock %s", _iso(self.clock_ms))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("replay failed")
            raise

    async def _wait_until(self, t_ms: int) -> None:
        """Wait until the replay clock reaches ``t_ms`` (at once at speed 0), honouring pauses."""
        while True:
            if not self._running.is_set():
                await self._running.wait()
                continue
            if self.fast:
                self._anchor_ms = max(self._anchor_ms, t_ms)
                return
            now = self.clock_ms
            if now >= t_ms:
                return
            if self.skip_closed and not self.calendar.is_open(now):
                bounds = self.calendar.session_at(t_ms)
                if bounds is not None and bounds[0] > now:
                    self._anchor_ms, self._anchor_wall = bounds[0], time.monotonic()
                    continue
            await asyncio.sleep(min((t_ms - now) / self.speed / 1000, 0.25))

    async def _send(self, conn: _Conn, frame: str) -> None:
        """Send one frame; a closed connection is forgotten."""
        try:
            await conn.ws.send(frame)
        except ConnectionClosed:
            self._conns.discard(conn)

    async def _heartbeats(self) -> None:
        """Send a HEARTBEAT message per subscribed symbol every ``heartbeat_every`` seconds."""
        while True:
            await asyncio.sleep(self.heartbeat_every)
            if self.paused:
                continue
            now = self.clock_ms
            if self._pending_ms is not None:
                now = min(now, self._pending_ms - 1)
            for conn in list(self._conns):
                for symbol in sorted(conn.symbols & self._listings.keys()):
                    values = {"id": symbol, "time": now, "quote_type": QUOTE_HEARTBEAT}
                    await self._send(conn, pricing_frame(values))
                    self.heartbeats_sent += 1

    # ------------------------------------------------------------------ websocket side

    async def _handler(self, ws: ServerConnection) -> None:
        """Serve one streamer connection: subscriptions in, ticks out (from the replay)."""
        conn = _Conn(ws)
        self._conns.add(conn)
        try:
            async for message in ws:
                self._on_message(conn, message)
        except ConnectionClosed:
            pass
        finally:
            self._conns.discard(conn)
            self._sub_changed.set()

    def _on_message(self, conn: _Conn, message: str | bytes) -> None:
        """Handle ``{"subscribe": [...]}`` and ``{"unsubscribe": [...]}``; ignore the rest."""
        try:
            request = json.loads(message)
        except ValueError:
            log.debug("ignored a frame that is not JSON: %r", message[:80])
            return
        if not isinstance(request, dict):
            return
        subscribe = request.get("subscribe")
        if isinstance(subscribe, list):
            conn.symbols.update(s for s in subscribe if isinstance(s, str))
            if self.autostart:
                self.start_replay()
        unsubscribe = request.get("unsubscribe")
        if isinstance(unsubscribe, list):
            conn.symbols.difference_update(s for s in unsubscribe if isinstance(s, str))
        self._sub_changed.set()

    # ------------------------------------------------------------------ chart API

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        """Answer plain HTTP GETs (the chart API); let websocket upgrades through."""
        if "websocket" in request.headers.get("Upgrade", "").lower():
            return None
        self.rest_requests.append(request.path)
        parts = urlsplit(request.path)
        prefix = "/v8/finance/chart/"
        if not parts.path.startswith(prefix):
            error = {"code": "Not Found", "description": "HTTP 404 Not Found"}
            return _json_response(404, {"finance": {"result": None, "error": error}})
        symbol = unquote(parts.path[len(prefix) :])
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        try:
            return _json_response(200, self._chart(symbol, query))
        except _ChartError as exc:
            error = {"code": exc.code, "description": exc.description}
            return _json_response(exc.status, {"chart": {"result": None, "error": error}})

    def _chart(self, symbol: str, query: dict[str, str]) -> dict[str, Any]:
        """Build a chart answer from the bars up to the replay clock."""
        try:
            listing = self._listing(symbol)
        except KeyError:
            raise _ChartError(404, "Not Found", "No data found, symbol may be delisted") from None
        interval = query.get("interval", "1d")
        if interval not in _INTRADAY_MS and interval not in _PERIODS:
            if interval in ("4h", "5d", "3mo"):
                raise _ChartError(400, "Bad Request", f"the fake Yahoo does not serve {interval=}")
            raise _ChartError(
                400,
                "Bad Request",
                f"Invalid input - interval={interval} is not supported. "
                f"Valid intervals: {_YAHOO_INTERVALS}",
            )
        clock = self.clock_ms
        sessions = listing.sessions_until(clock)
        range_text, start_ms, end_ms = self._span(query, clock, sessions)
        interval_ms = _INTRADAY_MS.get(interval)
        parts = [
            listing.rows(p, i, clock, interval_ms)
            for p, i, open_ms, close_ms in sessions
            if close_ms > start_ms and open_ms < end_ms
        ]
        rows = _Rows.concat(parts)
        if interval in ("1wk", "1mo"):
            rows = rows.grouped(self._period_keys(rows.time, interval))
        rows = rows.between(start_ms, end_ms)
        meta = self._meta(listing, interval, range_text, clock, sessions, rows, start_ms)
        stamps = (rows.time // 1000).tolist()
        columns = {
            "open": rows.open.tolist(),
            "high": rows.high.tolist(),
            "low": rows.low.tolist(),
            "close": rows.close.tolist(),
            "volume": [round(v) for v in rows.volume.tolist()],
        }
        if interval_ms is not None and sessions and end_ms > clock:
            live = self._live_row(listing, sessions[-1], clock)
            if live is not None and live[0] not in stamps and live[0] * 1000 >= start_ms:
                stamps.append(live[0])
                for name in ("open", "high", "low", "close"):
                    columns[name].append(live[1])
                columns["volume"].append(0)
        if interval_ms is not None:
            meta["tradingPeriods"] = [
                [self._period(open_ms, close_ms)]
                for _, _, open_ms, close_ms in sessions
                if close_ms > start_ms and open_ms < end_ms
            ]
        result: dict[str, Any] = {"meta": meta}
        if stamps:
            result["timestamp"] = stamps
            result["indicators"] = {"quote": [columns]}
            if interval_ms is None:
                result["indicators"]["adjclose"] = [{"adjclose": columns["close"]}]
        else:
            result["indicators"] = {"quote": [{}]}
            if interval_ms is None:
                result["indicators"]["adjclose"] = [{}]
        return {"chart": {"result": [result], "error": None}}

    def _span(
        self, query: dict[str, str], clock: int, sessions: list[tuple[int, int, int, int]]
    ) -> tuple[str, int, int]:
        """Return (range text, start, end) of a request's ``range`` or ``period1``/``period2``."""
        if "period1" in query or "period2" in query:
            try:
                start = int(query.get("period1", "0")) * 1000
                end = int(query["period2"]) * 1000 if "period2" in query else clock + 1
            except ValueError:
                raise _ChartError(
                    400, "Bad Request", "Invalid input - period1 and period2 are epoch seconds"
                ) from None
            return "", start, min(end, clock + 1)
        text = query.get("range", "1d")
        local = datetime.fromtimestamp(clock / 1000, self.calendar.tz)
        midnight = datetime.combine(local.date(), datetime.min.time(), self.calendar.tz)
        match = _RANGE.match(text)
        if text == "max":
            start = 0
        elif text == "ytd":
            start = _ms(midnight.replace(month=1, day=1))
        elif match is None or int(match.group(1)) <= 0:
            raise _ChartError(
                400,
                "Bad Request",
                f"Invalid input - range={text} is not supported. Valid ranges: {_VALID_RANGES}",
            )
        else:
            count, unit = int(match.group(1)), match.group(2)
            if unit == "d":
                start = sessions[-count][2] if len(sessions) >= count else 0
            elif unit == "wk":
                start = _ms(midnight - timedelta(weeks=count))
            else:
                months = count * (12 if unit == "y" else 1)
                day = _months_back(local.date(), months)
                start = _ms(datetime.combine(day, datetime.min.time(), self.calendar.tz))
        return text, start, clock + 1

    def _period_keys(self, stamps: np.ndarray, interval: str) -> np.ndarray:
        """Return a week (Monday ordinal) or month key per row, by exchange-local date."""
        keys = []
        for t_ms in stamps.tolist():
            day = self.calendar.local_date(t_ms)
            if interval == "1wk":
                keys.append(day.toordinal() - day.weekday())
            else:
                keys.append(day.year * 12 + day.month)
        return np.array(keys, dtype=np.int64)

    def _live_row(
        self, listing: _Listing, latest: tuple[int, int, int, int], clock: int
    ) -> tuple[int, float] | None:
        """Return Yahoo's last intraday row: (seconds, price) of the last trade, or the close."""
        pass_no, index, _, close_ms = latest
        ticks = listing.ticks(pass_no, index)
        m = ticks.upto(clock)
        if m == 0:
            return None
        price = float(ticks.prices[m - 1])
        if clock >= close_ms:
            return close_ms // 1000, price
        return int(ticks.times[m - 1]) // 1000, price

    def _period(self, start_ms: int, end_ms: int) -> dict[str, Any]:
        """Return one trading period object (timezone abbreviation and offset at its start)."""
        local = datetime.fromtimestamp(start_ms / 1000, self.calendar.tz)
        offset = local.utcoffset()
        return {
            "timezone": local.tzname(),
            "start": start_ms // 1000,
            "end": end_ms // 1000,
            "gmtoffset": int(offset.total_seconds()) if offset is not None else 0,
        }

    def _meta(
        self,
        listing: _Listing,
        interval: str,
        range_text: str,
        clock: int,
        sessions: list[tuple[int, int, int, int]],
        rows: _Rows,
        start_ms: int,
    ) -> dict[str, Any]:
        """Return the chart ``meta`` object as Yahoo builds it."""
        about = listing.about
        now = datetime.fromtimestamp(clock / 1000, self.calendar.tz)
        offset = now.utcoffset()
        meta: dict[str, Any] = {
            "currency": "USD",
            "symbol": listing.symbol,
            "exchangeName": about.exchange,
            "fullExchangeName": about.full_exchange,
            "instrumentType": about.instrument,
            "firstTradeDate": listing.placed(0, 0).open_ms // 1000,
        }
        latest = listing.ticks(*sessions[-1][:2]) if sessions else None
        traded = latest.upto(clock) if latest is not None else 0
        if latest is not None and traded:
            last = traded - 1
            close_ms = sessions[-1][3]
            meta["regularMarketTime"] = (
                close_ms // 1000 if clock >= close_ms else int(latest.times[last]) // 1000
            )
        meta["hasPrePostMarketData"] = False
        meta["gmtoffset"] = int(offset.total_seconds()) if offset is not None else 0
        meta["timezone"] = now.tzname()
        meta["exchangeTimezoneName"] = str(self.calendar.tz)
        if latest is not None and traded:
            year_ago = clock - 365 * _DAY_MS
            daily = _Rows.concat(
                [listing.rows(p, i, clock, None) for p, i, _, c in sessions if c > year_ago]
            )
            meta["regularMarketPrice"] = float(latest.prices[last])
            meta["fiftyTwoWeekHigh"] = float(daily.high.max())
            meta["fiftyTwoWeekLow"] = float(daily.low.min())
            meta["regularMarketDayHigh"] = float(latest.day_high[last])
            meta["regularMarketDayLow"] = float(latest.day_low[last])
            meta["regularMarketVolume"] = int(latest.volumes[last])
        meta["longName"] = meta["shortName"] = about.name
        earlier = [s for s in sessions if s[2] < start_ms]
        if earlier:
            day_rows = listing.rows(earlier[-1][0], earlier[-1][1], clock, None)
            if day_rows.close.size:
                meta["chartPreviousClose"] = float(day_rows.close[-1])
        if latest is not None and range_text == "1d":
            meta["previousClose"] = latest.previous_close
        meta["scale"] = 3
        meta["priceHint"] = 2
        meta["currentTradingPeriod"] = self._current_period(now.date())
        meta["dataGranularity"] = interval
        meta["range"] = range_text
        meta["validRanges"] = _VALID_RANGES
        return meta

    def _current_period(self, day: date) -> dict[str, Any]:
        """Return ``currentTradingPeriod``: pre, regular and post of the day (or the next one)."""
        for _ in range(15):
            bounds = self.calendar.session(day)
            if bounds is not None:
                break
            day += timedelta(days=1)
        else:  # no session within two weeks: a calendar without sessions
            return {}
        open_ms, close_ms = bounds
        pre = open_ms - int(_PRE_OPEN_H * 3_600_000)
        post = close_ms + _POST_CLOSE_H * 3_600_000
        return {
            "pre": self._period(pre, open_ms),
            "regular": self._period(open_ms, close_ms),
            "post": self._period(close_ms, post),
        }


# ---------------------------------------------------------------------- helpers


def _ms(moment: datetime) -> int:
    """Return a datetime as epoch ms."""
    return int(moment.timestamp() * 1000)


def _instant(value: int | str) -> int:
    """Parse epoch ms or an ISO date/time (naive means UTC) into epoch ms."""
    if isinstance(value, int):
        return value
    moment = datetime.fromisoformat(value.strip())
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return _ms(moment)


def _iso(t_ms: int) -> str:
    """Format epoch ms as ISO UTC."""
    return datetime.fromtimestamp(t_ms / 1000, UTC).isoformat().replace("+00:00", "Z")


def load_bars(specs: Sequence[str]) -> dict[str, BarFrame]:
    """Load ``SYMBOL=CSV`` specs (the symbol may hold ``=``, the path may not) into bars."""
    bars: dict[str, BarFrame] = {}
    for spec in specs:
        symbol, sep, path = (part.strip() for part in spec.rpartition("="))
        if not sep or not symbol or not path:
            raise ValueError(f"--bars {spec!r}: expected SYMBOL=CSV, e.g. ^RUT=rut_5m.csv")
        if symbol in bars:
            raise ValueError(f"--bars: {symbol} is given twice")
        bars[symbol] = load_csv(Path(path)).bars
    return bars


# ---------------------------------------------------------------------- CLI


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(
        prog="python -m moodring.testing.fake_yahoo",
        description="Serve Yahoo's streamer and chart API on 127.0.0.1, replaying bars as ticks.",
    )
    parser.add_argument(
        "--bars", action="append", default=[], metavar="SYMBOL=CSV", help="bars of a symbol"
    )
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0 = any free)")
    parser.add_argument(
        "--speed", type=float, default=1.0, help="times real time; 0 or inf = at once"
    )
    parser.add_argument("--start", default=None, help="where in the data to begin (ISO time)")
    parser.add_argument("--loop", action="store_true", help="replay again on the next sessions")
    parser.add_argument(
        "--skip-closed", action="store_true", help="jump the clock from a close to the next open"
    )
    parser.add_argument("--tick-every", type=float, default=5.0, help="seconds between ticks")
    parser.add_argument("--heartbeat-every", type=float, default=5.0, help="seconds (0 = none)")
    parser.add_argument("--log-level", default="INFO", help="stderr log level")
    args = parser.parse_args(argv)
    if not args.bars:
        parser.error("give at least one --bars SYMBOL=CSV")
    if args.speed < 0 or math.isnan(args.speed):
        parser.error("--speed must be >= 0")
    if not args.tick_every > 0:
        parser.error("--tick-every must be positive")
    if args.start is not None:
        try:
            _instant(args.start)
        except ValueError:
            parser.error(f"--start {args.start!r} is not an ISO date or time")
    try:
        args.fake = FakeYahoo(
            load_bars(args.bars),
            speed=args.speed,
            start=args.start,
            loop=args.loop,
            tick_every=args.tick_every,
            heartbeat_every=args.heartbeat_every,
            skip_closed=args.skip_closed,
        )
    except (CsvError, ValueError, OSError) as exc:
        parser.error(str(exc))
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    args = _parse_args(argv)
    logging.getLogger().setLevel(args.log_level.upper())
    logging.getLogger("websockets").setLevel(logging.WARNING)

    asyncio.run(serve_until_signalled(args.fake, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
