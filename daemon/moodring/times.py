"""Durations (``90s``, ``30m``, ``2h``, ``1d``, ``1w``, ``1h30m``, ``500ms``) and UTC times."""

from __future__ import annotations

import re
from datetime import UTC, datetime

_UNIT_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_PART = r"(\d+(?:\.\d+)?)\s*(ms|[smhdw])"
_PATTERN = re.compile(rf"^\s*(?:{_PART}\s*)+$")
# the units a duration is written back in: weeks are shown as days (``7d``)
_WRITTEN = (("d", 86400_000), ("h", 3600_000), ("m", 60_000), ("s", 1000), ("ms", 1))


def parse_duration(text: str | float) -> float:
    """Return a duration in seconds; a bare number is seconds, parts add up (``1h30m``)."""
    if isinstance(text, int | float):
        if text < 0:
            raise ValueError("a duration cannot be negative")
        return float(text)
    if not isinstance(text, str) or _PATTERN.match(text) is None:
        raise ValueError(
            f"invalid duration {text!r}: expected e.g. 90s, 30m, 2h, 1d, 1w, 1h30m, 500ms"
        )
    return sum(float(n) * _UNIT_S[unit] for n, unit in re.findall(_PART, text))


def write_duration(seconds: float) -> str:
    """Return a duration exactly, as one would write it: ``7d``, ``1h30m``, ``500ms``."""
    ms = seconds * 1000
    if ms != round(ms):
        return f"{seconds:g}s"
    left, parts = round(ms), []
    for unit, size in _WRITTEN:
        if left >= size:
            parts.append(f"{left // size}{unit}")
            left %= size
    return "".join(parts) or "0s"


def format_duration(seconds: float) -> str:
    """Return a short human form: ``2h``, ``90s``, ``1d 2h``."""
    seconds = round(seconds)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return " ".join(parts[:2]) or "0s"


def iso_time(t_ms: int) -> str:
    """Format epoch milliseconds as ISO-8601 UTC with a ``Z``."""
    moment = datetime.fromtimestamp(t_ms / 1000, UTC)
    text = moment.isoformat(timespec="milliseconds" if t_ms % 1000 else "seconds")
    return text.replace("+00:00", "Z")
