"""NYSE sessions from the holidays package, checked against dates and real RUT trading days."""

from __future__ import annotations

import csv
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import pytest

from moodring.market.calendar import MarketCalendar, parse_close_label


def ms(text: str) -> int:
    """Epoch ms of an ISO UTC time such as 2024-11-29T18:00."""
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()) * 1000


@pytest.fixture(scope="module")
def cal() -> MarketCalendar:
    return MarketCalendar()


def test_regular_day_winter_and_summer(cal: MarketCalendar) -> None:
    assert cal.session(date(2024, 1, 17)) == (ms("2024-01-17T14:30"), ms("2024-01-17T21:00"))
    assert cal.session(date(2024, 7, 17)) == (ms("2024-07-17T13:30"), ms("2024-07-17T20:00"))
    assert cal.early_close(date(2024, 7, 17)) is None


def test_weekend(cal: MarketCalendar) -> None:
    for day in (date(2024, 11, 30), date(2024, 12, 1)):
        assert not cal.is_session_day(day)
        assert cal.session(day) is None
    assert not cal.is_open(ms("2024-11-30T15:00"))


@pytest.mark.parametrize(
    ("day", "name_part"),
    [
        (date(2024, 12, 25), "Christmas"),
        (date(2024, 3, 29), "Good Friday"),
        (date(2025, 4, 18), "Good Friday"),
        (date(2024, 6, 19), "Juneteenth"),
        (date(2024, 1, 15), "Martin Luther King"),
        (date(2025, 1, 9), "Carter"),
        (date(2018, 12, 5), "Bush"),
        (date(2012, 10, 29), "Sandy"),
        (date(2012, 10, 30), "Sandy"),
        (date(2001, 9, 11), "World Trade Center"),
        (date(2001, 9, 14), "World Trade Center"),
        (date(2021, 12, 24), "Christmas"),  # Christmas on a Saturday: observed on Friday
    ],
)
def test_full_holidays(cal: MarketCalendar, day: date, name_part: str) -> None:
    assert not cal.is_session_day(day)
    assert cal.session(day) is None
    assert name_part in (cal.holiday(day) or "")
    noon_et = datetime.combine(day, time(12), tzinfo=cal.tz)
    assert not cal.is_open(int(noon_et.timestamp()) * 1000)


def test_new_year_on_saturday_is_not_moved_to_friday(cal: MarketCalendar) -> None:
    # NYSE rule: 2022-01-01 was a Saturday and 2021-12-31 traded normally.
    assert cal.session(date(2021, 12, 31)) == (ms("2021-12-31T14:30"), ms("2021-12-31T21:00"))


@pytest.mark.parametrize(
    ("day", "close_utc"),
    [
        (date(2024, 11, 29), "2024-11-29T18:00"),
        (date(2024, 12, 24), "2024-12-24T18:00"),
        (date(2024, 7, 3), "2024-07-03T17:00"),
        (date(2025, 7, 3), "2025-07-03T17:00"),
        (date(2025, 11, 28), "2025-11-28T18:00"),
        (date(2025, 12, 24), "2025-12-24T18:00"),
        (date(2013, 7, 3), "2013-07-03T17:00"),
    ],
)
def test_half_days_close_at_one(cal: MarketCalendar, day: date, close_utc: str) -> None:
    assert cal.early_close(day) == time(13, 0)
    open_ms, close_ms = cal.session(day) or (0, 0)
    assert close_ms == ms(close_utc)
    assert cal.is_open(close_ms - 1)
    assert not cal.is_open(close_ms)
    assert cal.next_close(open_ms) == close_ms


def test_no_half_day_when_july_fourth_is_monday_or_weekend(cal: MarketCalendar) -> None:
    # July 4 on a Saturday (2026): July 3 is the observed holiday, not a half day.
    assert cal.holiday(date(2026, 7, 3)) is not None
    assert cal.early_close(date(2026, 7, 3)) is None
    # July 4 on a Monday (2022): Friday July 1 is a normal day.
    assert cal.early_close(date(2022, 7, 1)) is None
    assert cal.session(date(2022, 7, 1)) == (ms("2022-07-01T13:30"), ms("2022-07-01T20:00"))


