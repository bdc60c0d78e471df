"""Bar building: trades or exchange candles in, forming bar and closed bars out."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from moodring.market.bar import NAN, Bar
from moodring.market.ring import BarRing
from moodring.market.timeframe import Timeframe

BarListener = Callable[[Bar], None]
# hold() without a bound: hold everything until told how far the gap reaches
HOLD_ALL = 2**62
DEDUPE_WINDOW = 4096  # the latest trade ids a builder keeps, to drop a repeated trade


class BarBuilder:
    """Builds one feed's bars of one timeframe from trades or exchange OHLCV candles.

    The forming bar lives in plain float attributes (cheap per tick); closed bars go to a
    numpy ring and to the listeners. ``fill_gaps`` turns an interval without trades into a
    flat bar at the last close with volume 0, as exchanges' klines do on 24/7 markets;
    session markets leave it off, so no bars exist outside the session. Candles are never
    filled: an exchange sends flat candles itself, so a missing candle is a data gap.
    """

    __slots__ = (
        "_base",
        "_forming",
        "_from_trades",
        "_held",
        "_hold_through",
        "_listeners",
        "_recent_ids",
        "_seen_ids",
        "_sub_time",
        "bars",
        "close",
        "duplicates",
        "fill_gaps",
        "high",
        "last_close",
        "last_time",
        "late",
        "low",
        "open",
        "time",
        "timeframe",
        "volume",
    )

    def __init__(
        self,
        timeframe: Timeframe,
        *,
        fill_gaps: bool = True,
        capacity: int = 2,
        dedupe_window: int = DEDUPE_WINDOW,
    ) -> None:
        self.timeframe = timeframe
        self.fill_gaps = fill_gaps
        self.bars = BarRing(capacity)
        self.time = -1
        self.open = self.high = self.low = self.close = NAN
        self.volume = 0.0
        self.last_time = -1
        self.last_close = NAN
        self.duplicates = 0
        self.late = 0
        self._listeners: list[BarListener] = []
        # none with a window of 0: for a feed that drops repeats itself
        self._seen_ids: set[object] | None = set() if dedupe_window else None
        self._recent_ids: deque[object] = deque(maxlen=dedupe_window)
        self._sub_time = -1
        self._base: tuple[float, float, float, float] | None = None
        self._forming: Bar | None = None
        self._from_trades = False
        self._held: list[Bar] = []
        self._hold_through = -1

    def subscribe(self, listener: BarListener) -> None:
        """Call ``listener`` with every closed bar."""
        self._listeners.append(listener)

    def forming(self) -> Bar | None:
        """Return the forming bar, or None between bars (built once per change)."""
        bar = self._forming
        if bar is None and self.time >= 0:
            bar = self._forming = Bar(
                self.time, self.open, self.high, self.low, self.close, self.volume
            )
        return bar

    def forming_state(self) -> dict[str, Any] | None:
        """Return the forming bar's full state as JSON-able data (None between bars)."""
        if self.time < 0:
            return None
        return {
            "time": self.time,
            "sub_time": self._sub_time,
            "bar": [self.open, self.high, self.low, self.close, self.volume],
            "base": None if self._base is None else list(self._base),
            "trades": self._from_trades,
        }

    def resume_forming(self, state: Mapping[str, Any]) -> None:
        """Make a ``forming_state`` the forming bar; an exchange candle of that bar replaces it."""
        time = int(state["time"])
        if time <= self.last_time or self.time >= 0:
            raise ValueError("a resumed forming bar must open after the last bar")
        self.time = time
        self.open, self.high, self.low, self.close, self.volume = map(float, state["bar"])
        # the exchange's candle of this bar (a gap-fill after a restart) holds all of it
        self._sub_time = max(int(state["sub_time"]), time)
        base = state["base"]
        self._base = (
            None
            if base is None
            else (float(base[0]), float(base[1]), float(base[2]), float(base[3]))
        )
        self._from_trades = bool(state["trades"])
        self._forming = None

    def add_trade(
        self, t_ms: int, price: float, amount: float, trade_id: object | None = None
    ) -> None:
        """Add one trade; a duplicate id or a trade older than the forming bar is dropped."""
        self._from_trades = True
        seen = self._seen_ids
        if seen is not None and trade_id is not None:
            if trade_id in seen:
                self.duplicates += 1
                return
            recent = self._recent_ids
            if len(recent) == recent.maxlen:
                seen.discard(recent[0])
            recent.append(trade_id)
            seen.add(trade_id)
        tf = self.timeframe
        start = t_ms - (t_ms - tf.offset_ms) % tf.ms
        if start == self.time:
            self._forming = None
            if price > self.high:
                self.high = price
            elif price < self.low:
                self.low = price
            self.close = price
            self.volume += amount
            return
        if start < self.time or start <= self.last_time:
            self.late += 1
            return
        if self.time >= 0:
            self._close_forming()
        if self.fill_gaps:
            self._fill_until(start)
        self._forming = None
        self.time = start
        self.open = self.high = self.low = self.close = price
        self.volume = amount

    def add_candle(
        self,
        t_ms: int,
        open_: float,
        high: float,
        low: float,
        close: float,
        volume: float,
        *,
        closed: bool = False,
        length_ms: int | None = None,
    ) -> None:
        """Add an exchange candle (forming or closed) of this or a finer timeframe.

        Updates of the same candle replace it; a candle with a later open time folds the
        previous one into the bar. A closed candle that ends the bar closes it at once.
        """
        self._from_trades = False
        tf = self.timeframe
        start = t_ms - (t_ms - tf.offset_ms) % tf.ms
        if start > self.time:
            if start <= self.last_time:
                self.late += 1
                return
            if self.time >= 0:
                self._close_forming()
            self.time = start
            self._base = None
        elif start < self.time or t_ms < self._sub_time:
            self.late += 1
            return
        elif t_ms > self._sub_time:
            self._base = self._folded()
        self._sub_time = t_ms
        self._forming = None
        base = self._base
        if base is None:
            self.open, self.high, self.low, self.volume = open_, high, low, volume
        else:
            self.open = base[0]
            self.high = high if high > base[1] else base[1]
            self.low = low if low < base[2] else base[2]
            self.volume = base[3] + volume
        self.close = close
        if closed and length_ms is not None and t_ms + length_ms >= start + tf.ms:
            self._close_forming()

    def advance(self, now_ms: int) -> None:
        """Close the forming bar once its interval has ended (and fill empty trade intervals)."""
        if self.time >= 0 and now_ms >= self.time + self.timeframe.ms:
            self._close_forming()
        if self.fill_gaps and self._from_trades and self.time < 0:
            self._fill_until(self.timeframe.floor(now_ms))

    def hold(self, through_ms: int = HOLD_ALL) -> None:
        """Hold back closed bars opening at or before ``through_ms`` (and any after them).

        After a disconnection the bars it overlapped miss trades: they wait here until the
        feed ``settle``s them with the exchange's own klines, so closed bars stay exact.
        """
        self._hold_through = through_ms

    @property
    def holding(self) -> bool:
        """Return whether closed bars are waiting to be settled."""
        return bool(self._held)

    @property
    def held_from(self) -> int:
        """Return the open time of the first held bar (the next bar to close if none)."""
        if self._held:
            return self._held[0].time
        return self.last_time + self.timeframe.ms if self.last_time >= 0 else -1

    @property
    def held_until(self) -> int:
        """Return the open time of the last held bar (-1 when none)."""
        return self._held[-1].time if self._held else -1

    @property
    def hold_through(self) -> int:
        """Return the open time up to which bars are held (-1 when not holding)."""
        return self._hold_through

    def settle(self, bars: Iterable[Bar], through: int | None = None) -> None:
        """Release held bars up to ``through`` (all by default), the exchange's where given.

        Given bars that never formed here (all of their interval fell in the gap) are
        inserted; bars after the last released one stay held (or are not used). Once the
        held span reaches ``hold_through``, holding ends.
        """
        if not self._held:
            if through is None or through >= self._hold_through:
                self._hold_through = -1
            return
        through = self._held[-1].time if through is None else through
        release = [b for b in self._held if b.time <= through]
        self._held = [b for b in self._held if b.time > through]
        if through >= self._hold_through:
            self._hold_through = -1
        if not release:
            return
        fixed = {b.time: b for b in bars if b.time <= release[-1].time}
        own = {b.time: b for b in release}
        delivered = self._delivered
        for t in sorted(own.keys() | fixed.keys()):
            if t > delivered:
                self._deliver(fixed.get(t) or own[t])
                delivered = t
        if self._held and not self._hold_through >= 0:
            self._release_rest()

    def _release_rest(self) -> None:
        queue, self._held = self._held, []
        for bar in queue:
            self._deliver(bar)

    def _folded(self) -> tuple[float, float, float, float]:
        """Return the forming bar so far as (open, high, low, volume)."""
        return (self.open, self.high, self.low, self.volume)

    def _fill_until(self, start: int) -> None:
        """Emit flat zero-volume bars for the empty intervals before ``start``."""
        if self.last_time < 0:
            return
        step = self.timeframe.ms
        c = self.last_close
        t = self.last_time + step
        while t < start:
            self._emit(Bar(t, c, c, c, c, 0.0))
            t += step

    def _close_forming(self) -> None:
        bar = Bar(self.time, self.open, self.high, self.low, self.close, self.volume)
        self.time = -1
        self._sub_time = -1
        self._forming = None
        self._emit(bar)

    def _emit(self, bar: Bar) -> None:
        self.last_time = bar.time
        self.last_close = bar.close
        if self._held or 0 <= bar.time <= self._hold_through:
            self._held.append(bar)
            return
        self._deliver(bar)

    @property
    def _delivered(self) -> int:
        last = self.bars.last()
        return -1 if last is None else last.time

    def _deliver(self, bar: Bar) -> None:
        self.bars.push(bar)
        for listener in self._listeners:
            listener(bar)
