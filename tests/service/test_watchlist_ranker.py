"""Ranking a dynamic watchlist from the fake exchange's universe, and a ranking that fails."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import pytest

from moodring.service.ranker import Members, Ranker
from moodring.settings import WatchlistConfig
from moodring.testing.fake_exchange import FakeExchange
from tests.service.test_watchlist_live import DAY_MS, FIRST_DAY, daily


def universe() -> dict[str, object]:
    """Three alts by volume (USDC and ETHUP, busier than any, are served by the fake too)."""
    return {
        "SOLUSDT": daily([9e6] * 6),
        "XRPUSDT": daily([5e6] * 6),
        "ADAUSDT": daily([1e3] * 6),
    }


def collector() -> tuple[list[tuple[str, Members]], Callable[[str, Members], Awaitable[None]]]:
    """Return a list and an ``on_members`` that appends each hand-over to it."""
    handed: list[tuple[str, Members]] = []

    async def on_members(name: str, members: Members) -> None:
        handed.append((name, members))

    return handed, on_members


async def test_a_failed_ranking_keeps_the_members_and_says_so_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="moodring.watchlists")
    handed, on_members = collector()
    async with FakeExchange(universe=universe(), today=FIRST_DAY + 4 * DAY_MS) as fake:
        config = WatchlistConfig.model_validate(
            {"top": 2, "volume_days": 2, "rest_url": fake.rest_url}
        )
        ranker = Ranker(lambda: {"alts": config}, on_members)
        await ranker.rank("alts", config)
    assert [m.symbol for m in ranker.members["alts"]] == ["SOL/USDT", "XRP/USDT"]
    # the exchange is gone: the rankings fail, the members stay, it is said once
    await ranker.rank("alts", config)
    await ranker.rank("alts", config)
    assert [m.base for m in ranker.members["alts"]] == ["SOL", "XRP"]
    assert len(handed) == 1
    said = [r.getMessage() for r in caplog.records if "ranking failed" in r.getMessage()]
    assert len(said) == 1, said
    assert "keeping its 2 current member(s)" in said[0]


async def test_a_ranking_waits_out_the_exchanges_retry_after(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="moodring")
    _, on_members = collector()
    # a window of 80 (every ticker weighs 80) holds the markets (20) or the tickers, never
    # both: a ranking is answered 429 once at least, and goes through only by waiting it out
    async with FakeExchange(
        universe=universe(), today=FIRST_DAY + 4 * DAY_MS, weight_limit=80, weight_window=2.0
    ) as fake:
        config = WatchlistConfig.model_validate(
            {"top": 2, "volume_days": 2, "rest_url": fake.rest_url}
        )
        ranker = Ranker(lambda: {"alts": config}, on_members)
        await ranker.rank("alts", config)
        limited = fake.rate_limited
    assert [m.symbol for m in ranker.members["alts"]] == ["SOL/USDT", "XRP/USDT"]
    assert not ranker.failing
    waits = [r.getMessage() for r in caplog.records if "as the exchange asks" in r.getMessage()]
    assert limited >= 1 and len(waits) == limited, (limited, waits)