def test_dst_change_days(cal: MarketCalendar) -> None:
    # DST began Sunday 2024-03-10 and ended Sunday 2024-11-03.
    assert cal.session(date(2024, 3, 8)) == (ms("2024-03-08T14:30"), ms("2024-03-08T21:00"))
    assert cal.session(date(2024, 3, 11)) == (ms("2024-03-11T13:30"), ms("2024-03-11T20:00"))
    assert cal.session(date(2024, 11, 1)) == (ms("2024-11-01T13:30"), ms("2024-11-01T20:00"))
    assert cal.session(date(2024, 11, 4)) == (ms("2024-11-04T14:30"), ms("2024-11-04T21:00"))


def test_is_open_edges(cal: MarketCalendar) -> None:
    assert not cal.is_open(ms("2024-03-11T13:29:59"))
    assert cal.is_open(ms("2024-03-11T13:30"))
    assert cal.is_open(ms("2024-03-11T19:59:59"))
    assert not cal.is_open(ms("2024-03-11T20:00"))
    # 23:00 UTC on a Monday is still Monday evening in New York, after the close.
    assert not cal.is_open(ms("2024-03-11T23:00"))
    assert cal.session_at(ms("2024-03-11T15:00")) == cal.session(date(2024, 3, 11))
    assert cal.session_at(ms("2024-03-11T21:00")) is None


def test_next_open_across_long_weekends(cal: MarketCalendar) -> None:
    # Friday after Thanksgiving close -> Monday.
    assert cal.next_open(ms("2024-11-29T18:00")) == ms("2024-12-02T14:30")
    # Good Friday 2024 weekend: Thursday evening -> Monday April 1.
    assert cal.next_open(ms("2024-03-28T20:00")) == ms("2024-04-01T13:30")
    # MLK weekend 2025 (Carter mourning day on Thursday the 9th before it).
    assert cal.next_open(ms("2025-01-08T21:00")) == ms("2025-01-10T14:30")
    assert cal.next_open(ms("2025-01-17T21:00")) == ms("2025-01-21T14:30")
    # Exactly at an open returns that open; during a session returns the next day's.
    assert cal.next_open(ms("2024-03-11T13:30")) == ms("2024-03-11T13:30")
    assert cal.next_open(ms("2024-03-11T15:00")) == ms("2024-03-12T13:30")
    # Christmas 2024: Tuesday half day Dec 24, closed Dec 25.
    assert cal.next_open(ms("2024-12-24T18:00")) == ms("2024-12-26T14:30")


def test_parse_close_label() -> None:
    assert parse_close_label("Christmas Eve (markets close at 1:00pm)") == time(13, 0)
    assert parse_close_label("X (markets close at 2:30pm)") == time(14, 30)
    assert parse_close_label("X (markets close at 11:00am)") == time(11, 0)
    assert parse_close_label("X (markets close at 12:00noon)") == time(12, 0)
    assert parse_close_label("Good Friday") is None


def rut_dates(data_dir: Path) -> set[date]:
    path = data_dir / "daily" / "yahoo_alitalbi" / "RUT.csv"
    with path.open(newline="") as f:
        return {date.fromisoformat(row["Date"]) for row in csv.DictReader(f)}


def test_rut_trading_days_are_exactly_the_sessions(data_dir: Path, cal: MarketCalendar) -> None:
    start, end = date(2000, 1, 1), date(2026, 2, 20)
    traded = {d for d in rut_dates(data_dir) if start <= d <= end}
    assert len(traded) > 6500
    not_sessions = sorted(d for d in traded if not cal.is_session_day(d))
    assert not_sessions == []
    sessions = set()
    day = start
    while day <= end:
        if cal.is_session_day(day):
            sessions.add(day)
        day += timedelta(days=1)
    # The other way too: every session day of the calendar has a real RUT bar.
    assert sorted(sessions - traded) == []
