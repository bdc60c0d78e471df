"""The shipped rules on the bundled daily history: few alerts, none contradicting its value.

The backtest the README's Rules section shows is run here: its summary must equal the
README's table, its decoupling dates the README's list, on both backtest paths.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import math
import re
from collections import defaultdict

import pandas as pd
import pytest

from moodring.cli import main
from tests.support import oracles
from tests.support.oracles import read_ohlcv
from tests.support.paths import ROOT
from tests.support.shipped import ARGS, FEEDS


def backtest(*extra: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["backtest", *ARGS, *extra]) == 0
    return out.getvalue()


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[dict], pd.DataFrame]:
    """The shipped config's alerts (vectorised) and its metrics table."""
    table = tmp_path_factory.mktemp("shipped") / "metrics.csv"
    alerts = [json.loads(line) for line in backtest("--metrics-out", str(table)).splitlines()]
    return alerts, pd.read_csv(table, index_col="time", parse_dates=["time"])


def readme_block(marker: str) -> str:
    text = (ROOT / "README.md").read_text()
    found = re.search(rf"<!-- {marker}:[^\n]*-->\n```\n(.*?)```\n", text, re.DOTALL)
    assert found, f"README has no {marker} block"
    return found.group(1)


def test_the_readme_shows_what_the_shipped_rules_send() -> None:
    assert backtest("--format", "summary") == readme_block("shipped-rules")


def test_the_readme_lists_the_decoupling_alerts(run: tuple[list[dict], pd.DataFrame]) -> None:
    alerts, _ = run
    listed: dict[tuple[str, str], list[str]] = {}
    key = None
    for line in readme_block("shipped-decouplings").splitlines():
        head, sep, dates = line.partition(":")
        if sep:
            key = tuple(head.split())
        else:
            dates = head
        listed.setdefault(key, []).extend(dates.split())
    expected: dict[tuple[str, str], list[str]] = defaultdict(list)
    for a in alerts:
        if a["rule"] in ("eth-rut-decoupling", "eth-decoupled-and-leading"):
            expected[(a["rule"], a["state"])].append(a["time"][:10])
    assert listed == expected


def test_few_alerts_and_none_twice_within_five_bars(run: tuple[list[dict], pd.DataFrame]) -> None:
    alerts, table = run
    months = (table.index[-1] - table.index[0] + pd.Timedelta(days=1)).days / (365.25 / 12)
    assert months > 100 and len(alerts) / months <= 3.0
    fired: dict[str, list[pd.Timestamp]] = defaultdict(list)
    for a in alerts:
        if a["state"] == "firing":
            fired[a["rule"]].append(pd.Timestamp(a["time"]))
    assert len(fired) == 13  # every shipped rule fires on this history
    for rule, times in fired.items():
        gaps = [(b - a).days for a, b in itertools.pairwise(times)]
        assert min(gaps, default=99) > 5, rule


def test_the_great_decoupling_and_the_deeper_ones_alert(
    run: tuple[list[dict], pd.DataFrame],
) -> None:
    alerts, _ = run
    regime = [pd.Timestamp(a["time"]) for a in alerts if a["rule"] == "eth-decoupled-and-leading"]
    start, end = pd.Timestamp("2025-12-01", tz="UTC"), pd.Timestamp("2026-01-06", tz="UTC")
    window = [t for t in regime if start <= t <= end]
    assert window, regime
    # every fall below 0.3 for two bars after being above 0.45, read from raw prices alone
    eth, rut = read_ohlcv(FEEDS["eth"]), read_ohlcv(FEEDS["rut"])
    corr = oracles.log_returns_corr(eth["close"], rut["close"], 30).dropna()
    expected, firing, below = [], False, 0
    for t, value in corr.items():
        below = below + 1 if value < 0.3 else 0
        if firing and value > 0.45:
            firing = False
            expected.append((t, "resolved"))
        elif not firing and below >= 2:
            firing = True
            expected.append((t, "firing"))
    got = [
        (pd.Timestamp(a["time"]), a["state"]) for a in alerts if a["rule"] == "eth-rut-decoupling"
    ]
    assert got == expected and len(expected) > 20


def test_no_alert_says_what_its_value_contradicts(run: tuple[list[dict], pd.DataFrame]) -> None:
    alerts, table = run
    latest = table.ffill()
    mfi = table["eth_mfi"]
    for a in alerts:
        t = pd.Timestamp(a["time"])
        now, before = mfi.loc[t], mfi.shift().loc[t]
        match a["rule"]:
            case "eth-mfi-enters-bullish-band":
                assert before < 50 <= now <= 80, a
                assert f"rose to {now:.1f} from {before:.1f}" in a["message"]
            case "eth-mfi-leaves-bullish-band":
                assert now < 50 <= before <= 80, a
                assert f"fell to {now:.1f} from {before:.1f}" in a["message"]
            case "eth-mfi-overbought":
                assert now > 80 and "above 80" in a["message"]
            case "eth-mfi-oversold":
                assert now < 20 and "below 20" in a["message"]
            case "eth-decoupled-and-leading":
                row = latest.loc[t]
                assert row["eth_rut_corr"] < 0.5 < row["eth_rut_corr_90"], a
                assert row["ethbtc_chg_30"] > 0 and 50 <= row["eth_mfi"] <= 80, a
            case "altseason-starts" | "bitcoin-season-starts":
                row = table.loc[t]
                assert row["altseason_members"] > 30, a
                index = row["altseason_index"]
                assert index > 75 if a["rule"] == "altseason-starts" else index < 25, a
                shown = re.match(r"The Altcoin Season Index is (\d+): (only )?(\d+)%", a["message"])
                assert shown and abs(int(shown[1]) - index) <= 0.5 and shown[1] == shown[3], a
                assert f"top {row['altseason_members']:.0f} altcoins" in a["message"]
        assert a["value"] is not None and not math.isnan(a["value"])


def test_streaming_sends_the_same_alerts(run: tuple[list[dict], pd.DataFrame]) -> None:
    alerts, _ = run
    streamed = [json.loads(line) for line in backtest("--streaming").splitlines()]
    assert [(a["time"], a["rule"], a["state"], a["message"]) for a in streamed] == [
        (a["time"], a["rule"], a["state"], a["message"]) for a in alerts
    ]
