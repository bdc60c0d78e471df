"""A local fake Binance spot exchange that replays captured websocket frames for ccxt.pro.

One ``websockets`` server on 127.0.0.1 answers both the REST calls ccxt makes
(``/api/v3/exchangeInfo``, ``/klines``, ``/trades``, ``/aggTrades``, ``/time``,
``/ping``) and the combined-stream websocket (``/stream...``; ccxt appends
``/0``, ``/1`` ... per watch). Trade frames are replayed byte for byte from the
captures in the order of their receive times; klines (websocket and REST) are
built from the same trades. One replay clock serves every connection.

Universe mode (``universe=`` daily bars per symbol, with or without captures) serves a
whole market of daily bars up to a settable "today": ``exchangeInfo``, ``ticker/24hr``,
``1d`` klines (the closed days, then today's forming bar) and the ticker streams ccxt's
``watch_tickers`` subscribes to (``<symbol>@miniTicker``, ``<symbol>@ticker``,
``!miniTicker@arr``, ``!ticker@arr``), pushed when a test sets intraday prices
(``set_prices``). Today (default: the last day with a bar) moves with ``set_day`` and
``advance_day``; a day before it is served whole, today's bar opens at its real open and
moves only with the prices set. ``fail_symbol`` answers a market's klines with Binance's
400 Invalid symbol while it stays listed (a delisting the market list lags behind). A
stablecoin pair (``USDCUSDT``) and a leveraged token (``ETHUPUSDT``) with huge volumes are
added (``extra_markets``), to test that clients leave them out.

Run it: ``python -m moodring.testing.fake_exchange --capture FILE [--capture FILE]
[--universe DIR_OR_FILE ...] [--today YYYY-MM-DD] [--port N] [--speed X]
[--drop-every S] [--start-paused] [--start-now] [--loop]``.
The first stdout line is the port; logs go to stderr. SIGUSR1 pauses the
stream (sockets stay open), SIGUSR2 resumes it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import email.utils
import functools
import gzip
import http
import json
import logging
import math
import signal
import sys
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from moodring.backtest.universe import load_universe
from moodring.market.frame import BarFrame

__all__ = [
    "INTERVALS_MS",
    "FakeExchange",
    "configure_ccxt",
    "load_capture",
    "load_universe_bars",
    "main",
]

log = logging.getLogger("moodring.testing.fake_exchange")

INTERVALS_MS: dict[str, int] = {
    "1s": 1_000,
    "1m": 60_000,
    "3m": 180_000,
    "5m": 300_000,
    "15m": 900_000,
    "30m": 1_800_000,
    "1h": 3_600_000,
    "2h": 7_200_000,
    "4h": 14_400_000,
    "6h": 21_600_000,
    "8h": 28_800_000,
    "12h": 43_200_000,
    "1d": 86_400_000,
}
_QUOTES = ("FDUSD", "USDT", "USDC", "TUSD", "BUSD", "EUR", "TRY", "BTC", "ETH", "BNB")
_ZERO = Decimal(0)
_DUMPS = json.JSONEncoder(separators=(",", ":")).encode
_HIGH_WATER = 512  # at speed 0 the replay waits while a connection has more frames queued


def _fmt(value: Decimal) -> str:
    """Format a decimal the way Binance does (8 places)."""
    return f"{value:.8f}"


def _decimals(text: str) -> int:
    """Return the number of significant decimals in a decimal string."""
    if "." not in text:
        return 0
    return len(text.rstrip("0").split(".", 1)[1])


class _Frame:
    """One captured combined-stream frame."""

    __slots__ = ("data", "event_ms", "raw", "recv_ns", "stream", "symbol")

    def __init__(self, recv_ns: int, raw: str, stream: str, data: dict[str, Any]) -> None:
        self.recv_ns = recv_ns
        self.raw = raw
        self.stream = stream
        self.symbol = stream.split("@", 1)[0]
        self.data: dict[str, Any] | None = data if stream.endswith("@trade") else None
        event_ms = data.get("E")
        self.event_ms: int | None = event_ms if isinstance(event_ms, int) else None


def load_capture(path: Path) -> list[_Frame]:
    """Read a ``<recv ns> <combined JSON>`` capture (gzip or plain); snapshots are skipped."""
    stat = path.stat()
    return list(_load_capture(str(path.resolve()), stat.st_mtime_ns, stat.st_size))


@functools.lru_cache(maxsize=8)
def _load_capture(path_text: str, mtime_ns: int, size: int) -> tuple[_Frame, ...]:
    """Parse a capture once per process (frames are never mutated after indexing)."""
    path = Path(path_text)
    opener = gzip.open if path.suffix == ".gz" else open
    frames: list[_Frame] = []
    with opener(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            line = line.rstrip("\n")
            if not line:
                continue
            stamp, _, raw = line.partition(" ")
            message = json.loads(raw)
            stream = message.get("stream") if isinstance(message, dict) else None
            if not isinstance(stream, str) or not isinstance(message.get("data"), dict):
                continue
            frames.append(_Frame(int(stamp), raw, stream, message["data"]))
    return tuple(frames)


class _Bar:
    """One kline being built from trades."""

    __slots__ = ("L", "Q", "T", "V", "c", "f", "h", "l", "n", "o", "q", "t", "v")

    def __init__(self, t: int, dur: int, price: Decimal) -> None:
        self.t = t
        self.T = t + dur - 1
        self.f = -1
        self.L = -1
        self.o = self.h = self.l = self.c = price
        self.v = self.q = self.V = self.Q = _ZERO
        self.n = 0

    def add(self, trade: dict[str, Any]) -> None:
        """Fold one trade into the bar."""
        price = Decimal(trade["p"])
        qty = Decimal(trade["q"])
        if self.n == 0:
            self.o = self.h = self.l = price
            self.f = trade["t"]
        elif price > self.h:
            self.h = price
        elif price < self.l:
            self.l = price
        self.c = price
        self.L = trade["t"]
        self.n += 1
        self.v += qty
        self.q += price * qty
        if not trade["m"]:  # the buyer was the taker
            self.V += qty
            self.Q += price * qty

    def rest_row(self) -> list[Any]:
        """Return the bar as a ``GET /api/v3/klines`` row."""
        return [
            self.t,
            _fmt(self.o),
            _fmt(self.h),
            _fmt(self.l),
            _fmt(self.c),
            _fmt(self.v),
            self.T,
            _fmt(self.q),
            self.n,
            _fmt(self.V),
            _fmt(self.Q),
            "0",
        ]

    def ws_kline(self, symbol: str, interval: str, closed: bool) -> dict[str, Any]:
        """Return the ``k`` object of a kline stream event."""
        return {
            "t": self.t,
            "T": self.T,
            "s": symbol,
            "i": interval,
            "f": self.f,
            "L": self.L,
            "o": _fmt(self.o),
            "c": _fmt(self.c),
            "h": _fmt(self.h),
            "l": _fmt(self.l),
            "v": _fmt(self.v),
            "n": self.n,
            "x": closed,
            "q": _fmt(self.q),
            "V": _fmt(self.V),
            "Q": _fmt(self.Q),
            "B": "0",
        }


class _BarBuilder:
    """Klines of one symbol and interval, built from the trades replayed so far."""

    def __init__(self, interval: str) -> None:
        self.interval = interval
        self.dur = INTERVALS_MS[interval]
        self.bars: list[_Bar] = []

    def add(self, trade: dict[str, Any]) -> _Bar:
        """Fold a trade in (opening bars, empty ones for gaps, as needed); return its bar."""
        start = trade["T"] - trade["T"] % self.dur
        bars = self.bars
        if not bars:
            bars.append(_Bar(start, self.dur, Decimal(trade["p"])))
        elif start > bars[-1].t:
            while bars[-1].t + self.dur < start:
                bars.append(_Bar(bars[-1].t + self.dur, self.dur, bars[-1].c))
            bars.append(_Bar(start, self.dur, bars[-1].c))
        bar = bars[-1]
        bar.add(trade)
        return bar

    def closes_bar(self, trade_ms: int, next_trade_ms: int | None) -> bool:
        """Return whether the next trade falls in a later bar than this one."""
        if next_trade_ms is None:
            return False
        return next_trade_ms // self.dur > trade_ms // self.dur

    def rows(
        self, clock_ms: int, start: int | None, end: int | None, limit: int
    ) -> list[list[Any]]:
        """Return REST rows up to the bar holding ``clock_ms`` (empty bars fill gaps)."""
        bars = self.bars
        if not bars:
            return []
        extra: list[_Bar] = []
        clock_start = clock_ms - clock_ms % self.dur
        last = bars[-1]
        while last.t < clock_start:
            last = _Bar(last.t + self.dur, self.dur, last.c)
            extra.append(last)
        every = bars + extra if extra else bars
        chosen = [
            b for b in every if (start is None or b.t >= start) and (end is None or b.t <= end)
        ]
        chosen = chosen[:limit] if start is not None else chosen[-limit:]
        return [b.rest_row() for b in chosen]


class _Symbol:
    """Per-symbol replay state."""

    def __init__(self, name: str) -> None:
        self.name = name  # upper case, e.g. ETHUSDT
        self.trades: list[dict[str, Any]] = []  # capture trade data, as captured
        self.replayed: list[dict[str, Any]] = []  # trade data replayed so far (shifted on loops)
        self.builders: dict[str, _BarBuilder] = {}
        self.price_decimals = 2
        self.qty_decimals = 0
        self.id_span = 1

    def builder(self, interval: str) -> _BarBuilder:
        """Return the bar builder of ``interval``, catching it up with the replayed trades."""
        found = self.builders.get(interval)
        if found is None:
            found = self.builders[interval] = _BarBuilder(interval)
            for trade in self.replayed:
                found.add(trade)
        return found

    def exchange_info(self) -> dict[str, Any]:
        """Return this symbol's ``exchangeInfo`` entry."""
        name = self.name
        quote = next((q for q in _QUOTES if name.endswith(q) and len(name) > len(q)), name[-4:])
        base = name[: -len(quote)]
        tick = _fmt(Decimal(1).scaleb(-self.price_decimals))
        step = _fmt(Decimal(1).scaleb(-self.qty_decimals))
        return {
            "symbol": name,
            "status": "TRADING",
            "baseAsset": base,
            "baseAssetPrecision": 8,
            "quoteAsset": quote,
            "quotePrecision": 8,
            "quoteAssetPrecision": 8,
            "baseCommissionPrecision": 8,
            "quoteCommissionPrecision": 8,
            "orderTypes": [
                "LIMIT",
                "LIMIT_MAKER",
                "MARKET",
                "STOP_LOSS_LIMIT",
                "TAKE_PROFIT_LIMIT",
            ],
            "icebergAllowed": True,
            "ocoAllowed": True,
            "otoAllowed": True,
            "quoteOrderQtyMarketAllowed": True,
            "allowTrailingStop": True,
            "cancelReplaceAllowed": True,
            "isSpotTradingAllowed": True,
            "isMarginTradingAllowed": False,
            "filters": [
                {
                    "filterType": "PRICE_FILTER",
                    "minPrice": tick,
                    "maxPrice": "1000000.00000000",
                    "tickSize": tick,
                },
                {
                    "filterType": "LOT_SIZE",
                    "minQty": step,
                    "maxQty": "9000.00000000",
                    "stepSize": step,
                },
                {"filterType": "ICEBERG_PARTS", "limit": 10},
                {
                    "filterType": "MARKET_LOT_SIZE",
                    "minQty": "0.00000000",
                    "maxQty": "1000.00000000",
                    "stepSize": "0.00000000",
                },
                {
                    "filterType": "NOTIONAL",
                    "minNotional": "5.00000000",
                    "applyMinToMarket": True,
                    "maxNotional": "9000000.00000000",
                    "applyMaxToMarket": False,
                    "avgPriceMins": 5,
                },
                {"filterType": "MAX_NUM_ORDERS", "maxNumOrders": 200},
                {"filterType": "MAX_NUM_ALGO_ORDERS", "maxNumAlgoOrders": 5},
            ],
            "permissions": [],
            "permissionSets": [["SPOT"]],
            "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
            "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
        }


