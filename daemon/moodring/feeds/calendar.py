"""Kept for imports of the old place: the NYSE calendar lives in ``moodring.market.calendar``."""

from moodring.market.calendar import MarketCalendar, calendar_named, parse_close_label

__all__ = ["MarketCalendar", "calendar_named", "parse_close_label"]
