"""Bar timeframes (1m, 5m, 1h, 4h, 1d, 1w and multiples) aligned to UTC."""

from __future__ import annotations

import re
from dataclasses import dataclass

_UNIT_MS = {"m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
# Weeks start on Monday 00:00 UTC like exchange klines; the epoch was a Thursday.
_WEEK_OFFSET_MS = 4 * 86_400_000
_PATTERN = re.compile(r"^\s*(\d+)\s*([mhdw])\s*$")


@dataclass(frozen=True, slots=True)
class Timeframe:
    """A bar length in milliseconds and the rule that aligns bar open times."""

    name: str
    ms: int
    offset_ms: int = 0

    @classmethod
    def parse(cls, text: str) -> Timeframe:
        """Parse ``"1m"``, ``"15m"``, ``"4h"``, ``"1d"`` or ``"1w"`` (any positive multiple)."""
        match = _PATTERN.match(text)
        if match is None or int(match.group(1)) <= 0:
            raise ValueError(
                f"invalid timeframe {text!r}: expected e.g. 1m, 5m, 15m, 1h, 4h, 1d, 1w"
            )
        count, unit = int(match.group(1)), match.group(2)
        offset = _WEEK_OFFSET_MS if unit == "w" else 0
        return cls(f"{count}{unit}", count * _UNIT_MS[unit], offset)

    @classmethod
    def of_length(cls, ms: int) -> Timeframe:
        """Return the timeframe of bars ``ms`` long (e.g. a history file's inferred step)."""
        if ms <= 0:
            raise ValueError(f"a bar length must be positive, got {ms} ms")
        for unit in "wdhm":
            if ms % _UNIT_MS[unit] == 0:
                return cls.parse(f"{ms // _UNIT_MS[unit]}{unit}")
        return cls(f"{ms}ms", ms)

    def floor(self, t_ms: int) -> int:
        """Return the open time of the bar containing ``t_ms``."""
        return t_ms - (t_ms - self.offset_ms) % self.ms

    def __str__(self) -> str:
        return self.name
