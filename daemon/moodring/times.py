"""Durations (``90s``, ``30m``, ``2h``, ``1d``, ``1w``) and UTC timestamps for people."""

from __future__ import annotations

import re
from datetime import UTC, datetime

_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")


def parse_duration(text: str | float) -> float:
    """Return a duration in seconds; a bare number is seconds."""
    if isinstance(text, int | float):
        if text < 0:
            raise ValueError("a duration cannot be negative")
        return float(text)
    match = _PATTERN.match(text)
    if match is None:
        raise ValueError(f"invalid duration {text!r}: expected e.g. 90s, 30m, 2h, 1d, 1w")
    return float(match.group(1)) * _UNIT_S[match.group(2)]


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
