"""Ranking a dynamic watchlist from the fake exchange's universe, and a ranking that fails."""

from __future__ import annotations

import logging

import pytest

from moodring.service.ranker import Members, Ranker
from moodring.settings import WatchlistConfig
from moodring.testing.fake_exchange import FakeExchange
from tests.service.test_watchlist_live import DAY_MS, FIRST_DAY, daily


async def test_a_failed_ranking_keeps_the_members_and_says_so_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="moodring.watchlists")
    universe = {  # USDC and ETHUP (busier than any, served by the fake) are left out
        "SOLUSDT": daily([9e6] * 6),
        "XRPUSDT": daily([5e6] * 6),
        "ADAUSDT": daily([1e3] * 6),
    }
    handed: list[tuple[str, Members]] = []

    async def on_members(name: str, members: Members) -> None:
        handed.append((name, members))

    async with FakeExchange(universe=universe, today=FIRST_DAY + 4 * DAY_MS) as fake:
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
