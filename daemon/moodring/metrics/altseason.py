"""Altcoin Season Index: the share of the top altcoins whose 90-day performance beat BTC's.

The definition, shared exactly by the backtest (``altseason_series``) and the daemon
(``AltseasonIndex``):

* Coins are keyed by their base asset (``ADA`` for ``ADA/USDT``); ``excluded`` drops BTC
  itself, stablecoins and fiat, wrapped/staked/asset-backed tokens and leveraged tokens.
* Days are UTC calendar days (bar open time floored to 00:00 UTC), never row counts: a gap
  in a coin's history does not shift anything.
* At day D a coin's performance is ``close[D] / close[D - days] - 1``; a coin without both
  bars is left out. It counts as *skipped* when it has some bar in ``[D - days, D]`` (a
  young coin, a gap, or a coin delisted less than ``days`` ago).
* Its quote volume is the sum of ``close * volume`` over the calendar days
  ``D - volume_days + 1 .. D``, added oldest first (a missing day adds nothing).
* The universe is the ``top`` coins with a performance, by quote volume, highest first;
  equal volumes rank by base asset name (plain string order), so the choice is
  deterministic.
* The index is ``100 * (members whose performance > BTC's) / members``; NaN when BTC
  lacks either bar or the universe is empty. 75 and above is "altcoin season", 25 and
  below "bitcoin season".

A bar is used only when its close is finite and > 0 and its volume finite and >= 0.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from moodring.settings import ALTSEASON_COLUMNS, AltseasonConfig, ExclusionRules

__all__ = [
    "ALTSEASON_COLUMNS",
    "DEFAULT_RULES",
    "LEVERAGED_UNDERLYINGS",
    "STABLECOINS",
    "WRAPPED",
    "AltseasonIndex",
    "AltseasonSeries",
    "AltseasonValue",
    "ExclusionRules",
    "altseason_series",
    "excluded",
]

DAY_MS = 86_400_000
ALT_SEASON = 75.0
BITCOIN_SEASON = 25.0

# Stablecoins and fiat currencies traded as base assets (EURUSDT, TRYUSDT ...).
STABLECOINS = frozenset(
    {
        "USDT",
        "USDC",
        "BUSD",
        "TUSD",
        "DAI",
        "FDUSD",
        "USDP",
        "PAX",
        "UST",
        "USTC",
        "GUSD",
        "USDD",
        "USDN",
        "USDS",
        "USDSB",
        "SUSD",
        "LUSD",
        "FRAX",
        "FEI",
        "PYUSD",
        "USDE",
        "USD1",
        "RLUSD",
        "BFUSD",
        "XUSD",
        "USDJ",
        "HUSD",
        "EURI",
        "AEUR",
        "EURC",
        "EURT",
        "IDRT",
        "BIDR",
        "BVND",
        "BKRW",
        "EUR",
        "GBP",
        "AUD",
        "TRY",
        "BRL",
        "RUB",
        "UAH",
        "NGN",
        "ZAR",
        "JPY",
        "ARS",
        "MXN",
        "PLN",
        "RON",
        "CZK",
        "COP",
    }
)
# Wrapped, staked and asset-backed tokens: they track another asset rather than trade as one.
WRAPPED = frozenset(
    {
        "WBTC",
        "WETH",
        "WBETH",
        "BETH",
        "WBNB",
        "STETH",
        "WSTETH",
        "RETH",
        "CBETH",
        "BTCB",
        "RENBTC",
        "HBTC",
        "TBTC",
        "CBBTC",
        "SOLVBTC",
        "BNSOL",
        "WBT",
        "PAXG",
        "XAUT",
    }
)
# Every underlying Binance issued UP/DOWN or BULL/BEAR tokens on. ``*UP``/``*DOWN`` and
# ``*BULL``/``*BEAR`` match only with one of these as the rest of the name (bare BULL and
# BEAR were BTC's), so JUP, SYRUP, UP or PITBULL stay altcoins.
LEVERAGED_UNDERLYINGS = frozenset(
    {
        "BTC",
        "ETH",
        "BNB",
        "ADA",
        "XRP",
        "DOT",
        "LINK",
        "TRX",
        "XTZ",
        "EOS",
        "LTC",
        "FIL",
        "SXP",
        "YFI",
        "UNI",
        "SUSHI",
        "AAVE",
        "XLM",
        "BCH",
        "1INCH",
    }
)
_UP_DOWN = re.compile(r"^(?P<rest>[A-Z0-9]+)(?:UP|DOWN)$")
_BULL_BEAR = re.compile(r"^(?P<rest>[A-Z0-9]*)(?:BULL|BEAR)$")
# ``BTC3L``, ``ETH5S``: the leveraged tokens of other exchanges (at least two letters first).
_LEVERAGED_FACTOR = re.compile(r"^[A-Z0-9]{2,}[2-5][LS]$")


DEFAULT_RULES = ExclusionRules()


def excluded(base: str, rules: ExclusionRules = DEFAULT_RULES) -> str | None:
    """Return why a base asset is left out of the universe, or None when it is an altcoin."""
    name = base.upper()
    if name == "BTC":
        return "BTC is the benchmark"
    if name in rules.exclude:
        return "excluded by config"
    if name in rules.include:
        return None
    if name in STABLECOINS:
        return "stablecoin or fiat"
    if name in WRAPPED:
        return "wrapped, staked or asset-backed token"
    up_down, bull_bear = _UP_DOWN.match(name), _BULL_BEAR.match(name)
    if (
        (up_down and up_down["rest"] in LEVERAGED_UNDERLYINGS)
        or (bull_bear and bull_bear["rest"] in LEVERAGED_UNDERLYINGS | {""})
        or _LEVERAGED_FACTOR.match(name)
    ):
        return "leveraged token"
    return None


# --------------------------------------------------------------------------- backtest


@dataclass(frozen=True, slots=True)
class AltseasonSeries:
    """The index per BTC day: values, universe sizes, skipped counts and ranked members."""

    times: np.ndarray  # day open times, epoch ms (int64)
    index: np.ndarray  # float64, NaN where undefined
    members: np.ndarray  # int64 universe size
    skipped: np.ndarray  # int64
    symbols: tuple[str, ...]  # the eligible coins, sorted
    ranked: np.ndarray  # (days, top) indices into symbols by quote volume, -1 past the end

    def members_at(self, row: int) -> tuple[str, ...]:
        """Return the universe of one row, highest quote volume first."""
        return tuple(self.symbols[i] for i in self.ranked[row].tolist() if i >= 0)

    def columns(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Return ``altseason_index``, ``altseason_members`` and ``altseason_skipped`` series."""
        return {
            "altseason_index": (self.times, self.index),
            "altseason_members": (self.times, self.members.astype(np.float64)),
            "altseason_skipped": (self.times, self.skipped.astype(np.float64)),
        }


