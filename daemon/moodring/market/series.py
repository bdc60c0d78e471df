"""Series that bars flow through: the join of two series on bar open time, and ratios."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Protocol

from moodring.market.bar import Bar
from moodring.market.builder import BarListener
from moodring.market.ring import BarRing
from moodring.market.sessions import Cadence

PairListener = Callable[[Bar, Bar], None]
# Bars one side may run ahead of the other before the oldest are given up as unmatched.
_MAX_PENDING = 4096
# ``Join.due`` when no pair can come after a gap (no cadence, or nothing joined yet)
NEVER_GAP = 2**62


class BarSource(Protocol):
    """Anything that emits closed bars and shows its forming bar."""

    bars: BarRing

    def subscribe(self, listener: BarListener) -> None:
        """Call ``listener`` with every closed bar."""

    def forming(self) -> Bar | None:
        """Return the forming bar, or None between bars."""


class Join:
    """Inner-joins the closed bars of two sources on bar open time, in either arrival order.

    With a ``cadence`` (the next bar both markets' calendars allow), ``after_gap`` tells the
    listeners whether the pair they get opens later than that, i.e. data is missing between
    it and the pair before; ``due`` is the open time the next pair is due at.
    """

    __slots__ = (
        "_cadence",
        "_formed",
        "_listeners",
        "_pending",
        "a",
        "after_gap",
        "b",
        "due",
        "last_time",
    )

    def __init__(self, a: BarSource, b: BarSource, cadence: Cadence | None = None) -> None:
        self.a = a
        self.b = b
        self.last_time = -1
        self.after_gap = False
        self.due = NEVER_GAP
        self._cadence = cadence
        self._formed: tuple[Bar, Bar] | None = None
        self._listeners: list[PairListener] = []
        self._pending: tuple[deque[Bar], deque[Bar]] = (
            deque(maxlen=_MAX_PENDING),
            deque(maxlen=_MAX_PENDING),
        )
        a.subscribe(lambda bar: self._arrive(0, bar))
        b.subscribe(lambda bar: self._arrive(1, bar))

    def subscribe(self, listener: PairListener) -> None:
        """Call ``listener(bar_a, bar_b)`` for every pair of closed bars with the same time."""
        self._listeners.append(listener)

    def forming(self) -> tuple[Bar, Bar] | None:
        """Return the two forming bars when both exist for the same, not yet joined, time."""
        fa = self.a.forming()
        if fa is None or fa.time <= self.last_time:
            return None
        fb = self.b.forming()
        if fb is None or fb.time != fa.time:
            return None
        formed = self._formed
        if formed is None or formed[0] is not fa or formed[1] is not fb:
            formed = self._formed = (fa, fb)
        return formed

    def _arrive(self, side: int, bar: Bar) -> None:
        other = self._pending[1 - side]
        while other and other[0].time < bar.time:
            other.popleft()
        if other and other[0].time == bar.time:
            match = other.popleft()
            pair = (bar, match) if side == 0 else (match, bar)
            self.last_time = bar.time
            self.after_gap = bar.time > self.due
            if self._cadence is not None:
                self.due = self._cadence.next_bar(bar.time)
            for listener in self._listeners:
                listener(*pair)
        else:
            self._pending[side].append(bar)


class RatioSeries:
    """A close-only series ``a / b`` (e.g. ETH/BTC = ETH/USDT ÷ BTC/USDT) on joined bars."""

    __slots__ = ("_from", "_join", "_listeners", "_ratio", "bars")

    def __init__(self, a: BarSource, b: BarSource, capacity: int = 2) -> None:
        self.bars = BarRing(capacity)
        self._listeners: list[BarListener] = []
        # the forming ratio bar and the joined pair it came from: several metrics of one
        # ratio ask for it on each tick
        self._from: tuple[Bar, Bar] | None = None
        self._ratio: Bar | None = None
        self._join = Join(a, b)
        self._join.subscribe(self._on_pair)

    def subscribe(self, listener: BarListener) -> None:
        """Call ``listener`` with every closed ratio bar."""
        self._listeners.append(listener)

    def forming(self) -> Bar | None:
        """Return the forming ratio bar when both legs form the same bar."""
        pair = self._join.forming()
        if pair is None:
            return None
        if pair is not self._from:
            self._from, self._ratio = pair, ratio_bar(*pair)
        return self._ratio

    def _on_pair(self, a: Bar, b: Bar) -> None:
        bar = ratio_bar(a, b)
        self.bars.push(bar)
        for listener in self._listeners:
            listener(bar)


def ratio_bar(a: Bar, b: Bar) -> Bar:
    """Return the close-only bar of ``a.close / b.close`` (open = high = low = close)."""
    r = a.close / b.close
    return Bar(a.time, r, r, r, r, 0.0)
