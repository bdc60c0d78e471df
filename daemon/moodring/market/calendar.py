"""Exchange trading sessions (NYSE by default): regular hours, holidays and early closes.

Holidays and early closes come from the ``holidays`` package (its ``financial`` calendars with
the ``PUBLIC`` and ``HALF_DAY`` categories, holidays >= 0.87); nothing is listed by hand here.
The early-close time is read from the library's English label, e.g. "Christmas Eve (markets
close at 1:00pm)". ``holidays`` is imported on first use, not at import time.
"""

from __future__ import annotations

import functools
import logging
import re
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

log = logging.getLogger(__name__)

_CLOSE_LABEL = re.compile(r"close[sd]? at (\d{1,2})(?::(\d{2}))?\s*(am|pm|noon)", re.IGNORECASE)
_DEFAULT_EARLY_CLOSE = time(13, 0)
_MAX_SCAN_DAYS = 3660


def parse_close_label(name: str) -> time | None:
    """Return the closing time named in a half-day label ("... close at 1:00pm"), or None."""
    match = _CLOSE_LABEL.search(name)
    if match is None:
        return None
    hour = int(match.group(1))
    minute = int(match.group(2) or 0)
    suffix = match.group(3).lower()
    if suffix == "pm" and hour != 12:
        hour += 12
    elif suffix == "am" and hour == 12:
        hour = 0
    if not (0 <= hour < 24 and 0 <= minute < 60):
        return None
    return time(hour, minute)


class MarketCalendar:
    """Regular sessions of one exchange, in epoch milliseconds UTC, with holidays and half days."""

    def __init__(
        self,
        market: str = "NYSE",
        *,
        tz: str = "America/New_York",
        open_at: time = time(9, 30),
        close_at: time = time(16, 0),
    ):
        self.market = market
        self.tz = ZoneInfo(tz)
        self.open_at = open_at
        self.close_at = close_at
        self._years: dict[int, tuple[dict[date, str], dict[date, time]]] = {}

    def _year(self, year: int) -> tuple[dict[date, str], dict[date, time]]:
        """Return (full closures, early closes) of one year, computed once."""
        cached = self._years.get(year)
        if cached is not None:
            return cached
        import holidays
        from holidays.constants import HALF_DAY, PUBLIC

        closed_src: Any = holidays.financial_holidays(self.market, years=year, categories=(PUBLIC,))
        half_src: Any = holidays.financial_holidays(self.market, years=year, categories=(HALF_DAY,))
        closed = {day: str(name) for day, name in closed_src.items()}
        early: dict[date, time] = {}
        for day, name in half_src.items():
            if day in closed:
                continue
            at = parse_close_label(str(name))
            if at is None:
                log.warning(
                    "%s half day %s has no readable closing time (%r); assuming %s",
                    self.market,
                    day,
                    name,
                    _DEFAULT_EARLY_CLOSE.strftime("%H:%M"),
                )
                at = _DEFAULT_EARLY_CLOSE
            early[day] = at
        self._years[year] = (closed, early)
        return closed, early

    def holiday(self, day: date) -> str | None:
        """Return the name of the full-day closure on ``day`` (weekends excluded), or None."""
        return self._year(day.year)[0].get(day)

    def early_close(self, day: date) -> time | None:
        """Return the local closing time of a half day, or None on a regular or closed day."""
        if not self.is_session_day(day):
            return None
        return self._year(day.year)[1].get(day)

    def is_session_day(self, day: date) -> bool:
        """Return True when the exchange trades on ``day`` (a weekday that is no holiday)."""
        return day.weekday() < 5 and day not in self._year(day.year)[0]

    def session(self, day: date) -> tuple[int, int] | None:
        """Return (open, close) of ``day`` in epoch ms UTC, or None on weekends and holidays."""
        if not self.is_session_day(day):
            return None
        close_at = self._year(day.year)[1].get(day, self.close_at)
        return self._ms(day, self.open_at), self._ms(day, close_at)

    def local_date(self, t_ms: int) -> date:
        """Return the exchange-local calendar date of an instant."""
        return datetime.fromtimestamp(t_ms / 1000, self.tz).date()

    def session_at(self, t_ms: int) -> tuple[int, int] | None:
        """Return the session that contains ``t_ms``, or None when the market is shut."""
        bounds = self.session(self.local_date(t_ms))
        if bounds is not None and bounds[0] <= t_ms < bounds[1]:
            return bounds
        return None

    def is_open(self, t_ms: int) -> bool:
        """Return True when ``t_ms`` lies inside a regular session (open inclusive)."""
        return self.session_at(t_ms) is not None

    def next_open(self, t_ms: int) -> int:
        """Return the first session open at or after ``t_ms``, in epoch ms UTC."""
        day = self.local_date(t_ms)
        for _ in range(_MAX_SCAN_DAYS):
            bounds = self.session(day)
            if bounds is not None and bounds[0] >= t_ms:
                return bounds[0]
            day += timedelta(days=1)
        raise ValueError(f"no {self.market} session within {_MAX_SCAN_DAYS} days of {t_ms}")

    def next_close(self, t_ms: int) -> int:
        """Return the first session close after ``t_ms``, in epoch ms UTC."""
        day = self.local_date(t_ms)
        for _ in range(_MAX_SCAN_DAYS):
            bounds = self.session(day)
            if bounds is not None and bounds[1] > t_ms:
                return bounds[1]
            day += timedelta(days=1)
        raise ValueError(f"no {self.market} session within {_MAX_SCAN_DAYS} days of {t_ms}")

    def sessions_between(self, start_ms: int, end_ms: int) -> list[tuple[int, int]]:
        """Return the sessions (open, close) that overlap ``[start_ms, end_ms)``, in time order."""
        out = []
        day, last = self.local_date(start_ms), self.local_date(end_ms)
        while day <= last:
            bounds = self.session(day)
            if bounds is not None and bounds[1] > start_ms and bounds[0] < end_ms:
                out.append(bounds)
            day += timedelta(days=1)
        return out

    def _ms(self, day: date, at: time) -> int:
        """Return the epoch ms of local wall time ``at`` on ``day``."""
        moment = datetime.combine(day, at, tzinfo=self.tz)
        return int(moment.astimezone(UTC).timestamp()) * 1000


@functools.cache
def calendar_named(name: str) -> MarketCalendar:
    """Return the shared calendar of a feed's ``calendar`` key (``nyse``)."""
    if name != "nyse":
        raise ValueError(f"unknown market calendar {name!r} (known: nyse)")
    return MarketCalendar()