def _days(name: str, times: np.ndarray) -> np.ndarray:
    """Return the UTC day numbers of bar open times; ValueError unless strictly increasing."""
    days = np.asarray(times, dtype=np.int64) // DAY_MS
    if days.size > 1 and not (np.diff(days) > 0).all():
        row = int(np.argmax(np.diff(days) <= 0)) + 1
        raise ValueError(f"{name}: bar {row} is not on a later UTC day than the bar before it")
    return days


def altseason_series(
    closes: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
    btc: tuple[np.ndarray, np.ndarray],
    *,
    top: int = 50,
    days: int = 90,
    volume_days: int = 30,
    rules: ExclusionRules = DEFAULT_RULES,
) -> AltseasonSeries:
    """Compute the index on every BTC day from daily (times, close, volume) per base asset."""
    if top < 1 or days < 1 or volume_days < 1:
        raise ValueError("top, days and volume_days must be at least 1")
    btc_days = _days("BTC", btc[0])
    btc_close = np.asarray(btc[1], dtype=np.float64)
    symbols = tuple(sorted(s for s in closes if excluded(s, rules) is None))
    n_out = btc_days.size
    if n_out == 0:
        empty = np.zeros(0, np.int64)
        return AltseasonSeries(empty, np.zeros(0), empty, empty, symbols, np.zeros((0, top), int))
    lo = int(btc_days[0]) - max(days, volume_days - 1)
    width = int(btc_days[-1]) - lo + 1
    close = np.full((len(symbols) + 1, width), np.nan)  # the last row is BTC
    quote = np.zeros((len(symbols), width))
    for k, symbol in enumerate(symbols):
        t, c, v = closes[symbol]
        day = _days(symbol, t)
        c, v = np.asarray(c, dtype=np.float64), np.asarray(v, dtype=np.float64)
        keep = (day >= lo) & (day < lo + width) & np.isfinite(c) & (c > 0)
        keep &= np.isfinite(v) & (v >= 0)
        column = day[keep] - lo
        close[k, column] = c[keep]
        quote[k, column] = c[keep] * v[keep]
    ok = np.isfinite(btc_close) & (btc_close > 0)
    close[-1, btc_days[ok] - lo] = btc_close[ok]

    out = btc_days - lo
    perf = close[:, out] / close[:, out - days] - 1.0
    coin_perf, btc_perf = perf[:-1], perf[-1]
    volume = np.zeros((len(symbols), n_out))
    for back in range(volume_days - 1, -1, -1):  # oldest first, as the live class adds
        volume += quote[:, out - back]
    present = np.zeros((len(symbols), width + 1), dtype=np.int64)
    np.cumsum(~np.isnan(close[:-1]), axis=1, out=present[:, 1:])
    seen = present[:, out + 1] - present[:, out - days] > 0
    eligible = ~np.isnan(coin_perf)
    skipped = np.count_nonzero(seen & ~eligible, axis=0)

    # A stable sort over symbol-sorted rows breaks volume ties by symbol.
    key = np.where(eligible, -volume, np.inf)
    order = np.argsort(key, axis=0, kind="stable")[:top]
    count = np.minimum(np.count_nonzero(eligible, axis=0), top)
    member = np.arange(order.shape[0])[:, None] < count[None, :]
    beats = np.count_nonzero(
        member & (np.take_along_axis(coin_perf, order, axis=0) > btc_perf), axis=0
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        index = 100.0 * beats / count
    index[(count == 0) | np.isnan(btc_perf)] = np.nan
    ranked = np.full((n_out, top), -1, dtype=np.int64)
    ranked[:, : order.shape[0]] = np.where(member, order, -1).T
    return AltseasonSeries(
        btc_days * DAY_MS, index, count.astype(np.int64), skipped.astype(np.int64), symbols, ranked
    )


# --------------------------------------------------------------------------- live


@dataclass(frozen=True, slots=True)
class AltseasonValue:
    """The index at one day: value (NaN if undefined), members by quote volume, skipped count."""

    time: int
    index: float
    members: tuple[str, ...]
    skipped: int

    @property
    def season(self) -> str | None:
        """Return "altcoin season" at 75 and above, "bitcoin season" at 25 and below, else None."""
        if self.index >= ALT_SEASON:
            return "altcoin season"
        if self.index <= BITCOIN_SEASON:
            return "bitcoin season"
        return None


class _Coin:
    """One coin's recent closes and quote volumes by UTC day number, oldest first."""

    __slots__ = ("closes", "quotes")

    def __init__(self) -> None:
        self.closes: dict[int, float] = {}
        self.quotes: dict[int, float] = {}


def _trim(values: dict[int, float], first: int) -> None:
    """Drop the entries of days before ``first`` (they are the oldest, at the front)."""
    while values:
        oldest = next(iter(values))
        if oldest >= first:
            return
        del values[oldest]


def _valid(close: float, volume: float = 0.0) -> bool:
    """Tell whether a bar counts: finite close > 0 and finite volume >= 0."""
    return math.isfinite(close) and close > 0 and math.isfinite(volume) and volume >= 0


class AltseasonIndex:
    """The index for the daemon: fed one closed day at a time, able to peek at the forming day.

    Holds per coin only the closes of the last ``days + 1`` days and the quote volumes of
    the last ``volume_days``; gives exactly what ``altseason_series`` gives on the same data.
    """

    def __init__(
        self,
        *,
        top: int = 50,
        days: int = 90,
        volume_days: int = 30,
        rules: ExclusionRules = DEFAULT_RULES,
    ) -> None:
        if top < 1 or days < 1 or volume_days < 1:
            raise ValueError("top, days and volume_days must be at least 1")
        self.top = top
        self.days = days
        self.volume_days = volume_days
        self.rules = rules
        self.value: AltseasonValue | None = None
        self._coins: dict[str, _Coin] = {}
        self._btc: dict[int, float] = {}
        self._eligible: dict[str, bool] = {}
        self._last_day: int | None = None

    @classmethod
    def from_config(cls, config: AltseasonConfig) -> AltseasonIndex:
        """Build the index from the ``altseason`` config section."""
        return cls(
            top=config.top, days=config.days, volume_days=config.volume_days, rules=config.rules()
        )

    def update_day(
        self, day_ms: int, closes: Mapping[str, tuple[float, float]], btc_close: float
    ) -> AltseasonValue:
        """Fold in a closed UTC day: base asset -> (close, base volume), and BTC's close."""
        day = day_ms // DAY_MS
        if self._last_day is not None and day <= self._last_day:
            raise ValueError("update_day needs days in increasing order")
        today = self._today(closes.items())
        value = self._evaluate(day, today, btc_close)
        for symbol, (close, quote) in today.items():
            coin = self._coins.get(symbol) or self._coins.setdefault(symbol, _Coin())
            coin.closes[day] = close
            coin.quotes[day] = quote
        if _valid(btc_close):
            self._btc[day] = btc_close
        for symbol in list(self._coins):
            coin = self._coins[symbol]
            _trim(coin.closes, day + 1 - self.days)
            _trim(coin.quotes, day + 2 - self.volume_days)
            if not coin.closes and not coin.quotes:
                del self._coins[symbol]
        _trim(self._btc, day + 1 - self.days)
        self._last_day = day
        self.value = value
        return value

    def peek(
        self,
        prices: Mapping[str, float],
        btc_price: float,
        *,
        volumes: Mapping[str, float] | None = None,
        day_ms: int | None = None,
    ) -> AltseasonValue:
        """Return the index if the forming day closed at these prices (and base volumes so far).

        The forming day is the one after the last closed day unless ``day_ms`` says otherwise;
        a coin without a volume counts today's volume as 0. Changes nothing.
        """
        if day_ms is None:
            if self._last_day is None:
                raise ValueError("peek needs day_ms before the first update_day")
            day = self._last_day + 1
        else:
            day = day_ms // DAY_MS
            if self._last_day is not None and day <= self._last_day:
                raise ValueError("peek needs a day after the last closed one")
        volumes = volumes or {}
        bars = ((s, (p, volumes.get(s, 0.0))) for s, p in prices.items())
        return self._evaluate(day, self._today(bars), btc_price)

    def _today(
        self, bars: Iterable[tuple[str, tuple[float, float]]]
    ) -> dict[str, tuple[float, float]]:
        """Return today's usable altcoin bars as symbol -> (close, quote volume)."""
        today: dict[str, tuple[float, float]] = {}
        for symbol, (close, volume) in bars:
            ok = self._eligible.get(symbol)
            if ok is None:
                ok = self._eligible[symbol] = excluded(symbol, self.rules) is None
            if ok and _valid(close, volume):
                today[symbol] = (close, close * volume)
        return today

    def _evaluate(
        self, day: int, today: Mapping[str, tuple[float, float]], btc_now: float
    ) -> AltseasonValue:
        """Compute the index at ``day`` from the stored days before it and today's bars."""
        start = day - self.days
        first_volume = day - self.volume_days + 1
        perf: dict[str, float] = {}
        quote: dict[str, float] = {}
        skipped = 0
        for symbol in self._coins.keys() | today.keys():
            coin = self._coins.get(symbol)
            now = today.get(symbol)
            then = coin.closes.get(start) if coin is not None else None
            if coin is None or now is None or then is None:
                seen = now is not None or (
                    coin is not None and bool(coin.closes) and next(reversed(coin.closes)) >= start
                )
                skipped += seen
                continue
            perf[symbol] = now[0] / then - 1.0
            total = 0.0
            for d, q in coin.quotes.items():  # insertion order is day order
                if d >= first_volume:
                    total += q
            quote[symbol] = total + now[1]
        btc_then = self._btc.get(start)
        btc_perf = btc_now / btc_then - 1.0 if btc_then is not None and _valid(btc_now) else None
        members = sorted(perf, key=lambda s: (-quote[s], s))[: self.top]
        if btc_perf is None or not members:
            index = math.nan
        else:
            beats = sum(1 for s in members if perf[s] > btc_perf)
            index = 100.0 * beats / len(members)
        return AltseasonValue(day * DAY_MS, index, tuple(members), skipped)