_DAY_MS = INTERVALS_MS["1d"]
# Markets added to a universe: a stablecoin pair and a leveraged token, busier than any coin.
_EXTRA_MARKETS = {"USDCUSDT": 1.0, "ETHUPUSDT": 5.0}
_EXTRA_VOLUME = 1e12
# The ticker streams ccxt's watch_tickers subscribes to (its default channel: miniTicker).
_TICKER_KINDS = ("miniTicker", "ticker")


def _num(value: float) -> str:
    """Format a float the way Binance does (8 places) unless that would not read back exactly."""
    text = f"{value:.8f}"
    if float(text) == value:
        return text
    return np.format_float_positional(value, unique=True, trim="0")


def _day_of(value: int | str) -> int:
    """Return the UTC day open (epoch ms) of epoch ms or an ISO date/time."""
    if isinstance(value, str):
        when = datetime.fromisoformat(value)
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        value = int(when.timestamp() * 1000)
    return value - value % _DAY_MS


class _Listing:
    """One universe market: its daily bars, today's intraday price and traded volume."""

    def __init__(self, name: str, bars: BarFrame) -> None:
        self.name = name  # upper case, e.g. ADAUSDT
        self.info = _Symbol(name)
        self.info.price_decimals = 8
        self.info.qty_decimals = 8
        self.time = np.asarray(bars.time, dtype=np.int64)
        self.open = np.asarray(bars.open, dtype=np.float64)
        self.high = np.asarray(bars.high, dtype=np.float64)
        self.low = np.asarray(bars.low, dtype=np.float64)
        self.close = np.asarray(bars.close, dtype=np.float64)
        self.volume = np.asarray(bars.volume, dtype=np.float64)
        self.price: float | None = None  # today's latest price, once a test set one
        self.traded = 0.0  # today's base volume so far
        self.failing = False

    def listed(self, day: int) -> bool:
        """Tell whether the market trades on ``day``: listed by then, a bar the day before."""
        return bool(self.time.size) and self.time[0] <= day and self.time[-1] >= day - _DAY_MS

    def _row(self, day: int) -> int | None:
        """Return the row of the bar opening at ``day``, or None."""
        row = int(np.searchsorted(self.time, day))
        return row if row < self.time.size and self.time[row] == day else None

    def forming(self, day: int) -> list[float] | None:
        """Return today's bar so far [t, o, h, l, c, v] (None without a bar today)."""
        row = self._row(day)
        if row is None:
            return None
        first = float(self.open[row])
        last = first if self.price is None else self.price
        return [day, first, max(first, last), min(first, last), last, self.traded]

    def rows(self, day: int, start: int | None, end: int | None, limit: int) -> list[list[Any]]:
        """Return ``GET /api/v3/klines?interval=1d`` rows: closed days, then today's bar."""
        closed = int(np.searchsorted(self.time, day))
        bars = [
            [int(self.time[i]), float(self.open[i]), float(self.high[i]), float(self.low[i]),
             float(self.close[i]), float(self.volume[i])]
            for i in range(closed)
        ]  # fmt: skip
        today = self.forming(day)
        if today is not None:
            bars.append(today)
        chosen = [
            b for b in bars if (start is None or b[0] >= start) and (end is None or b[0] <= end)
        ]
        chosen = chosen[:limit] if start is not None else chosen[-limit:]
        return [
            [int(t), _num(o), _num(h), _num(lo), _num(c), _num(v), int(t) + _DAY_MS - 1,
             _num(c * v), 1, "0", "0", "0"]
            for t, o, h, lo, c, v in chosen
        ]  # fmt: skip

    def ticker(self, day: int, now_ms: int) -> dict[str, Any]:
        """Return the ``ticker/24hr`` entry: today's price, the last closed day's volume."""
        closed = int(np.searchsorted(self.time, day))
        today = self.forming(day)
        before = float(self.close[closed - 1]) if closed else math.nan
        first = today[1] if today is not None else before
        last = today[4] if today is not None else before
        volume = float(self.volume[closed - 1]) if closed else 0.0
        quote = volume * before if closed else 0.0
        change = last - first
        return {
            "symbol": self.name,
            "priceChange": _num(change),
            "priceChangePercent": f"{100 * change / first:.3f}" if first else "0.000",
            "weightedAvgPrice": _num(last),
            "prevClosePrice": _num(before if closed else last),
            "lastPrice": _num(last),
            "lastQty": "1.00000000",
            "bidPrice": _num(last),
            "bidQty": "1.00000000",
            "askPrice": _num(last),
            "askQty": "1.00000000",
            "openPrice": _num(first),
            "highPrice": _num(max(first, last)),
            "lowPrice": _num(min(first, last)),
            "volume": _num(volume),
            "quoteVolume": _num(quote),
            "openTime": now_ms - _DAY_MS,
            "closeTime": now_ms,
            "firstId": 0,
            "lastId": 0,
            "count": 1,
        }

    def event(self, kind: str, day: int, now_ms: int) -> dict[str, Any]:
        """Return a ``24hrMiniTicker`` (``miniTicker``) or ``24hrTicker`` (``ticker``) event."""
        rest = self.ticker(day, now_ms)
        if kind == "miniTicker":
            return {
                "e": "24hrMiniTicker",
                "E": now_ms,
                "s": self.name,
                "c": rest["lastPrice"],
                "o": rest["openPrice"],
                "h": rest["highPrice"],
                "l": rest["lowPrice"],
                "v": rest["volume"],
                "q": rest["quoteVolume"],
            }
        return {
            "e": "24hrTicker",
            "E": now_ms,
            "s": self.name,
            "p": rest["priceChange"],
            "P": rest["priceChangePercent"],
            "w": rest["weightedAvgPrice"],
            "x": rest["prevClosePrice"],
            "c": rest["lastPrice"],
            "Q": rest["lastQty"],
            "b": rest["bidPrice"],
            "B": rest["bidQty"],
            "a": rest["askPrice"],
            "A": rest["askQty"],
            "o": rest["openPrice"],
            "h": rest["highPrice"],
            "l": rest["lowPrice"],
            "v": rest["volume"],
            "q": rest["quoteVolume"],
            "O": rest["openTime"],
            "C": rest["closeTime"],
            "F": 0,
            "L": 0,
            "n": 1,
        }


