"""Watchlists in backtests on real coins (``shared/data/daily/binance_alts*``), both paths."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from moodring.backtest.universe import load_universe
from moodring.backtest.watchlist import ranking
from moodring.settings import WatchlistConfig
from tests.support.watchlists import ALTS, FEEDS, MEMBERS, WIDE, backtest, templated, written_out

# no MOODRING_* variable, user or system config around
pytestmark = pytest.mark.usefixtures("isolated")


@pytest.mark.parametrize("path", ["batch", "streaming"])
def test_a_watchlist_backtests_exactly_as_its_members_written_out(
    tmp_path: Path, path: str
) -> None:
    args = ["--universe", str(ALTS), "--from", "2021-01-01"]
    args += ["--streaming"] if path == "streaming" else []
    alerts, table = backtest(tmp_path, templated(), *args)
    by_hand = tmp_path / "by_hand"
    by_hand.mkdir()
    args = [a for a in args if a not in ("--universe", str(ALTS))]
    data = [f"--data={m.lower()}={ALTS / f'{m}USDT_1d.csv'}" for m in MEMBERS]
    want_alerts, want_table = backtest(by_hand, written_out(), *args, *data)
    assert list(table.columns) == list(want_table.columns)
    assert list(table.columns)[1:5] == [f"{m.lower()}_rut_corr" for m in MEMBERS]
    pd.testing.assert_frame_equal(table, want_table)
    assert alerts == want_alerts
    assert {a["rule"] for a in alerts} >= {f"{m.lower()}-decoupling" for m in MEMBERS}
    assert any("XRP/BTC above its 20-day range" in a["message"] for a in alerts)


def oracle_ranking(top: int, volume_days: int) -> dict[pd.Timestamp, list[str]]:
    """Each day's top coins by quote volume over ``volume_days``, computed with pandas.

    A coin takes part on a day it has a bar of and one the day before; ties by name.
    """
    closes, quotes = {}, {}
    for file in sorted(WIDE.glob("*USDT_1d.csv")):
        frame = pd.read_csv(file)
        day = pd.to_datetime(frame["Open Time"], unit="ms", utc=True)
        base = file.name.removesuffix("USDT_1d.csv")
        closes[base] = pd.Series(frame["Close"].to_numpy(), index=day)
        quotes[base] = pd.Series((frame["Close"] * frame["Volume"]).to_numpy(), index=day)
    end = pd.Timestamp("2022-06-30", tz="UTC")
    days = pd.date_range(min(s.index[0] for s in closes.values()), end)
    close = pd.DataFrame(closes).reindex(days)
    volume = pd.DataFrame(quotes).reindex(days).fillna(0.0).rolling(volume_days, 1).sum()
    eligible = close.notna() & close.shift(1).notna()
    ranked = {}
    for day in days:
        coins = [c for c in close.columns if eligible.at[day, c]]
        ranked[day] = sorted(coins, key=lambda c: (-volume.at[day, c], c))[:top]
    return ranked


def test_a_dynamic_watchlist_ranks_as_the_altseason_index_and_tells_members_only(
    tmp_path: Path,
) -> None:
    config = WatchlistConfig(top=5, refresh="7d")
    rank = ranking(load_universe([WIDE]), config)
    want = oracle_ranking(5, 30)
    days = [pd.Timestamp(t, unit="ms", tz="UTC") for t in rank.days.tolist()]
    assert {d: list(m) for d, m in zip(days, rank.members, strict=True)} == {
        d: want[d] for d in days
    }

    text = (
        f"watchlists:\n  busiest: {{top: 5, refresh: 7d}}\n{FEEDS}"
        '  "{base}": {for_each: busiest, symbol: "{symbol}"}\n'
        'metrics:\n  "{base}_mfi": {for_each: busiest, type: mfi, series: "{base}"}\n'
        "rules:\n"
        '  - {for_each: busiest, name: "{base}-hot", metric: "{base}_mfi",'
        " condition: {above: 75}, clear: {below: 60}, send_resolved: true}\n"
    )
    start = pd.Timestamp("2021-01-01", tz="UTC")
    alerts, table = backtest(
        tmp_path, text, "--universe", str(WIDE), "--from", "2021-01-01", "--to", "2022-06-29"
    )
    # the ranking of a day holds from the next one, re-ranked every 7 days from the day before
    end = pd.Timestamp("2022-06-29", tz="UTC")
    rank_days = pd.date_range(start - pd.Timedelta(days=1), end, freq="7D")
    members_at = {}
    for day in pd.date_range(start, end):
        last = rank_days[rank_days < day][-1]
        members_at[day] = set(want[last])
    ever = set().union(*members_at.values())
    assert {c.removesuffix("_mfi").upper() for c in table.columns[1:]} == ever
    told: dict[str, str] = {}
    left = 0
    for alert in alerts:
        day = pd.Timestamp(alert["time"])
        base = alert["rule"].removesuffix("-hot").upper()
        if alert["message"].startswith(f"{base} left "):
            left += 1
            assert base not in members_at[day] and base in members_at[day - pd.Timedelta(days=1)]
            assert told.get(base) == "firing"
        else:
            assert base in members_at[day], alert
        # what people are told alternates: firing, resolved (here: on leaving), firing ...
        assert told.get(base, "resolved") != alert["state"], alert
        told[base] = alert["state"]
    assert left >= 1 and len(alerts) > 10
