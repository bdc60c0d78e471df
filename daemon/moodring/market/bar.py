"""The bar record passed between layers."""

from __future__ import annotations

from typing import NamedTuple


class Bar(NamedTuple):
    """One OHLCV bar; ``time`` is the bar's open time in epoch milliseconds (UTC)."""

    time: int
    open: float
    high: float
    low: float
    close: float
    volume: float