def _extra_bars(days: np.ndarray, price: float) -> BarFrame:
    """Return flat daily bars at ``price`` with a huge volume on every given day."""
    flat = np.full(days.size, price)
    return BarFrame(days, flat, flat, flat, flat.copy(), np.full(days.size, _EXTRA_VOLUME))


def load_universe_bars(paths: Iterable[Path | str], quote: str = "USDT") -> dict[str, BarFrame]:
    """Load ``<BASE><QUOTE>_1d.csv`` files (folders or files) as symbol -> daily bars."""
    coins = load_universe(paths, quote)
    return {f"{base}{quote.upper()}": coin.bars for base, coin in coins.items()}


class _Conn:
    """One websocket connection: its subscriptions and its outgoing queue."""

    __slots__ = ("alive", "combined", "queue", "streams", "wake", "ws")

    def __init__(self, ws: ServerConnection, combined: bool) -> None:
        self.ws = ws
        self.combined = combined
        self.streams: set[str] = set()
        self.queue: deque[str | bytes] = deque()
        self.wake = asyncio.Event()
        self.alive = True

    def push(self, message: str | bytes) -> None:
        """Queue one frame for the sender task."""
        self.queue.append(message)
        self.wake.set()


def _stream_name(name: Any) -> str | None:
    """Normalise a stream name: lower-case symbol, interval case kept (``1M`` is a month)."""
    if not isinstance(name, str) or "@" not in name:
        return None
    if name.startswith("!"):  # all-market streams: ``!miniTicker@arr``
        return name
    symbol, _, rest = name.partition("@")
    return f"{symbol.lower()}@{rest}"


