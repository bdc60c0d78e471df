"""The common core of the fake exchange: captures, markets, bars, the replay clock, sockets.

A ``FakeExchange`` loads real Binance trade captures, gives each captured market the names
of the exchange it plays (``Protocol``, one module per exchange) and replays the trades in
the order of their receive times. One ``websockets`` server on 127.0.0.1 answers both the
REST calls (``process_request``) and the websocket connections; the protocol turns every
replayed trade into its exchange's frames and answers its exchange's REST paths, while the
core keeps the clock, the bars built from the replayed trades, the subscriptions, pausing,
drops and injection.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import functools
import gzip
import http
import json
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar, Self
from urllib.parse import parse_qs, urlsplit

import numpy as np
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from moodring.market.frame import BarFrame
from moodring.testing.fake_exchange.universe import (
    DAY_MS,
    EXTRA_MARKETS,
    Listing,
    day_of,
    extra_bars,
)

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
QUOTES = ("FDUSD", "USDT", "USDC", "TUSD", "BUSD", "EUR", "TRY", "BTC", "ETH", "BNB")
ZERO = Decimal(0)
DUMPS = json.JSONEncoder(separators=(",", ":")).encode
HIGH_WATER = 512  # at speed 0 the replay waits while a connection has more frames queued


def fmt8(value: Decimal) -> str:
    """Format a decimal with 8 places (Binance's way)."""
    return f"{value:.8f}"


def trim(text: str) -> str:
    """Drop a decimal string's trailing zeros (``"2683.80000000"`` -> ``"2683.8"``)."""
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text or "0"


def plain(value: Decimal) -> str:
    """Format a decimal without exponent or trailing zeros."""
    return trim(f"{value:f}")


def padded(value: Decimal | str, places: int) -> str:
    """Format a decimal with exactly ``places`` decimals (exact when it has no more)."""
    return f"{Decimal(value):.{places}f}"


def iso_time(ms: int, places: int = 6, *, strip: bool = False) -> str:
    """Format epoch ms as RFC 3339 UTC with ``places`` decimals (``strip``: no trailing 0s)."""
    seconds, milli = divmod(ms, 1000)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    fraction = f"{milli:03d}".ljust(places, "0")[:places]
    if strip:
        fraction = fraction.rstrip("0")
    return f"{stamp}.{fraction}Z" if fraction else f"{stamp}Z"


def instant_ms(value: int | str) -> int:
    """Return epoch ms of epoch ms or an ISO date/time (naive = UTC)."""
    if isinstance(value, int):
        return value
    moment = datetime.fromisoformat(value.strip())
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def decimals(text: str) -> int:
    """Return the number of significant decimals in a decimal string."""
    if "." not in text:
        return 0
    return len(text.rstrip("0").split(".", 1)[1])


def split_symbol(name: str) -> tuple[str, str]:
    """Split a Binance symbol (``ETHUSDT``) into base and quote."""
    quote = next((q for q in QUOTES if name.endswith(q) and len(name) > len(q)), name[-4:])
    return name[: -len(quote)], quote


class CaptureFrame:
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


def load_capture(path: Path) -> list[CaptureFrame]:
    """Read a ``<recv ns> <combined JSON>`` capture (gzip or plain); snapshots are skipped."""
    stat = path.stat()
    return list(_load_capture(str(path.resolve()), stat.st_mtime_ns, stat.st_size))


@functools.lru_cache(maxsize=8)
def _load_capture(path_text: str, mtime_ns: int, size: int) -> tuple[CaptureFrame, ...]:
    """Parse a capture once per process (frames are never mutated after indexing)."""
    path = Path(path_text)
    opener = gzip.open if path.suffix == ".gz" else open
    frames: list[CaptureFrame] = []
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
            frames.append(CaptureFrame(int(stamp), raw, stream, message["data"]))
    return tuple(frames)


class Bar:
    """One candle being built from trades (Binance kline fields, decimals kept exact)."""

    __slots__ = ("L", "Q", "T", "V", "c", "f", "h", "l", "n", "o", "q", "t", "v")

    def __init__(self, t: int, dur: int, price: Decimal) -> None:
        self.t = t
        self.T = t + dur - 1
        self.f = -1
        self.L = -1
        self.o = self.h = self.l = self.c = price
        self.v = self.q = self.V = self.Q = ZERO
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

    @property
    def vwap(self) -> Decimal:
        """Return the volume-weighted average price (zero without trades)."""
        return self.q / self.v if self.v else ZERO

    def rest_row(self) -> list[Any]:
        """Return the bar as a Binance ``GET /api/v3/klines`` row."""
        return [
            self.t,
            fmt8(self.o),
            fmt8(self.h),
            fmt8(self.l),
            fmt8(self.c),
            fmt8(self.v),
            self.T,
            fmt8(self.q),
            self.n,
            fmt8(self.V),
            fmt8(self.Q),
            "0",
        ]


class BarBuilder:
    """Candles of one market and interval, built from the trades replayed so far."""

    def __init__(self, interval: str) -> None:
        self.interval = interval
        self.dur = INTERVALS_MS[interval]
        self.bars: list[Bar] = []

    def add(self, trade: dict[str, Any]) -> Bar:
        """Fold a trade in (opening bars, empty ones for gaps, as needed); return its bar."""
        start = trade["T"] - trade["T"] % self.dur
        bars = self.bars
        if not bars:
            bars.append(Bar(start, self.dur, Decimal(trade["p"])))
        elif start > bars[-1].t:
            while bars[-1].t + self.dur < start:
                bars.append(Bar(bars[-1].t + self.dur, self.dur, bars[-1].c))
            bars.append(Bar(start, self.dur, bars[-1].c))
        bar = bars[-1]
        bar.add(trade)
        return bar

    def closes_bar(self, trade_ms: int, next_trade_ms: int | None) -> bool:
        """Return whether the next trade falls in a later bar than this one."""
        if next_trade_ms is None:
            return False
        return next_trade_ms // self.dur > trade_ms // self.dur

    def upto(self, clock_ms: int) -> list[Bar]:
        """Return every bar up to the one holding ``clock_ms`` (empty bars fill gaps)."""
        bars = self.bars
        if not bars:
            return []
        extra: list[Bar] = []
        clock_start = clock_ms - clock_ms % self.dur
        last = bars[-1]
        while last.t < clock_start:
            last = Bar(last.t + self.dur, self.dur, last.c)
            extra.append(last)
        return bars + extra if extra else bars

    def select(self, clock_ms: int, start: int | None, end: int | None, limit: int) -> list[Bar]:
        """Return up to ``limit`` bars opening in [start, end]: the first ones from a start."""
        chosen = [
            b
            for b in self.upto(clock_ms)
            if (start is None or b.t >= start) and (end is None or b.t <= end)
        ]
        return chosen[:limit] if start is not None else chosen[-limit:]

    def rows(
        self, clock_ms: int, start: int | None, end: int | None, limit: int
    ) -> list[list[Any]]:
        """Return Binance REST rows up to the bar holding ``clock_ms``."""
        return [b.rest_row() for b in self.select(clock_ms, start, end, limit)]


class Market:
    """One replayed market: a capture's trades under the played exchange's names."""

    def __init__(self, capture: str, base: str, quote: str) -> None:
        self.capture = capture  # the capture's symbol, upper case, e.g. ETHUSDT
        self.base = base
        self.quote = quote
        self.symbol = f"{base}/{quote}"  # the ccxt symbol
        self.id = f"{base}{quote}"  # the exchange's market id (set by the protocol)
        self.trades: list[dict[str, Any]] = []  # capture trade data, as captured
        self.replayed: list[dict[str, Any]] = []  # trade data replayed so far (shifted on loops)
        self.builders: dict[str, BarBuilder] = {}
        self.candle_topics: dict[str, str] = {}  # interval -> the protocol's candle topic
        self.price_decimals = 2
        self.qty_decimals = 0
        self.id_span = 1
        # relabelled markets replaying this one's trades (``relabel=``), and for a follower:
        # its place among them, its trades' next id, and when each candle topic last went out
        self.followers: list[Market] = []
        self.phase = 0
        self.next_id = 1
        self.leader: Market | None = None  # for a follower: the market it replays
        self.candle_slot: dict[str, int] = {}

    def follower(self, base: str, phase: int) -> Market:
        """Return a market replaying this one's trades under another base (bars shared)."""
        market = Market(self.capture, base, self.quote)
        market.trades, market.replayed, market.builders = self.trades, self.replayed, self.builders
        market.price_decimals, market.qty_decimals = self.price_decimals, self.qty_decimals
        market.id_span, market.phase, market.leader = self.id_span, phase, self
        return market

    def builder(self, interval: str) -> BarBuilder:
        """Return the bar builder of ``interval``, catching it up with the replayed trades."""
        found = self.builders.get(interval)
        if found is None:
            found = self.builders[interval] = BarBuilder(interval)
            for trade in self.replayed:
                found.add(trade)
        return found


class Conn:
    """One websocket connection: its subscriptions, its outgoing queue, protocol state."""

    __slots__ = (
        "alive",
        "beats",
        "combined",
        "ident",
        "path",
        "queue",
        "seq",
        "topics",
        "wake",
        "ws",
    )

    def __init__(self, ws: ServerConnection, path: str, ident: int) -> None:
        self.ws = ws
        self.path = path
        self.ident = ident
        self.combined = True  # Binance: combined-stream framing
        self.seq = 0  # Coinbase: the next sequence_num on this connection
        self.beats = 0  # heartbeats sent on this connection
        self.topics: set[str] = set()
        self.queue: deque[str | bytes] = deque()
        self.wake = asyncio.Event()
        self.alive = True

    def push(self, message: str | bytes) -> None:
        """Queue one frame for the sender task."""
        self.queue.append(message)
        self.wake.set()


class RestError(Exception):
    """A REST answer other than 200, in the exchange's own error shape."""

    def __init__(self, status: int, payload: Any) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.payload = payload


def json_response(status: int, payload: Any, extra: Sequence[tuple[str, str]] = ()) -> Response:
    """Build an HTTP response with a JSON body (an HTML one for a string payload)."""
    html = isinstance(payload, str)
    body = payload.encode() if html else DUMPS(payload).encode()
    code = http.HTTPStatus(status)
    kind = "text/html" if html else "application/json;charset=UTF-8"
    headers = Headers(
        [
            ("Date", email.utils.formatdate(usegmt=True)),
            ("Connection", "close"),
            ("Content-Type", kind),
            ("Content-Length", str(len(body))),
            *extra,
        ]
    )
    return Response(code.value, code.phrase, headers, body)


class Protocol:
    """How one exchange names markets, frames trades and candles, and answers REST."""

    name: ClassVar[str] = ""
    default_quote: ClassVar[str] = "USDT"
    heartbeat_s: ClassVar[float | None] = None  # wall seconds between heartbeat frames
    # the answer to every request from a location the exchange refuses (``restricted=True``)
    restricted_status: ClassVar[int] = 403
    restricted_body: ClassVar[Any] = {"message": "Forbidden"}

    def __init__(self, fake: FakeExchange) -> None:
        self.fake = fake

    # naming
    def market_id(self, market: Market) -> str:
        """Return the exchange's id of a market."""
        return f"{market.base}{market.quote}"

    def aliases(self, market: Market) -> Iterable[str]:
        """Return every name a test may use for a market (ids, ccxt symbol, capture symbol)."""
        return (market.id, market.symbol, market.capture, f"{market.base}{market.quote}")

    def candle_topic(self, market: Market, interval: str) -> str | None:
        """Return the topic of a market's candles of ``interval`` (None if not streamed)."""
        return None

    def normalize_topic(self, name: str) -> str | None:
        """Return a topic name as the subscription registry keys it."""
        return name

    # urls
    def ws_url(self, port: int) -> str:
        """Return the websocket base URL a feed of this exchange sets."""
        raise NotImplementedError

    def rest_url(self, port: int) -> str:
        """Return the REST base URL a feed of this exchange sets."""
        raise NotImplementedError

    @staticmethod
    def configure_ccxt(exchange: Any, ws_url: str, rest_url: str) -> None:
        """Point a ccxt.pro client of this exchange at the fake."""
        raise NotImplementedError

    # REST
    def rest(self, path: str, query: dict[str, str]) -> Any:
        """Answer one REST GET (raise ``RestError`` for anything but 200)."""
        raise NotImplementedError

    def rest_weight(self, path: str, query: dict[str, str]) -> int:
        """Return the request weight a REST GET counts against ``weight_limit``."""
        return 1

    def rate_limited(self, used: int, limit: int, retry_after: int) -> Response:
        """Return the answer to a request over the weight limit (HTTP 429)."""
        return json_response(429, {"error": "rate limited"}, [("Retry-After", str(retry_after))])

    def weight_headers(self, used: int) -> list[tuple[str, str]]:
        """Return the headers telling a client the weight used this minute."""
        return []

    # websocket
    def on_connect(self, conn: Conn) -> None:
        """Greet a new connection (and subscribe what its URL asks for)."""

    def on_message(self, conn: Conn, message: str | bytes) -> None:
        """Handle one client message."""

    def heartbeat(self, conn: Conn) -> str | None:
        """Return a heartbeat frame for a connection, or None."""
        return None

    def trade_frame(self, market: Market, trade: dict[str, Any]) -> str:
        """Return the websocket frame that carries one trade (sequence numbers at 0)."""
        raise NotImplementedError

    def emit_trade(self, market: Market, trade: dict[str, Any], raw: str | None) -> bool:
        """Send one replayed trade to its subscribers (``raw``: the captured Binance text)."""
        raise NotImplementedError

    def emit_candle(
        self, market: Market, interval: str, bar: Bar, closed: bool, trade: dict[str, Any]
    ) -> bool:
        """Send a candle update after a trade to its subscribers."""
        return False

    def emit_other(self, frame: CaptureFrame) -> bool:
        """Send a captured frame that is not a trade (books, tickers) if the protocol can."""
        return False

    def push_tickers(self, listings: Sequence[Listing]) -> int:
        """Push universe tickers after a price change; return how many streams had them."""
        return 0


class FakeExchange:
    """A fake exchange replaying captured trades to REST and websocket clients."""

    def __init__(
        self,
        captures: Sequence[Path | str] = (),
        *,
        exchange: str = "binance",
        quote: str | None = None,
        speed: float = 0.0,
        drop_every: float | None = None,
        loop: bool = False,
        autostart: bool = True,
        start_paused: bool = False,
        universe: Mapping[str, BarFrame] | None = None,
        today: int | str | None = None,
        extra_markets: bool = True,
        restricted: bool = False,
        relabel: Mapping[str, str] | None = None,
        start: int | str | None = None,
        relabel_thin: int = 1,
        kline_every: float | None = None,
        weight_limit: int | None = None,
        lead: float = 0.0,
        weight_window: float = 60.0,
    ) -> None:
        """Serve ``captures`` (the scale options below are off by default).

        ``start`` (epoch ms or ISO time, naive = UTC): the trades before it are history,
        replayed into the candles at once, unseen, so REST serves them as klines; the
        stream begins with the first trade at or after ``start``.

        ``relabel`` maps a new market (``SOLUSDT``) to a captured symbol (``ETHUSDT``) whose
        trades it replays too, under its own name, with the captured market's bars (REST and
        candles); with ``relabel_thin`` k > 1 its trade stream carries one in every k of
        them (ids renumbered consecutively), so many relabelled markets keep a realistic
        aggregate trade rate. ``kline_every`` (seconds of exchange time; Binance: 2) sends a
        market's candle updates at most that often, spread over the markets, and always the
        closing one. ``weight_limit`` (Binance: 6000) answers requests past that REST request
        weight in a minute of wall time with HTTP 429 and ``Retry-After``, as the exchange
        does (``weight_window``: a shorter window than Binance's minute, for tests). ``lead``
        replays the capture's first seconds at once when the replay starts:
        they are history for REST klines before any subscriber.
        """
        from moodring.testing.fake_exchange.protocols import PROTOCOLS

        if not captures and not universe:
            raise ValueError("at least one capture file (or a universe) is needed")
        if exchange not in PROTOCOLS:
            raise ValueError(f"unknown exchange {exchange!r}: one of {', '.join(PROTOCOLS)}")
        if universe and exchange != "binance":
            raise ValueError("a universe is served by the binance protocol only")
        self.protocol: Protocol = PROTOCOLS[exchange](self)
        self.exchange = exchange
        self.quote = (quote or self.protocol.default_quote).upper()
        self.restricted = restricted  # answer everything as from a refused location
        self.speed = speed
        self.drop_every = drop_every
        self.loop = loop
        self.autostart = autostart
        self.burst = 8  # at speed 0, frames delivered between two yields to the event loop
        loaded = [load_capture(Path(p)) for p in captures]
        if relabel_thin < 1:
            raise ValueError("relabel_thin must be at least 1")
        self.relabel_thin = relabel_thin
        self.kline_every_ms = round(kline_every * 1000) if kline_every else 0
        self.weight_limit = weight_limit
        self.weight_window = weight_window
        self.lead_ms = round(lead * 1000)
        self._frames = self._merge(loaded)
        self._markets: dict[str, Market] = {}  # by the exchange's market id
        self._by_capture: dict[str, Market] = {}  # by the capture's lower-case symbol
        self._aliases: dict[str, Market] = {}
        self._index_markets()
        if captures and not self._markets:
            raise ValueError("the captures hold no @trade frames")
        self._relabel(relabel or {})
        self._universe = self._load_universe(universe or {}, extra_markets)
        first_event = next((f.event_ms for f in self._frames if f.event_ms is not None), 0)
        last_event = max((f.event_ms for f in self._frames if f.event_ms is not None), default=0)
        self._initial_clock = first_event - 1
        self._clock_ms = self._initial_clock
        # each --loop pass is shifted by the capture's span, rounded up to whole minutes
        self._loop_shift_ms = (math.ceil((last_event - first_event + 1) / 60_000) + 1) * 60_000
        self._conns: set[Conn] = set()
        self._subs: dict[str, set[Conn]] = {}
        self._candle_of_topic: dict[str, tuple[Market, str]] = {}
        for market in self._markets.values():
            for interval in INTERVALS_MS:
                topic = self.protocol.candle_topic(market, interval)
                if topic is not None:
                    market.candle_topics[interval] = topic
                    self._candle_of_topic[topic] = (market, interval)
        self._server: Server | None = None
        self._port = 0
        self._replay_task: asyncio.Task[None] | None = None
        self._drop_task: asyncio.Task[None] | None = None
        self._heartbeat_task: asyncio.Task[None] | None = None
        self._running = asyncio.Event()  # cleared while paused
        if not start_paused:
            self._running.set()
        self._muted = False
        self._sub_changed = asyncio.Event()
        self._drained = asyncio.Event()
        self._senders: set[asyncio.Task[None]] = set()
        self._next_conn = 0
        self.replay_done = asyncio.Event()
        self.frames_sent = 0
        # called with each frame once written to its connection (benchmarks time them)
        self.on_sent: Callable[[str | bytes], None] | None = None
        self.position = 0
        self.passes = 0
        self.drops = 0
        self.rest_requests: list[str] = []  # each REST request's path and query, as received
        self.rate_limited = 0  # REST requests answered 429 (over ``weight_limit``)
        self._weight_minute = 0
        self._weight_used = 0
        self._day_ms = 0
        self._time_of_day_ms = 0
        if self._universe:
            last = max(int(x.time[-1]) for x in self._universe.values() if x.time.size)
            self.set_day(last if today is None else today)
        self._first_live = 0  # the frames before it are history (``start``)
        if start is not None:
            self._replay_history(instant_ms(start))

    # ------------------------------------------------------------------ loading

    @staticmethod
    def _load_universe(universe: Mapping[str, BarFrame], extra_markets: bool) -> dict[str, Listing]:
        """Index the universe's daily bars by symbol, adding the extra markets."""
        listings: dict[str, Listing] = {}
        for symbol, bars in universe.items():
            name = symbol.replace("/", "").upper()
            listing = Listing(name, bars)
            if listing.time.size and (listing.time % DAY_MS).any():
                raise ValueError(f"{name}: universe bars must open at 00:00 UTC")
            listings[name] = listing
        if extra_markets and listings:
            days = np.unique(np.concatenate([x.time for x in listings.values()]))
            for name, price in EXTRA_MARKETS.items():
                listings.setdefault(name, Listing(name, extra_bars(days, price)))
        return listings

    @staticmethod
    def _merge(per_file: list[list[CaptureFrame]]) -> list[CaptureFrame]:
        """Merge the captures' frames by receive time (stable)."""
        merged = [frame for frames in per_file for frame in frames]
        merged.sort(key=lambda f: f.recv_ns)
        return merged

    def _index_markets(self) -> None:
        """Collect per-market trades, tick/step sizes and each trade's next trade time."""
        last_by_symbol: dict[str, int] = {}
        self._next_trade_ms: list[int | None] = [None] * len(self._frames)
        for index, frame in enumerate(self._frames):
            data = frame.data
            if data is None:
                continue
            market = self._by_capture.get(frame.symbol)
            if market is None:
                capture = str(data["s"]).upper()
                base, _ = split_symbol(capture)
                market = Market(capture, base, self.quote)
                market.id = self.protocol.market_id(market)
                self._markets[market.id] = market
                self._by_capture[frame.symbol] = market
            market.trades.append(data)
            market.price_decimals = max(market.price_decimals, decimals(data["p"]))
            market.qty_decimals = max(market.qty_decimals, decimals(data["q"]))
            previous = last_by_symbol.get(frame.symbol)
            if previous is not None:
                self._next_trade_ms[previous] = data["T"]
            last_by_symbol[frame.symbol] = index
        for market in self._markets.values():
            market.id_span = market.trades[-1]["t"] - market.trades[0]["t"] + 1
            for alias in self.protocol.aliases(market):
                self._aliases.setdefault(alias.upper(), market)

    def _replay_history(self, start_ms: int) -> None:
        """Replay the frames before ``start_ms`` into the markets' state at once, unseen."""
        for index, frame in enumerate(self._frames):
            if frame.event_ms is not None and frame.event_ms >= start_ms:
                break
            self._emit(frame, self._next_trade_ms[index], 0)
            self._first_live = index + 1
        self._clock_ms = max(self._clock_ms, start_ms - 1)

    def _relabel(self, relabel: Mapping[str, str]) -> None:
        """Add a follower market for each new symbol, replaying a captured market's trades."""
        by_capture = {m.capture: m for m in self._markets.values()}
        for new, old in relabel.items():
            source = by_capture.get(old.upper())
            if source is None:
                known = ", ".join(sorted(by_capture)) or "none"
                raise ValueError(
                    f"relabel {new}={old}: the captures hold no {old} trades ({known})"
                )
            base, _ = split_symbol(new.upper())
            market = source.follower(base, len(source.followers))
            market.id = self.protocol.market_id(market)
            source.followers.append(market)
            self._markets[market.id] = market
            for alias in self.protocol.aliases(market):
                self._aliases.setdefault(alias.upper(), market)

    # ------------------------------------------------------------------ public API

    @property
    def port(self) -> int:
        """Return the listening port (0 before ``start``)."""
        return self._port

    @property
    def ws_url(self) -> str:
        """Return the websocket URL a feed of this exchange sets (see the protocol module)."""
        return self.protocol.ws_url(self._port)

    @property
    def rest_url(self) -> str:
        """Return the REST base URL a feed of this exchange sets (see the protocol module)."""
        return self.protocol.rest_url(self._port)

    @property
    def clock_ms(self) -> int:
        """Return the replay clock: the exchange time of the latest replayed frame."""
        return self._clock_ms

    @property
    def symbols(self) -> list[str]:
        """Return the exchange's ids of the replayed markets (``ETHUSDT``, ``ETH-USD`` ...)."""
        return list(self._markets)

    @property
    def markets(self) -> list[Market]:
        """Return the replayed markets."""
        return list(self._markets.values())

    @property
    def paused(self) -> bool:
        """Return whether the stream is silenced."""
        return self._muted or not self._running.is_set()

    @property
    def connection_count(self) -> int:
        """Return the number of open websocket connections."""
        return len(self._conns)

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

    def set_day(self, day: int | str, *, at_ms: int = DAY_MS // 2) -> None:
        """Make ``day`` (epoch ms or ISO date) today, ``at_ms`` into it, at its open price."""
        if not 0 <= at_ms < DAY_MS:
            raise ValueError("at_ms must be within the day")
        self._day_ms = day_of(day)
        self._time_of_day_ms = at_ms
        for listing in self._universe.values():
            listing.price = None
            listing.traded = 0.0
        if not self._frames:  # without captures the universe's clock is the exchange's
            self._clock_ms = self.universe_now_ms

    def advance_day(self, days: int = 1, *, at_ms: int | None = None) -> None:
        """Close today (with its real bar) and the days after it, ``days`` in all."""
        at = self._time_of_day_ms if at_ms is None else at_ms
        self.set_day(self._day_ms + days * DAY_MS, at_ms=at)

    async def set_prices(
        self, prices: Mapping[str, float], volumes: Mapping[str, float] | None = None
    ) -> int:
        """Set today's prices (and base volumes), push them; return how many streams had them."""
        changed = []
        for symbol, price in prices.items():
            listing = self.listing(symbol)
            listing.price = float(price)
            if volumes is not None and symbol in volumes:
                listing.traded = float(volumes[symbol])
            changed.append(listing)
        sent = self.protocol.push_tickers(changed)
        await asyncio.sleep(0)
        return sent

    def fail_symbol(self, symbol: str, failing: bool = True) -> None:
        """Answer a universe market's klines with 400 Invalid symbol (listed, yet delisted)."""
        self.listing(symbol).failing = failing

    def listing(self, symbol: str) -> Listing:
        """Look a universe market up by ``ADAUSDT``, ``adausdt`` or ``ADA/USDT``."""
        key = symbol.replace("/", "").upper()
        if key not in self._universe:
            raise KeyError(f"no symbol {symbol!r} in the universe")
        return self._universe[key]

    def market(self, symbol: str) -> Market:
        """Look a market up by any of its names (``ETH/USD``, ``ETH-USD``, ``ETHUSDT`` ...)."""
        found = self._aliases.get(symbol.upper())
        if found is None:
            found = self._aliases.get(symbol.replace("/", "").upper())
        if found is None:
            raise KeyError(f"no symbol {symbol!r} in the captures")
        return found

    def trades(self, symbol: str) -> list[dict[str, Any]]:
        """Return a market's captured Binance trade ``data`` dicts, as captured."""
        return list(self.market(symbol).trades)

    def replayed_trades(self, symbol: str) -> list[dict[str, Any]]:
        """Return the trade ``data`` dicts of a market replayed so far (time-shifted on loops).

        A relabelled market's are its captured market's under its own symbol.
        """
        market = self.market(symbol)
        if market.leader is None:
            return list(market.replayed)
        return [{**data, "s": market.id} for data in market.replayed]

    def klines(
        self,
        symbol: str,
        interval: str,
        start: int | None = None,
        end: int | None = None,
        limit: int = 1000,
    ) -> list[list[Any]]:
        """Return what Binance's ``GET /api/v3/klines`` would answer now (any protocol)."""
        return self.market(symbol).builder(interval).rows(self._clock_ms, start, end, limit)

    def subscribers(self, topic: str) -> int:
        """Return how many connections subscribe to a topic (named in each protocol module)."""
        name = self.protocol.normalize_topic(topic)
        return len(self._subs.get(name, ())) if name else 0

    async def wait_subscribed(self, *topics: str) -> None:
        """Wait until every given topic has at least one subscriber."""
        while not all(self.subscribers(s) for s in topics):
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
        if self.protocol.heartbeat_s:
            self._heartbeat_task = asyncio.create_task(
                self._heartbeat_loop(self.protocol.heartbeat_s)
            )
        names = [*self._markets, *self._universe]
        log.info("fake %s on port %d, markets %s", self.exchange, self._port, ", ".join(names))
        return self._port

    async def stop(self) -> None:
        """Stop the replay, close every connection and the server."""
        for task in (self._replay_task, self._drop_task, self._heartbeat_task):
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

    async def __aenter__(self) -> Self:
        """Start listening on a free port: ``async with FakeExchange(...) as fake:``."""
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """Stop (see ``stop``)."""
        await self.stop()

    def start_replay(self) -> None:
        """Start the replay clock now (otherwise the first subscription starts it)."""
        if not self._frames:  # a universe without captures: nothing to replay
            self.replay_done.set()
            return
        if self._replay_task is None:
            self._replay_task = asyncio.create_task(self._replay())

    def pause(self, *, keep_clock: bool = False) -> None:
        """Stop sending frames (heartbeats too), sockets stay open; ``keep_clock`` runs on."""
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

    # ------------------------------------------------------------------ subscriptions

    def subscribe(self, conn: Conn, topic: str) -> bool:
        """Subscribe a connection to a topic; the first subscription starts the replay."""
        if topic in conn.topics or not conn.alive:
            return False
        conn.topics.add(topic)
        self._subs.setdefault(topic, set()).add(conn)
        candle = self._candle_of_topic.get(topic)
        if candle is not None:
            candle[0].builder(candle[1])
        self._sub_changed.set()
        if self.autostart:
            self.start_replay()
        return True

    def unsubscribe(self, conn: Conn, topic: str) -> bool:
        """Remove a connection's subscription to a topic."""
        if topic not in conn.topics:
            return False
        conn.topics.discard(topic)
        subs = self._subs.get(topic)
        if subs is not None:
            subs.discard(conn)
            if not subs:
                del self._subs[topic]
        self._sub_changed.set()
        return True

    def subscribed(self, topic: str) -> set[Conn]:
        """Return the connections subscribed to a topic (do not mutate)."""
        return self._subs.get(topic) or set()

    def deliver(self, topic: str, text: str | bytes) -> bool:
        """Queue the same frame to every subscriber of a topic; return whether any had it."""
        conns = self._subs.get(topic)
        if not conns:
            return False
        for conn in conns:
            conn.push(text)
        return True

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
                first = self._first_live if self.passes == 0 else 0
                lead_ns = 0 if self.passes else self._frames[0].recv_ns + self.lead_ms * 1_000_000
                for index, frame in enumerate(self._frames[first:], first):
                    while True:
                        if not self._running.is_set():
                            await self._running.wait()
                            anchor = None
                        if fast or frame.recv_ns < lead_ns:
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
                    if frame.recv_ns < lead_ns and index % 512 == 0:
                        await asyncio.sleep(0)  # history replayed at once: let others run
                    elif fast and (burst >= self.burst or index % 512 == 0):
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
        while any(len(c.queue) > HIGH_WATER for c in self._conns):
            self._drained.clear()
            await self._drained.wait()

    def _emit(self, frame: CaptureFrame, next_ms: int | None, shift_ms: int) -> bool:
        """Advance the clock and state by one frame and send it to subscribers."""
        if frame.event_ms is not None and frame.event_ms + shift_ms > self._clock_ms:
            self._clock_ms = frame.event_ms + shift_ms
        data = frame.data
        deliver = not self._muted
        if data is None:
            return deliver and self.protocol.emit_other(frame)
        market = self._by_capture[frame.symbol]
        raw: str | None = frame.raw
        if shift_ms:
            data = dict(data)
            data["E"] += shift_ms
            data["T"] += shift_ms
            data["t"] += self.passes * market.id_span
            raw = None
        if next_ms is not None:
            next_ms += shift_ms
        elif self.loop:
            next_ms = market.trades[0]["T"] + shift_ms + self._loop_shift_ms
        index = len(market.replayed)
        market.replayed.append(data)
        sent = deliver and self.protocol.emit_trade(market, data, raw)
        bars = [(interval, builder.add(data)) for interval, builder in market.builders.items()]
        if not deliver:
            return sent
        for follower in market.followers:
            if (index + follower.phase) % self.relabel_thin == 0:
                copy = {**data, "s": follower.id}
                if self.relabel_thin > 1:  # a thinned stream numbers its own trades
                    copy["t"] = follower.next_id
                    follower.next_id += 1
                sent |= self.protocol.emit_trade(follower, copy, None)
        for interval, bar in bars:
            closed = market.builders[interval].closes_bar(data["T"], next_ms)
            for each in (market, *market.followers):
                sent |= self._emit_candle(each, interval, bar, closed, data)
        return sent

    def _emit_candle(
        self, market: Market, interval: str, bar: Bar, closed: bool, trade: dict[str, Any]
    ) -> bool:
        """Send a candle update unless ``kline_every`` says this market's is not due yet."""
        topic = market.candle_topics.get(interval)
        if topic is None or topic not in self._subs:
            return False
        every = self.kline_every_ms
        if every and not closed:
            # the markets' update times are spread over the interval, as an exchange's are
            spread = len(self._markets) or 1
            slot = (trade["E"] + market.phase * every // spread) // every
            if market.candle_slot.get(interval) == slot:
                return False
            market.candle_slot[interval] = slot
        if market.id != trade["s"]:
            trade = {**trade, "s": market.id}
        return self.protocol.emit_candle(market, interval, bar, closed, trade)

    async def _drop_loop(self, every: float) -> None:
        """Close every connection every ``every`` seconds of wall time."""
        while True:
            await asyncio.sleep(every)
            await self.drop_connections(1001)

    async def _heartbeat_loop(self, every: float) -> None:
        """Send the protocol's heartbeat frames every ``every`` seconds while not paused."""
        while True:
            await asyncio.sleep(every)
            if self.paused:
                continue
            for conn in list(self._conns):
                frame = self.protocol.heartbeat(conn)
                if frame is not None:
                    conn.push(frame)

    # ------------------------------------------------------------------ websocket side

    async def _handler(self, ws: ServerConnection) -> None:
        """Serve one websocket connection: requests in, stream frames out."""
        path = ws.request.path if ws.request is not None else "/"
        self._next_conn += 1
        conn = Conn(ws, path, self._next_conn)
        self._conns.add(conn)
        sender = asyncio.create_task(self._sender(conn))
        self._senders.add(sender)
        sender.add_done_callback(self._senders.discard)
        self.protocol.on_connect(conn)
        try:
            async for message in ws:
                self.protocol.on_message(conn, message)
        except ConnectionClosed:
            pass
        finally:
            self._forget(conn)
            sender.cancel()

    async def _sender(self, conn: Conn) -> None:
        """Write a connection's queued frames in order."""
        try:
            while conn.alive:
                await conn.wake.wait()
                conn.wake.clear()
                while conn.queue and conn.alive:
                    frame = conn.queue.popleft()
                    await conn.ws.send(frame)
                    self.frames_sent += 1
                    if self.on_sent is not None:
                        self.on_sent(frame)
                    if len(conn.queue) <= HIGH_WATER // 2:
                        self._drained.set()
        except ConnectionClosed:
            self._forget(conn)

    def _forget(self, conn: Conn) -> None:
        """Drop a connection from every subscription; its queued frames are lost."""
        if not conn.alive:
            return
        conn.alive = False
        for topic in list(conn.topics):
            self.unsubscribe(conn, topic)
        conn.queue.clear()
        conn.wake.set()
        self._conns.discard(conn)
        self._drained.set()

    # ------------------------------------------------------------------ REST side

    @property
    def weight_used(self) -> int:
        """Return the REST request weight used in the current minute of wall time."""
        return (
            self._weight_used
            if self._weight_minute == int(time.time() // self.weight_window)
            else 0
        )

    def _weigh(self, weight: int) -> int | None:
        """Count a request's weight in this minute; None if it would pass ``weight_limit``."""
        minute = int(time.time() // self.weight_window)
        if minute != self._weight_minute:
            self._weight_minute, self._weight_used = minute, 0
        if self.weight_limit is not None and self._weight_used + weight > self.weight_limit:
            return None
        self._weight_used += weight
        return self._weight_used

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        """Answer plain HTTP GETs (REST); let websocket upgrades through."""
        upgrade = "websocket" in request.headers.get("Upgrade", "").lower()
        if self.restricted:
            if not upgrade:
                self.rest_requests.append(request.path)
            protocol = self.protocol
            return json_response(protocol.restricted_status, protocol.restricted_body)
        if upgrade:
            return None
        parts = urlsplit(request.path)
        path = parts.path.rstrip("/")
        # a key given once per value (Coinbase's product_ids): its values joined by commas
        query = {k: ",".join(v) for k, v in parse_qs(parts.query).items()}
        self.rest_requests.append(request.path)
        log.debug("GET %s", request.path)
        protocol = self.protocol
        used = self._weigh(protocol.rest_weight(path, query))
        if used is None:
            self.rate_limited += 1
            assert self.weight_limit is not None
            window = self.weight_window
            retry_after = max(1, math.ceil(window - time.time() % window))
            log.info("GET %s: over the weight limit, retry after %d s", request.path, retry_after)
            return protocol.rate_limited(self._weight_used, self.weight_limit, retry_after)
        headers = protocol.weight_headers(used)
        try:
            return json_response(200, protocol.rest(path, query), headers)
        except RestError as exc:
            return json_response(exc.status, exc.payload, headers)
        except Exception:  # a fake must answer whatever it is asked: say so, keep serving
            log.exception("REST %s failed", request.path)
            return json_response(500, {"error": f"the fake failed on {request.path}"})
