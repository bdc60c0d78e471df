"""Watchlists in backtests and digests, on real coins (``shared/data/daily/binance_alts*``)."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import pandas as pd
import pytest

from moodring.backtest.universe import load_universe
from moodring.backtest.watchlist import ranking
from moodring.cli import main
from moodring.settings import WatchlistConfig
from tests.oracles import DATA

DAILY = DATA / "daily"
ALTS = DAILY / "binance_alts"
WIDE = DAILY / "binance_alts_gnguyenquant"
BTC = f"btc={DAILY / 'binance_yanniedog/BTCUSDT_1d.csv'}"
RUT = f"rut={DAILY / 'yahoo_alitalbi/RUT.csv'}"
MEMBERS = ("ADA", "XRP", "LINK", "DOT")

FEEDS = """\
feeds:
  btc: {symbol: BTC/USDT}
  rut: {symbol: ^RUT, source: yahoo, market: equity}
"""
# one member's part of the config; the template is the same with {base}/{BASE}
MEMBER = """\
  - name: "{base}-decoupling"
    metric: "{base}_rut_corr"
    condition: {below: 0.2}
    clear: {above: 0.5}
    for: 2
    send_resolved: true
    title: "{BASE} decoupling from the Russell 2000"
    message: "30d corr {{ value | round(3) }}, {BASE}/BTC breakout {{ {base}btc_breakout }}"
  - name: "{base}btc-breakout"
    metric: "{base}btc_breakout"
    condition: {crosses_above: 0.5}
    cooldown: 30d
    message: "{BASE}/BTC above its 20-day range; MFI {{ {base}_mfi | round(1) }}"
"""
METRICS = """\
  "{base}_rut_corr": {type: correlation, a: {base}, b: rut, window: 30}
  "{base}_mfi": {type: mfi, series: "{base}", period: 14}
  "{base}btc_breakout": {type: breakout, series: "{base}btc", lookback: 20}
"""


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("MOODRING_"):
            monkeypatch.delenv(name)


def templated() -> str:
    """The watchlist config: each part once, for_each member."""
    members = ", ".join(f"{m}/USDT" for m in MEMBERS)
    metrics = "".join(
        line.replace('": {', '": {for_each: alts, ', 1) + "\n" for line in METRICS.splitlines()
    )
    rules = MEMBER.replace('  - name: "{base}', '  - for_each: alts\n    name: "{base}')
    return (
        f"watchlists:\n  alts: [{members}]\n{FEEDS}"
        '  "{base}": {for_each: alts, symbol: "{symbol}"}\n'
        'series:\n  "{base}btc": {for_each: alts, ratio: [{base}, btc]}\n'
        f"metrics:\n{metrics}rules:\n{rules}"
    )


def written_out() -> str:
    """The same config with every member's part written by hand, in the expansion's order."""

    def each(text: str) -> str:
        return "".join(text.replace("{base}", m.lower()).replace("{BASE}", m) for m in MEMBERS)

    feeds = each('  "{base}": {symbol: "{BASE}/USDT"}\n')
    series = each('  "{base}btc": {ratio: [{base}, btc]}\n')
    metrics = "".join(each(line + "\n") for line in METRICS.splitlines())
    rules = "".join(each(rule) for rule in _rules(MEMBER))
    return f"{FEEDS}{feeds}series:\n{series}metrics:\n{metrics}rules:\n{rules}"


def _rules(text: str) -> list[str]:
    parts = text.split("  - name:")[1:]
    return [f"  - name:{part}" for part in parts]


def backtest(tmp_path: Path, config: str, *args: str) -> tuple[list[dict], pd.DataFrame]:
    path = tmp_path / "config.yaml"
    path.write_text(config)
    out = tmp_path / "metrics.csv"
    stdout = tmp_path / "alerts.jsonl"
    with stdout.open("w") as sink, contextlib.redirect_stdout(sink):
        argv = ["backtest", "-c", str(path), "--data", BTC, "--data", RUT, *args]
        code = main(["--log-level", "WARNING", *argv, "--metrics-out", str(out)])
    assert code == 0
    return [json.loads(line) for line in stdout.read_text().splitlines()], pd.read_csv(out)


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


def test_the_digest_says_which_watched_members_fire(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = templated() + (
        "digest:\n  chart: false\n  watchlist:\n"
        '    "{base}-decoupling": are decoupling from the Russell 2000\n'
    )
    alerts, _ = backtest(tmp_path, config, "--universe", str(ALTS), "--to", "2025-03-31")
    state: dict[str, str] = {}
    for alert in alerts:
        if alert["rule"].endswith("-decoupling"):
            state[alert["rule"].removesuffix("-decoupling").upper()] = alert["state"]
    firing = [m for m in MEMBERS if state.get(m) == "firing"]
    assert firing == ["ADA", "XRP", "DOT"]  # the day chosen tells both kinds apart

    path = tmp_path / "config.yaml"
    argv = ["--log-level", "WARNING", "digest", "-c", str(path), "--data", BTC, "--data", RUT]
    assert main([*argv, "--universe", str(ALTS), "--at", "2025-04-01"]) == 0
    said = capsys.readouterr().out.splitlines()
    lines = [line for line in said if "watched alts" in line]
    assert lines == [  # digest.watchlist names the templates it tells of
        f"{len(firing)} of {len(MEMBERS)} watched alts are decoupling from the Russell 2000: "
        f"{', '.join(firing)}."
    ]
