"""When bars are due: every bar on a 24/7 market, only bars that meet a session on an exchange."""

from __future__ import annotations

import functools
import math
from typing import Protocol

import numpy as np

from moodring.market.timeframe import Timeframe


class Sessions(Protocol):
    """The trading sessions of an exchange (``market.calendar.MarketCalendar`` fits)."""

    def session_at(self, t_ms: int) -> tuple[int, int] | None:
        """Return the (open, close) of the session containing ``t_ms``, or None."""
        ...

    def next_open(self, t_ms: int) -> int:
        """Return the first session open at or after ``t_ms``."""
        ...

    def sessions_between(self, start_ms: int, end_ms: int) -> list[tuple[int, int]]:
        """Return the sessions overlapping ``[start_ms, end_ms)``, in time order."""
        ...


class Cadence:
    """Which bar is due after a given one: the next bar, or the next one that meets a session.

    Two joined bars further apart than that have a data gap between them: a return across
    them spans more than one bar.
    """

    __slots__ = ("_ahead", "calendar", "timeframe")

    def __init__(self, timeframe: Timeframe, calendar: Sessions | None = None) -> None:
        self.timeframe = timeframe
        self.calendar = calendar
        # (since, open, close): the first session closing after any time in [since, close)
        self._ahead = (0, 0, 0)

    def next_bar(self, t_ms: int) -> int:
        """Return the open time of the bar due after the bar that opens at ``t_ms``."""
        tf = self.timeframe
        start = tf.floor(t_ms) + tf.ms
        calendar = self.calendar
        if calendar is None:
            return start
        since, opens, closes = self._ahead
        if not since <= start < closes:
            session = calendar.session_at(start)
            if session is None:
                session = calendar.session_at(calendar.next_open(start))
            if session is None:
                return start
            opens, closes = session
            self._ahead = (start, opens, closes)
        return start if opens < start + tf.ms else tf.floor(opens)

    def after_gap(self, times: np.ndarray) -> np.ndarray:
        """Return per bar (open times, ascending) whether it opens after the bar then due.

        The same answer as comparing each bar with ``next_bar`` of the one before, at numpy
        speed: with a calendar, the bar due after t is t's next bar if that meets the first
        session closing after it, else the bar holding that session's open.
        """
        out = np.zeros(times.shape[0], dtype=bool)
        if times.shape[0] < 2:
            return out
        tf = self.timeframe
        start = times[:-1] - (times[:-1] - tf.offset_ms) % tf.ms + tf.ms
        if self.calendar is None:
            out[1:] = times[1:] > start
            return out
        sessions = self.calendar.sessions_between(int(start[0]), int(times[-1]) + tf.ms)
        if not sessions:
            return out
        opens, closes = (
            np.asarray(column, dtype=np.int64) for column in zip(*sessions, strict=True)
        )
        first = np.searchsorted(closes, start, "right")  # the first session closing after it
        known = first < closes.shape[0]  # else the next session lies beyond the last bar
        opening = opens[np.minimum(first, closes.shape[0] - 1)]
        due = np.where(opening < start + tf.ms, start, opening - (opening - tf.offset_ms) % tf.ms)
        out[1:] = known & (times[1:] > due)
        return out


def meets_session(times: np.ndarray, length_ms: int, calendar: Sessions) -> np.ndarray:
    """Return per bar (open times, ascending) whether ``[t, t + length_ms)`` meets a session."""
    out = np.zeros(times.shape[0], dtype=bool)
    if not times.shape[0]:
        return out
    sessions = calendar.sessions_between(int(times[0]), int(times[-1]) + length_ms)
    if not sessions:
        return out
    opens, closes = (np.asarray(column, dtype=np.int64) for column in zip(*sessions, strict=True))
    after = np.searchsorted(closes, times, "right")  # the first session closing after t
    found = after < closes.shape[0]
    out[found] = opens[after[found]] < times[found] + length_ms
    return out


# The longest closure a span of session bars may straddle (a Friday close to a Tuesday open).
LONGEST_CLOSURE_MS = 4 * 86_400_000


def round_the_clock_span(bars: int, timeframe: Timeframe, calendar: Sessions) -> int:
    """Return how many bars of a 24/7 market reach back over ``bars`` bars meeting sessions.

    A join of a 24/7 feed with an exchange's feed has a pair only where a session is: its
    24/7 leg needs the bars of the same span, whenever it ends (after a long weekend too).
    """
    return math.ceil(bars * _round_the_clock_ratio(timeframe, calendar)) + math.ceil(
        LONGEST_CLOSURE_MS / timeframe.ms
    )


@functools.cache
def _round_the_clock_ratio(timeframe: Timeframe, calendar: Sessions) -> float:
    """Return the bars of a 24/7 market per bar meeting a session, over 2024 (daily: 1.45)."""
    start, end = 1_704_067_200_000, 1_735_689_600_000  # 2024-01-01 .. 2025-01-01 UTC
    times = np.arange(timeframe.floor(start), end, timeframe.ms, dtype=np.int64)
    met = int(meets_session(times, timeframe.ms, calendar).sum())
    return times.shape[0] / met if met else 1.0
