"""The bar record passed between layers, and the value of what is not known yet."""

from __future__ import annotations

from typing import NamedTuple

# a value not known yet: a bar before its first trade, a metric before its window fills
NAN = float("nan")


class Bar(NamedTuple):
    """One OHLCV bar; ``time`` is the bar's open time in epoch milliseconds (UTC)."""

    time: int
    open: float
    high: float
    low: float
    close: float
    volume: float