def _json_response(status: int, payload: Any) -> Response:
    """Build an HTTP response with a JSON body."""
    body = _DUMPS(payload).encode()
    code = http.HTTPStatus(status)
    headers = Headers(
        [
            ("Date", email.utils.formatdate(usegmt=True)),
            ("Connection", "close"),
            ("Content-Type", "application/json;charset=UTF-8"),
            ("Content-Length", str(len(body))),
        ]
    )
    return Response(code.value, code.phrase, headers, body)


class _BadRequestError(Exception):
    """A REST request Binance would answer with HTTP 400."""

    def __init__(self, code: int, msg: str) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg


class FakeExchange:
    """A fake Binance spot exchange replaying captured trades to REST and websocket clients."""

    def __init__(
        self,
        captures: Sequence[Path | str] = (),
        *,
        speed: float = 0.0,
        drop_every: float | None = None,
        loop: bool = False,
        autostart: bool = True,
        start_paused: bool = False,
        universe: Mapping[str, BarFrame] | None = None,
        today: int | str | None = None,
        extra_markets: bool = True,
    ) -> None:
        if not captures and not universe:
            raise ValueError("at least one capture file (or a universe) is needed")
        self.speed = speed
        self.drop_every = drop_every
        self.loop = loop
        self.autostart = autostart
        self.burst = 8  # at speed 0, frames delivered between two yields to the event loop
        self._frames = self._merge([load_capture(Path(p)) for p in captures])
        self._symbols: dict[str, _Symbol] = {}
        self._index_symbols()
        if captures and not self._symbols:
            raise ValueError("the captures hold no @trade frames")
        self._universe = self._load_universe(universe or {}, extra_markets)
        first_event = next((f.event_ms for f in self._frames if f.event_ms is not None), 0)
        last_event = max((f.event_ms for f in self._frames if f.event_ms is not None), default=0)
        self._initial_clock = first_event - 1
        self._clock_ms = self._initial_clock
        # each --loop pass is shifted by the capture's span, rounded up to whole minutes
        self._loop_shift_ms = (math.ceil((last_event - first_event + 1) / 60_000) + 1) * 60_000
        self._conns: set[_Conn] = set()
        self._subs: dict[str, set[_Conn]] = {}
        self._kline_subs: dict[str, dict[str, int]] = {}  # symbol -> interval -> subscribers
        self._server: Server | None = None
        self._port = 0
        self._replay_task: asyncio.Task[None] | None = None
        self._drop_task: asyncio.Task[None] | None = None
        self._running = asyncio.Event()  # cleared while paused
        if not start_paused:
            self._running.set()
        self._muted = False
        self._sub_changed = asyncio.Event()
        self._drained = asyncio.Event()
        self._senders: set[asyncio.Task[None]] = set()
        self.replay_done = asyncio.Event()
        self.frames_sent = 0
        self.position = 0
        self.passes = 0
        self.drops = 0
        self.rest_requests: list[str] = []
        self._day_ms = 0
        self._time_of_day_ms = 0
        if self._universe:
            last = max(int(x.time[-1]) for x in self._universe.values() if x.time.size)
            self.set_day(last if today is None else today)

    # ------------------------------------------------------------------ loading

    @staticmethod
    def _load_universe(
        universe: Mapping[str, BarFrame], extra_markets: bool
    ) -> dict[str, _Listing]:
        """Index the universe's daily bars by symbol, adding the extra markets."""
        listings: dict[str, _Listing] = {}
        for symbol, bars in universe.items():
            name = symbol.replace("/", "").upper()
            listing = _Listing(name, bars)
            if listing.time.size and (listing.time % _DAY_MS).any():
                raise ValueError(f"{name}: universe bars must open at 00:00 UTC")
            listings[name] = listing
        if extra_markets and listings:
            days = np.unique(np.concatenate([x.time for x in listings.values()]))
            for name, price in _EXTRA_MARKETS.items():
                listings.setdefault(name, _Listing(name, _extra_bars(days, price)))
        return listings

    @staticmethod
    def _merge(per_file: list[list[_Frame]]) -> list[_Frame]:
        """Merge the captures' frames by receive time (stable)."""
        merged = [frame for frames in per_file for frame in frames]
        merged.sort(key=lambda f: f.recv_ns)
        return merged

    def _index_symbols(self) -> None:
        """Collect per-symbol trades, tick/step sizes and each trade's next trade time."""
        last_by_symbol: dict[str, int] = {}
        self._next_trade_ms: list[int | None] = [None] * len(self._frames)
        for index, frame in enumerate(self._frames):
            data = frame.data
            if data is None:
                continue
            name = str(data["s"]).upper()
            sym = self._symbols.get(name)
            if sym is None:
                sym = self._symbols[name] = _Symbol(name)
            sym.trades.append(data)
            sym.price_decimals = max(sym.price_decimals, _decimals(data["p"]))
            sym.qty_decimals = max(sym.qty_decimals, _decimals(data["q"]))
            previous = last_by_symbol.get(name)
            if previous is not None:
                self._next_trade_ms[previous] = data["T"]
            last_by_symbol[name] = index
        for sym in self._symbols.values():
            sym.id_span = sym.trades[-1]["t"] - sym.trades[0]["t"] + 1

    # ------------------------------------------------------------------ public API

    @property
    def port(self) -> int:
        """Return the listening port (0 before ``start``)."""
        return self._port

    @property
    def ws_url(self) -> str:
        """Return the websocket base URL for ccxt's ``urls['api']['ws']['spot']``."""
        return f"ws://127.0.0.1:{self._port}/stream/ws"

    @property
    def rest_url(self) -> str:
        """Return the REST base URL for ccxt's ``urls['api']['public']``."""
        return f"http://127.0.0.1:{self._port}/api/v3"

    @property
    def clock_ms(self) -> int:
        """Return the replay clock: the exchange time of the latest replayed frame."""
        return self._clock_ms

    @property
    def symbols(self) -> list[str]:
        """Return the loaded symbols (``ETHUSDT`` ...)."""
        return list(self._symbols)

    @property
    def paused(self) -> bool:
        """Return whether the stream is silenced."""
        return self._muted or not self._running.is_set()

    @property
    def connection_count(self) -> int:
        """Return the number of open websocket connections."""
        return len(self._conns)

    @property
    def replay_started(self) -> bool:
        """Return whether the replay clock has started."""
        return self._replay_task is not None

    @property
    def today(self) -> int:
        """Return the open time (epoch ms) of the universe's forming day."""
        return self._day_ms

    @property
    def universe_now_ms(self) -> int:
        """Return the universe's clock: today's open plus the time of day set."""
        return self._day_ms + self._time_of_day_ms

    @property
    def universe_symbols(self) -> list[str]:
        """Return the universe's markets listed today (``ADAUSDT`` ...)."""
        return [name for name, x in self._universe.items() if x.listed(self._day_ms)]

    def set_day(self, day: int | str, *, at_ms: int = _DAY_MS // 2) -> None:
        """Make ``day`` (epoch ms or ISO date) today, ``at_ms`` into it, at its open price."""
        if not 0 <= at_ms < _DAY_MS:
            raise ValueError("at_ms must be within the day")
        self._day_ms = _day_of(day)
        self._time_of_day_ms = at_ms
        for listing in self._universe.values():
            listing.price = None
            listing.traded = 0.0
        if not self._frames:  # without captures the universe's clock is the exchange's
            self._clock_ms = self.universe_now_ms

    def advance_day(self, days: int = 1, *, at_ms: int | None = None) -> None:
        """Close today (with its real bar) and the days after it, ``days`` in all."""
        at = self._time_of_day_ms if at_ms is None else at_ms
        self.set_day(self._day_ms + days * _DAY_MS, at_ms=at)

    async def set_prices(
        self, prices: Mapping[str, float], volumes: Mapping[str, float] | None = None
    ) -> int:
        """Set today's prices (and base volumes), push them; return how many streams had them."""
        changed = []
        for symbol, price in prices.items():
            listing = self._listing(symbol)
            listing.price = float(price)
            if volumes is not None and symbol in volumes:
                listing.traded = float(volumes[symbol])
            changed.append(listing)
        now = self.universe_now_ms
        sent = 0
        for kind in _TICKER_KINDS:
            events = [x.event(kind, self._day_ms, now) for x in changed]
            for listing, event in zip(changed, events, strict=True):
                sent += self._deliver(f"{listing.name.lower()}@{kind}", None, event)
            if events:
                sent += self._deliver(f"!{kind}@arr", None, events)
        await asyncio.sleep(0)
        return sent

    def fail_symbol(self, symbol: str, failing: bool = True) -> None:
        """Answer a universe market's klines with 400 Invalid symbol (listed, yet delisted)."""
        self._listing(symbol).failing = failing

    def daily_bars(self, symbol: str) -> list[list[Any]]:
        """Return what ``GET /api/v3/klines?interval=1d&limit=1000`` would answer now."""
        return self._listing(symbol).rows(self._day_ms, None, None, 1000)

    def _listing(self, symbol: str) -> _Listing:
        """Look a universe market up by ``ADAUSDT``, ``adausdt`` or ``ADA/USDT``."""
        key = symbol.replace("/", "").upper()
        if key not in self._universe:
            raise KeyError(f"no symbol {symbol!r} in the universe")
        return self._universe[key]

    def trades(self, symbol: str) -> list[dict[str, Any]]:
        """Return a symbol's captured trade ``data`` dicts (``ETH/USDT`` or ``ETHUSDT``)."""
        return list(self._symbol(symbol).trades)

    def replayed_trades(self, symbol: str) -> list[dict[str, Any]]:
        """Return the trade ``data`` dicts of a symbol replayed so far (time-shifted on loops)."""
        return list(self._symbol(symbol).replayed)

    def klines(
        self,
        symbol: str,
        interval: str,
        start: int | None = None,
        end: int | None = None,
        limit: int = 1000,
    ) -> list[list[Any]]:
        """Return what ``GET /api/v3/klines`` would answer now."""
        return self._symbol(symbol).builder(interval).rows(self._clock_ms, start, end, limit)

    def subscribers(self, stream: str) -> int:
        """Return how many connections subscribe to a stream name."""
        name = _stream_name(stream)
        return len(self._subs.get(name, ())) if name else 0

    async def wait_subscribed(self, *streams: str) -> None:
        """Wait until every given stream has at least one subscriber."""
        while not all(self.subscribers(s) for s in streams):
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
            max_queue=None,
        )
        self._port = self._server.sockets[0].getsockname()[1]
        if not self.autostart:
            self.start_replay()
        if self.drop_every:
            self._drop_task = asyncio.create_task(self._drop_loop(self.drop_every))
        log.info("fake exchange on port %d, symbols %s", self._port,
                 ", ".join([*self._symbols, *self._universe]))  # fmt: skip
        return self._port

    async def stop(self) -> None:
        """Stop the replay, close every connection and the server."""
        for task in (self._replay_task, self._drop_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for task in list(self._senders):
            task.cancel()

    def start_replay(self) -> None:
        """Start the replay clock now (otherwise the first SUBSCRIBE starts it)."""
        if not self._frames:  # a universe without captures: nothing to replay
            self.replay_done.set()
            return
        if self._replay_task is None:
            self._replay_task = asyncio.create_task(self._replay())

    def pause(self, *, keep_clock: bool = False) -> None:
        """Stop sending frames, sockets stay open; ``keep_clock`` lets the replay run on unseen."""
        if keep_clock:
            self._muted = True
        else:
            self._running.clear()

    def resume(self) -> None:
        """Send frames again (the clock resumes where it stopped unless it was kept running)."""
        self._muted = False
        self._running.set()

    async def inject(self, raw: str | bytes) -> int:
        """Send a raw frame to every open connection (even while paused); return how many."""
        conns = [c for c in self._conns if c.alive]
        for conn in conns:
            conn.push(raw)
        await asyncio.sleep(0)
        return len(conns)

    async def drop_connections(self, code: int = 1001, reason: str = "fake exchange drop") -> int:
        """Close every websocket connection now; frames queued for them are lost."""
        conns = list(self._conns)
        for conn in conns:
            self._forget(conn)
        self.drops += 1
        await asyncio.gather(*(c.ws.close(code, reason) for c in conns), return_exceptions=True)
        if conns:
            log.info("dropped %d connection(s) with code %d", len(conns), code)
        return len(conns)

    # ------------------------------------------------------------------ replay

    async def _replay(self) -> None:
        """Replay every frame in receive-time order, paced at ``speed`` times real time."""
        loop = asyncio.get_running_loop()
        fast = self.speed <= 0 or math.isinf(self.speed)
        try:
            while True:
                shift_ms = self.passes * self._loop_shift_ms
                anchor: tuple[float, int] | None = None
                burst = 0
                for index, frame in enumerate(self._frames):
                    while True:
                        if not self._running.is_set():
                            await self._running.wait()
                            anchor = None
                        if fast:
                            break
                        if anchor is None:
                            anchor = (loop.time(), frame.recv_ns)
                        due = anchor[0] + (frame.recv_ns - anchor[1]) / 1e9 / self.speed
                        delay = due - loop.time()
                        if delay > 0:
                            await asyncio.sleep(delay)
                        if self._running.is_set():
                            break
                    self.position = index + 1
                    if self._emit(frame, self._next_trade_ms[index], shift_ms) and fast:
                        burst += 1
                    if fast and (burst >= self.burst or index % 512 == 0):
                        burst = 0
                        await self._backpressure()
                self.passes += 1
                self.replay_done.set()
                log.info("replay pass %d done, clock %d", self.passes, self._clock_ms)
                if not self.loop:
                    return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("replay failed")
            raise

    async def _backpressure(self) -> None:
        """Yield, then wait while some connection's queue is above the high-water mark."""
        await asyncio.sleep(0)
        while any(len(c.queue) > _HIGH_WATER for c in self._conns):
            self._drained.clear()
            await self._drained.wait()

    def _emit(self, frame: _Frame, next_ms: int | None, shift_ms: int) -> bool:
        """Advance the clock and state by one frame and queue it to subscribers."""
        if frame.event_ms is not None and frame.event_ms + shift_ms > self._clock_ms:
            self._clock_ms = frame.event_ms + shift_ms
        data = frame.data
        deliver = not self._muted
        sent = False
        if data is None:
            if deliver:
                sent = self._deliver(frame.stream, frame.raw, None)
            return sent
        sym = self._symbols[str(data["s"]).upper()]
        raw: str = frame.raw
        if shift_ms:
            data = dict(data)
            data["E"] += shift_ms
            data["T"] += shift_ms
            data["t"] += self.passes * sym.id_span
            raw = _DUMPS({"stream": frame.stream, "data": data})
        if next_ms is not None:
            next_ms += shift_ms
        elif self.loop:
            next_ms = sym.trades[0]["T"] + shift_ms + self._loop_shift_ms
        sym.replayed.append(data)
        if deliver:
            sent = self._deliver(frame.stream, raw, None)
        wanted = self._kline_subs.get(frame.symbol, {})
        for interval, builder in sym.builders.items():
            bar = builder.add(data)
            if deliver and wanted.get(interval):
                closed = builder.closes_bar(data["T"], next_ms)
                event = {"e": "kline", "E": data["E"], "s": sym.name}
                event["k"] = bar.ws_kline(sym.name, interval, closed)
                stream = f"{frame.symbol}@kline_{interval}"
                sent |= self._deliver(stream, None, event)
        return sent

    def _deliver(self, stream: str, raw: str | None, event: Any) -> bool:
        """Queue one stream event (raw combined text, an event dict or list) to its subscribers.

        An all-market array goes out bare even on a combined connection: ccxt reads arrays
        only bare (from Binance it has them on a raw ``/ws`` connection; the fake's
        ``/stream/ws`` URL, which ccxt needs to route spot, is a combined one).
        """
        conns = self._subs.get(stream)
        if not conns:
            return False
        combined = raw
        plain: str | None = None
        for conn in conns:
            if conn.combined and not isinstance(event, list):
                if combined is None:
                    combined = _DUMPS({"stream": stream, "data": event})
                conn.push(combined)
            else:
                if plain is None:
                    if event is not None:
                        plain = _DUMPS(event)
                    else:
                        assert raw is not None
                        plain = raw[raw.index('"data":') + 7 : -1]
                conn.push(plain)
        return True

    async def _drop_loop(self, every: float) -> None:
        """Close every connection every ``every`` seconds of wall time."""
        while True:
            await asyncio.sleep(every)
            await self.drop_connections(1001)

    # ------------------------------------------------------------------ websocket side

    async def _handler(self, ws: ServerConnection) -> None:
        """Serve one websocket connection: subscriptions in, stream frames out."""
        path = ws.request.path if ws.request is not None else "/stream"
        parts = urlsplit(path)
        conn = _Conn(ws, combined=not parts.path.startswith("/ws"))
        self._conns.add(conn)
        sender = asyncio.create_task(self._sender(conn))
        self._senders.add(sender)
        sender.add_done_callback(self._senders.discard)
        initial = [s for q in parse_qs(parts.query).get("streams", []) for s in q.split("/")]
        if not initial and parts.path.startswith("/ws/") and "@" in parts.path:
            initial = [parts.path[len("/ws/") :]]
        if initial:
            self._subscribe(conn, initial)
        try:
            async for message in ws:
                self._on_message(conn, message)
        except ConnectionClosed:
            pass
        finally:
            self._forget(conn)
            sender.cancel()

    async def _sender(self, conn: _Conn) -> None:
        """Write a connection's queued frames in order."""
        try:
            while conn.alive:
                await conn.wake.wait()
                conn.wake.clear()
                while conn.queue and conn.alive:
                    await conn.ws.send(conn.queue.popleft())
                    self.frames_sent += 1
                    if len(conn.queue) <= _HIGH_WATER // 2:
                        self._drained.set()
        except ConnectionClosed:
            self._forget(conn)

    def _forget(self, conn: _Conn) -> None:
        """Drop a connection from every subscription; its queued frames are lost."""
        if not conn.alive:
            return
        conn.alive = False
        self._unsubscribe(conn, list(conn.streams))
        conn.queue.clear()
        conn.wake.set()
        self._conns.discard(conn)
        self._drained.set()

    def _on_message(self, conn: _Conn, message: str | bytes) -> None:
        """Handle one client request (SUBSCRIBE, UNSUBSCRIBE, LIST_SUBSCRIPTIONS ...)."""
        try:
            request = json.loads(message)
        except ValueError:
            conn.push(_DUMPS({"code": 3, "msg": "Invalid JSON: expected value", "id": None}))
            return
        if not isinstance(request, dict):
            conn.push(_DUMPS({"code": 2, "msg": "Invalid request", "id": None}))
            return
        method = request.get("method")
        ident = request.get("id")
        params = request.get("params") or []
        log.debug(
            "%s %s %s id=%s", conn.ws.request.path if conn.ws.request else "", method, params, ident
        )
        if method == "SUBSCRIBE" and isinstance(params, list):
            conn.push(_DUMPS({"result": None, "id": ident}))
            self._subscribe(conn, params)
        elif method == "UNSUBSCRIBE" and isinstance(params, list):
            self._unsubscribe(conn, params)
            conn.push(_DUMPS({"result": None, "id": ident}))
        elif method == "LIST_SUBSCRIPTIONS":
            conn.push(_DUMPS({"result": sorted(conn.streams), "id": ident}))
        elif method == "SET_PROPERTY" and params[:1] == ["combined"]:
            conn.combined = bool(params[1]) if len(params) > 1 else conn.combined
            conn.push(_DUMPS({"result": None, "id": ident}))
        elif method == "GET_PROPERTY" and params[:1] == ["combined"]:
            conn.push(_DUMPS({"result": conn.combined, "id": ident}))
        else:
            msg = f"Invalid request: unknown variant {method}"
            conn.push(_DUMPS({"code": 2, "msg": msg, "id": ident}))

    def _subscribe(self, conn: _Conn, params: Iterable[Any]) -> None:
        """Add streams to a connection; the first subscription starts the replay."""
        for param in params:
            name = _stream_name(param)
            if name is None or name in conn.streams or not conn.alive:
                continue
            conn.streams.add(name)
            self._subs.setdefault(name, set()).add(conn)
            symbol, _, kind = name.partition("@")
            if kind.startswith("kline_"):
                interval = kind[len("kline_") :]
                upper = symbol.upper()
                if interval in INTERVALS_MS and upper in self._symbols:
                    self._symbols[upper].builder(interval)
                    counts = self._kline_subs.setdefault(symbol, {})
                    counts[interval] = counts.get(interval, 0) + 1
        self._sub_changed.set()
        if self.autostart:
            self.start_replay()

    def _unsubscribe(self, conn: _Conn, params: Iterable[Any]) -> None:
        """Remove streams from a connection."""
        for param in params:
            name = _stream_name(param)
            if name is None or name not in conn.streams:
                continue
            conn.streams.discard(name)
            subs = self._subs.get(name)
            if subs is not None:
                subs.discard(conn)
                if not subs:
                    del self._subs[name]
            symbol, _, kind = name.partition("@")
            counts = self._kline_subs.get(symbol)
            if kind.startswith("kline_") and counts is not None:
                interval = kind[len("kline_") :]
                if counts.get(interval, 0) > 0:
                    counts[interval] -= 1
        self._sub_changed.set()

    # ------------------------------------------------------------------ REST side

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        """Answer plain HTTP GETs (REST); let websocket upgrades through."""
        if "websocket" in request.headers.get("Upgrade", "").lower():
            return None
        parts = urlsplit(request.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        self.rest_requests.append(request.path)
        log.debug("GET %s", request.path)
        routes = {
            "/api/v3/ping": lambda: {},
            "/api/v3/time": lambda: {"serverTime": self._clock_ms},
            "/api/v3/exchangeInfo": lambda: self._exchange_info(query),
            "/api/v3/klines": lambda: self._rest_klines(query),
            "/api/v3/uiKlines": lambda: self._rest_klines(query),
            "/api/v3/trades": lambda: self._rest_trades(query),
            "/api/v3/aggTrades": lambda: self._rest_agg_trades(query),
            "/api/v3/ticker/24hr": lambda: self._rest_tickers(query),
        }
        route = routes.get(parts.path.rstrip("/"))
        if route is None:
            return _json_response(404, {"code": -1, "msg": f"Not found: {parts.path}"})
        try:
            return _json_response(200, route())
        except _BadRequestError as exc:
            return _json_response(400, {"code": exc.code, "msg": exc.msg})

    def _symbol(self, name: str) -> _Symbol:
        """Look a symbol up by ``ETHUSDT``, ``ethusdt`` or ``ETH/USDT``."""
        key = name.replace("/", "").upper()
        if key not in self._symbols:
            raise KeyError(f"no symbol {name!r} in the captures")
        return self._symbols[key]

    def _query_symbol(self, query: dict[str, str]) -> _Symbol:
        """Return the symbol named by a REST query, or raise Binance's error."""
        name = query.get("symbol")
        if not name:
            raise _BadRequestError(-1102, "Mandatory parameter 'symbol' was not sent.")
        try:
            return self._symbol(name)
        except KeyError:
            raise _BadRequestError(-1121, "Invalid symbol.") from None

    @staticmethod
    def _int_param(query: dict[str, str], key: str) -> int | None:
        """Return an integer query parameter, or raise Binance's error."""
        value = query.get(key)
        if value is None:
            return None
        try:
            return int(value)
        except ValueError:
            raise _BadRequestError(
                -1100, f"Illegal characters found in parameter '{key}'."
            ) from None

    def _limit(self, query: dict[str, str], default: int, top: int) -> int:
        """Return the ``limit`` parameter within Binance's bounds."""
        limit = self._int_param(query, "limit")
        if limit is None:
            return default
        if limit <= 0:
            raise _BadRequestError(-1100, "Illegal characters found in parameter 'limit'.")
        return min(limit, top)

    def _exchange_info(self, query: dict[str, str]) -> dict[str, Any]:
        """Return ``GET /api/v3/exchangeInfo`` for the loaded symbols."""
        every = dict(self._symbols)
        for name in self.universe_symbols:
            every.setdefault(name, self._universe[name].info)
        chosen = list(every.values())
        try:
            if "symbol" in query:
                chosen = [every[query["symbol"].upper()]]
            elif "symbols" in query:
                chosen = [every[str(n).upper()] for n in json.loads(query["symbols"])]
        except (ValueError, KeyError, TypeError):
            raise _BadRequestError(-1121, "Invalid symbol.") from None
        return {
            "timezone": "UTC",
            "serverTime": self._clock_ms,
            "rateLimits": [
                {
                    "rateLimitType": "REQUEST_WEIGHT",
                    "interval": "MINUTE",
                    "intervalNum": 1,
                    "limit": 6000,
                },
                {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
                {
                    "rateLimitType": "RAW_REQUESTS",
                    "interval": "MINUTE",
                    "intervalNum": 5,
                    "limit": 61000,
                },
            ],
            "exchangeFilters": [],
            "symbols": [s.exchange_info() for s in chosen],
        }

    def _rest_klines(self, query: dict[str, str]) -> list[list[Any]]:
        """Return ``GET /api/v3/klines`` built from the trades replayed so far."""
        listing = self._universe.get(query.get("symbol", "").upper())
        if listing is not None and query.get("symbol", "").upper() not in self._symbols:
            return self._universe_klines(listing, query)
        sym = self._query_symbol(query)
        interval = query.get("interval")
        if interval is None:
            raise _BadRequestError(-1102, "Mandatory parameter 'interval' was not sent.")
        if interval not in INTERVALS_MS:
            raise _BadRequestError(-1120, "Invalid interval.")
        start = self._int_param(query, "startTime")
        end = self._int_param(query, "endTime")
        limit = self._limit(query, 500, 1000)
        return sym.builder(interval).rows(self._clock_ms, start, end, limit)

    def _universe_klines(self, listing: _Listing, query: dict[str, str]) -> list[list[Any]]:
        """Return a universe market's daily klines up to today (its forming bar last)."""
        if listing.failing or not listing.listed(self._day_ms):
            raise _BadRequestError(-1121, "Invalid symbol.")
        interval = query.get("interval")
        if interval is None:
            raise _BadRequestError(-1102, "Mandatory parameter 'interval' was not sent.")
        if interval != "1d":
            raise _BadRequestError(-1120, "Invalid interval.")
        start = self._int_param(query, "startTime")
        end = self._int_param(query, "endTime")
        limit = self._limit(query, 500, 1000)
        return listing.rows(self._day_ms, start, end, limit)

    def _rest_tickers(self, query: dict[str, str]) -> Any:
        """Return ``GET /api/v3/ticker/24hr``: one symbol's, some symbols' or every one's."""
        listed = self.universe_symbols
        now = self.universe_now_ms
        try:
            if "symbol" in query:
                name = query["symbol"].upper()
                if name not in listed:
                    raise KeyError(name)
                return self._universe[name].ticker(self._day_ms, now)
            names = [str(n).upper() for n in json.loads(query.get("symbols", "null")) or listed]
            if not set(names) <= set(listed):
                raise KeyError(names)
        except (ValueError, KeyError, TypeError):
            raise _BadRequestError(-1121, "Invalid symbol.") from None
        return [self._universe[name].ticker(self._day_ms, now) for name in names]

    def _window(self, sym: _Symbol, query: dict[str, str]) -> list[dict[str, Any]]:
        """Select replayed trades by ``fromId``/``startTime``/``endTime``/``limit``."""
        trades = sym.replayed
        limit = self._limit(query, 500, 1000)
        from_id = self._int_param(query, "fromId")
        start = self._int_param(query, "startTime")
        end = self._int_param(query, "endTime")
        if from_id is not None:
            chosen = [t for t in trades if t["t"] >= from_id]
            return chosen[:limit]
        if start is not None or end is not None:
            chosen = [
                t
                for t in trades
                if (start is None or t["T"] >= start) and (end is None or t["T"] <= end)
            ]
            return chosen[:limit] if start is not None else chosen[-limit:]
        return trades[-limit:]

    def _rest_trades(self, query: dict[str, str]) -> list[dict[str, Any]]:
        """Return ``GET /api/v3/trades``: the most recent replayed trades."""
        sym = self._query_symbol(query)
        limit = self._limit(query, 500, 1000)
        return [
            {
                "id": t["t"],
                "price": t["p"],
                "qty": t["q"],
                "quoteQty": _fmt(Decimal(t["p"]) * Decimal(t["q"])),
                "time": t["T"],
                "isBuyerMaker": t["m"],
                "isBestMatch": t["M"],
            }
            for t in sym.replayed[-limit:]
        ]

    def _rest_agg_trades(self, query: dict[str, str]) -> list[dict[str, Any]]:
        """Return ``GET /api/v3/aggTrades``, one aggregate per captured trade."""
        sym = self._query_symbol(query)
        return [
            {
                "a": t["t"],
                "p": t["p"],
                "q": t["q"],
                "f": t["t"],
                "l": t["t"],
                "T": t["T"],
                "m": t["m"],
                "M": t["M"],
            }
            for t in self._window(sym, query)
        ]


def configure_ccxt(exchange: Any, ws_url: str, rest_url: str) -> None:
    """Point a ``ccxt.pro.binance`` client at the fake exchange (spot markets only)."""
    exchange.urls["api"]["ws"]["spot"] = ws_url
    exchange.urls["api"]["public"] = rest_url
    options = exchange.options
    options["fetchMarkets"] = {"types": ["spot"]}
    options["defaultType"] = "spot"


# ---------------------------------------------------------------------- CLI


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(
        prog="python -m moodring.testing.fake_exchange",
        description="Replay captured Binance spot frames as a local fake exchange for ccxt.pro.",
    )
    parser.add_argument("--capture", action="append", default=[], type=Path, help="capture file")
    parser.add_argument(
        "--universe",
        action="append",
        default=[],
        type=Path,
        help="folder or file of <BASE>USDT_1d.csv daily bars to serve",
    )
    parser.add_argument("--today", default=None, help="the universe's forming day (YYYY-MM-DD)")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0 = any free)")
    parser.add_argument(
        "--speed", type=float, default=1.0, help="times real time; 0 or inf = at once"
    )
    parser.add_argument("--drop-every", type=float, default=None, help="close sockets every N s")
    parser.add_argument("--start-paused", action="store_true", help="silent until SIGUSR2")
    parser.add_argument("--start-now", action="store_true", help="start the clock without waiting")
    parser.add_argument(
        "--loop", action="store_true", help="replay again, time-shifted, at the end"
    )
    parser.add_argument("--log-level", default="INFO", help="stderr log level")
    args = parser.parse_args(argv)
    if not args.capture and not args.universe:
        parser.error("give at least one --capture or --universe")
    return args


async def _serve(args: argparse.Namespace) -> None:
    """Run the fake exchange until SIGINT/SIGTERM."""
    fake = FakeExchange(
        args.capture,
        speed=args.speed,
        drop_every=args.drop_every,
        loop=args.loop,
        autostart=not args.start_now,
        start_paused=args.start_paused,
        universe=load_universe_bars(args.universe) if args.universe else None,
        today=args.today,
    )
    port = await fake.start(args.port)
    print(port, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, fake.pause)
    loop.add_signal_handler(signal.SIGUSR2, fake.resume)
    try:
        await stop.wait()
    finally:
        await fake.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    args = _parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("websockets").setLevel(logging.WARNING)
    asyncio.run(_serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
