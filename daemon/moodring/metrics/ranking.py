"""Dynamic watchlists' members by day, ranked as the Altcoin Season Index ranks its universe.

Shared by the backtest (a universe's files) and the daemon (the exchange's daily candles):
quote volume over ``volume_days``, the index's exclusions and ``include``/``exclude``, ties
by name (``altseason_series``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from moodring.metrics.altseason import DAY_MS, altseason_series
from moodring.settings import Member, WatchlistConfig

__all__ = ["Daily", "Ranking", "described", "rank_by_volume", "ranked_members"]

# a coin's daily bars: (open times in epoch ms, closes, base volumes)
Daily = tuple[np.ndarray, np.ndarray, np.ndarray]


@dataclass(frozen=True, slots=True)
class Ranking:
    """A dynamic watchlist's members by day: day open times and each day's members."""

    days: np.ndarray  # int64 epoch ms
    members: tuple[tuple[str, ...], ...]  # base assets, highest quote volume first


def rank_by_volume(coins: Mapping[str, Daily], config: WatchlistConfig) -> Ranking:
    """Rank base asset -> daily bars on every day they cover.

    A coin takes part on a day it has a bar of (and one the day before).
    """
    if not coins:
        return Ranking(np.zeros(0, np.int64), ())
    days = np.unique(np.concatenate([times for times, _, _ in coins.values()]))
    series = altseason_series(
        dict(coins),
        (days, np.ones(days.shape[0])),
        top=config.top or 1,
        days=1,
        volume_days=config.volume_days,
        rules=config.rules(),
    )
    return Ranking(series.times, tuple(series.members_at(i) for i in range(len(series.times))))


def ranked_members(rank: Ranking, at_ms: int, quote: str) -> tuple[Member, ...]:
    """Return the members of the last ranking of a day closed by ``at_ms``."""
    row = int(np.searchsorted(rank.days, at_ms - DAY_MS, side="right")) - 1
    if row < 0:
        return ()
    return tuple(Member(f"{base}/{quote}", base, quote) for base in rank.members[row])


def described(name: str, config: WatchlistConfig) -> str:
    """Return how alerts name a dynamic watchlist: ``the top 50 watchlist alts``."""
    return f"the top {config.top} watchlist {name}"
