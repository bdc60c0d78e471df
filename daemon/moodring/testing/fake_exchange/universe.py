"""The Binance universe of daily bars (the Altcoin Season Index's markets) for the fake."""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from moodring.backtest.universe import load_universe
from moodring.market.frame import BarFrame

DAY_MS = 86_400_000
# Markets added to a universe: a stablecoin pair and a leveraged token, busier than any coin.
EXTRA_MARKETS = {"USDCUSDT": 1.0, "ETHUPUSDT": 5.0}
EXTRA_VOLUME = 1e12
# The ticker streams ccxt's watch_tickers subscribes to (its default channel: miniTicker).
TICKER_KINDS = ("miniTicker", "ticker")


def num(value: float) -> str:
    """Format a float the way Binance does (8 places) unless that would not read back exactly."""
    text = f"{value:.8f}"
    if float(text) == value:
        return text
    return np.format_float_positional(value, unique=True, trim="0")


def day_of(value: int | str) -> int:
    """Return the UTC day open (epoch ms) of epoch ms or an ISO date/time."""
    if isinstance(value, str):
        when = datetime.fromisoformat(value)
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        value = int(when.timestamp() * 1000)
    return value - value % DAY_MS


class Listing:
    """One universe market: its daily bars, today's intraday price and traded volume."""

    def __init__(self, name: str, bars: BarFrame) -> None:
        self.name = name  # upper case, e.g. ADAUSDT
        self.time = np.asarray(bars.time, dtype=np.int64)
        self.open = np.asarray(bars.open, dtype=np.float64)
        self.high = np.asarray(bars.high, dtype=np.float64)
        self.low = np.asarray(bars.low, dtype=np.float64)
        self.close = np.asarray(bars.close, dtype=np.float64)
        self.volume = np.asarray(bars.volume, dtype=np.float64)
        self.price: float | None = None  # today's latest price, once a test set one
        self.traded = 0.0  # today's base volume so far
        self.failing = False

    def listed(self, day: int) -> bool:
        """Tell whether the market trades on ``day``: listed by then, a bar the day before."""
        return bool(self.time.size) and self.time[0] <= day and self.time[-1] >= day - DAY_MS

    def _row(self, day: int) -> int | None:
        """Return the row of the bar opening at ``day``, or None."""
        row = int(np.searchsorted(self.time, day))
        return row if row < self.time.size and self.time[row] == day else None

    def forming(self, day: int) -> list[float] | None:
        """Return today's bar so far [t, o, h, l, c, v] (None without a bar today)."""
        row = self._row(day)
        if row is None:
            return None
        first = float(self.open[row])
        last = first if self.price is None else self.price
        return [day, first, max(first, last), min(first, last), last, self.traded]

    def rows(self, day: int, start: int | None, end: int | None, limit: int) -> list[list[Any]]:
        """Return ``GET /api/v3/klines?interval=1d`` rows: closed days, then today's bar."""
        closed = int(np.searchsorted(self.time, day))
        bars = [
            [
                int(self.time[i]),
                float(self.open[i]),
                float(self.high[i]),
                float(self.low[i]),
                float(self.close[i]),
                float(self.volume[i]),
            ]
            for i in range(closed)
        ]
        today = self.forming(day)
        if today is not None:
            bars.append(today)
        chosen = [
            b for b in bars if (start is None or b[0] >= start) and (end is None or b[0] <= end)
        ]
        chosen = chosen[:limit] if start is not None else chosen[-limit:]
        return [
            [
                int(t),
                num(o),
                num(h),
                num(lo),
                num(c),
                num(v),
                int(t) + DAY_MS - 1,
                num(c * v),
                1,
                "0",
                "0",
                "0",
            ]
            for t, o, h, lo, c, v in chosen
        ]

    def ticker(self, day: int, now_ms: int) -> dict[str, Any]:
        """Return the ``ticker/24hr`` entry: today's price, the last closed day's volume."""
        closed = int(np.searchsorted(self.time, day))
        today = self.forming(day)
        before = float(self.close[closed - 1]) if closed else math.nan
        first = today[1] if today is not None else before
        last = today[4] if today is not None else before
        volume = float(self.volume[closed - 1]) if closed else 0.0
        quote = volume * before if closed else 0.0
        change = last - first
        return {
            "symbol": self.name,
            "priceChange": num(change),
            "priceChangePercent": f"{100 * change / first:.3f}" if first else "0.000",
            "weightedAvgPrice": num(last),
            "prevClosePrice": num(before if closed else last),
            "lastPrice": num(last),
            "lastQty": "1.00000000",
            "bidPrice": num(last),
            "bidQty": "1.00000000",
            "askPrice": num(last),
            "askQty": "1.00000000",
            "openPrice": num(first),
            "highPrice": num(max(first, last)),
            "lowPrice": num(min(first, last)),
            "volume": num(volume),
            "quoteVolume": num(quote),
            "openTime": now_ms - DAY_MS,
            "closeTime": now_ms,
            "firstId": 0,
            "lastId": 0,
            "count": 1,
        }

    def event(self, kind: str, day: int, now_ms: int) -> dict[str, Any]:
        """Return a ``24hrMiniTicker`` (``miniTicker``) or ``24hrTicker`` (``ticker``) event."""
        rest = self.ticker(day, now_ms)
        if kind == "miniTicker":
            return {
                "e": "24hrMiniTicker",
                "E": now_ms,
                "s": self.name,
                "c": rest["lastPrice"],
                "o": rest["openPrice"],
                "h": rest["highPrice"],
                "l": rest["lowPrice"],
                "v": rest["volume"],
                "q": rest["quoteVolume"],
            }
        return {
            "e": "24hrTicker",
            "E": now_ms,
            "s": self.name,
            "p": rest["priceChange"],
            "P": rest["priceChangePercent"],
            "w": rest["weightedAvgPrice"],
            "x": rest["prevClosePrice"],
            "c": rest["lastPrice"],
            "Q": rest["lastQty"],
            "b": rest["bidPrice"],
            "B": rest["bidQty"],
            "a": rest["askPrice"],
            "A": rest["askQty"],
            "o": rest["openPrice"],
            "h": rest["highPrice"],
            "l": rest["lowPrice"],
            "v": rest["volume"],
            "q": rest["quoteVolume"],
            "O": rest["openTime"],
            "C": rest["closeTime"],
            "F": 0,
            "L": 0,
            "n": 1,
        }


def extra_bars(days: np.ndarray, price: float) -> BarFrame:
    """Return flat daily bars at ``price`` with a huge volume on every given day."""
    flat = np.full(days.size, price)
    return BarFrame(days, flat, flat, flat, flat.copy(), np.full(days.size, EXTRA_VOLUME))


def load_universe_bars(paths: Iterable[Path | str], quote: str = "USDT") -> dict[str, BarFrame]:
    """Load ``<BASE><QUOTE>_1d.csv`` files (folders or files) as symbol -> daily bars."""
    coins = load_universe(paths, quote)
    return {f"{base}{quote.upper()}": coin.bars for base, coin in coins.items()}
