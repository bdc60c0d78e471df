"""``moodring backtest --sweep``: figures per value checked against independent counts."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import signal
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import talib
import yaml

from moodring.backtest.csvfile import load_csv
from moodring.backtest.runner import FeedHistory, RuleInputs, clean_history, run_batch
from moodring.backtest.sweep import (
    EdgeCandidates,
    parse_sweep,
    replay_rule,
    sweep_inputs,
    swept_rules,
)
from moodring.cli import main
from moodring.configfile import load_settings
from moodring.settings import RuleConfig
from tests.support.oracles import read_ohlcv
from tests.support.paths import DATA

ETH = DATA / "daily/binance_yanniedog/ETHUSDT_1d.csv"
DAY = pd.Timedelta(days=1)
CONFIG = {
    "feeds": {"eth": {"symbol": "ETH/USDT", "source": "ccxt", "exchange": "binance"}},
    "metrics": {"eth_mfi": {"type": "mfi", "series": "eth", "timeframe": "1d", "period": 14}},
    "rules": [
        {"name": "mfi-falls", "metric": "eth_mfi", "condition": {"crosses_below": 30}},
        {"name": "mfi-high", "metric": "eth_mfi", "condition": {"above": 70}, "for": 2},
    ],
}


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def sweep(config: Path, *specs: str) -> list[dict[str, Any]]:
    args = [a for spec in specs for a in ("--sweep", spec)]
    code, out, err = run("backtest", "-c", str(config), f"--data=eth={ETH}", *args)
    assert code == 0, err
    return [json.loads(line) for line in out.splitlines()]


@pytest.fixture(scope="module")
def mfi() -> pd.Series:
    """ETH's daily MFI over 2017-08 → 2026-01 from the raw file with pandas and TA-Lib."""
    df = read_ohlcv(ETH)
    values = talib.MFI(*(df[c].to_numpy() for c in ("high", "low", "close", "volume")), 14)
    return pd.Series(values, index=df.index)


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sweep") / "moodring.yaml"
    path.write_text(yaml.safe_dump(CONFIG))
    return path


def day(t: pd.Timestamp | None) -> str | None:
    return None if t is None else t.strftime("%Y-%m-%dT00:00:00Z")


def test_crossings_per_threshold_match_pandas(config: Path, mfi: pd.Series) -> None:
    rows = sweep(config, "mfi-falls.condition.crosses_below=15:45:5")
    assert [r["value"] for r in rows] == [15, 20, 25, 30, 35, 40, 45]
    for row in rows:
        x = row["value"]
        fired = mfi.index[((mfi.shift(1) >= x) & (mfi < x)).to_numpy()]
        gaps = np.diff(fired.to_numpy()) / np.timedelta64(1, "D")
        assert row["rule"] == "mfi-falls" and row["path"] == "condition.crosses_below"
        assert row["alerts"] == row["firing"] == len(fired) > 0, x
        assert row["flip_flops"] == int((gaps <= 5).sum()), x
        assert (row["first"], row["last"]) == (day(fired[0]), day(fired[-1]))
        assert row["median_firing_s"] is None and row["configured"] == (x == 30)


def test_a_grid_of_level_and_bars_matches_runs_counted_with_pandas(
    config: Path, mfi: pd.Series
) -> None:
    rows = sweep(config, "mfi-high.condition.above=60:80:5", "mfi-high.for=1:3:1")
    assert len(rows) == 15
    end = mfi.index[-1] + DAY
    for row in rows:
        x, bars = row["values"]["condition.above"], row["values"]["for"]
        assert row["value"] == x and isinstance(bars, int)
        holds = (mfi > x).to_numpy()
        fired, resolved = [], []
        i = 0
        while i < len(holds):  # each run of days above x that lasts `for` days fires once
            if not holds[i]:
                i += 1
                continue
            j = i
            while j < len(holds) and holds[j]:
                j += 1
            if j - i >= bars:
                fired.append(mfi.index[i + bars - 1])
                resolved.append(mfi.index[j] if j < len(holds) else None)
            i = j
        episodes = [
            ((r or end) - f) / pd.Timedelta(seconds=1) for f, r in zip(fired, resolved, strict=True)
        ]
        flips = sum(f - r <= 5 * DAY for r, f in zip(resolved[:-1], fired[1:], strict=True))
        assert row["alerts"] == row["firing"] == len(fired), (x, bars)
        assert row["flip_flops"] == flips, (x, bars)
        assert row["median_firing_s"] == pytest.approx(float(np.median(episodes))), (x, bars)
        share = sum(episodes) / ((end - mfi.index[0]) / pd.Timedelta(seconds=1))
        assert row["firing_share"] == pytest.approx(share, abs=1e-6), (x, bars)
        assert (row["first"], row["last"]) == (day(fired[0]), day(fired[-1]))


@pytest.fixture(scope="module")
def sample() -> str:
    """What ``moodring backtest --sample`` prints: its alerts as JSON lines."""
    code, out, err = run("backtest", "--sample")
    assert code == 0, err
    return out


@pytest.mark.parametrize(
    "spec",
    [
        "eth-rut-decoupling.condition.below=0.3:0.3:1",  # level, clear, send_resolved
        "eth-rut-recoupling.condition.crosses_above=0.6:0.6:1",  # edge with cooldown
        "eth-decoupled-and-leading.all.0.below=0.5:0.5:1",  # composite
        "eth-mfi-enters-bullish-band.condition.enters.band.0=50:50:1",  # band edge, a side
        "ethbtc-breakout-up.cooldown=90d:90d:1d",  # a duration
    ],
)
def test_the_configured_value_repeats_the_backtests_alerts(spec: str, sample: str) -> None:
    rule = spec.split(".")[0]
    alerts = [a for a in map(json.loads, sample.splitlines()) if a["rule"] == rule]
    code, out, err = run("backtest", "--sample", "--sweep", spec)
    assert code == 0, err
    [row] = [json.loads(line) for line in out.splitlines()]
    assert row["configured"] and row["alerts"] == len(alerts) > 0
    assert row["firing"] == sum(a["state"] == "firing" for a in alerts)
    assert (row["first"], row["last"]) == (alerts[0]["time"], alerts[-1]["time"])


def test_the_table_marks_the_configured_value() -> None:
    spec = "eth-mfi-overbought.clear.below=65:75:5"
    code, out, err = run("backtest", "--sample", "--sweep", spec, "--format", "table")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == (
        "eth-mfi-overbought: clear.below from 65 to 75 (configured 75); "
        "* marks the configured value"
    )
    assert lines[1].split()[:3] == ["clear.below", "alerts", "firing"]
    assert [line.split()[0] for line in lines[2:]] == ["65", "70", "75"]
    assert lines[-1].split()[1] == "*"


@pytest.fixture(scope="module")
def history() -> tuple[Any, dict[str, FeedHistory]]:
    """The shipped config (with two more edge rules) and the bundled daily history."""
    base = load_settings()
    extra = (
        RuleConfig.model_validate(
            {
                "name": "corr-drops",
                "metric": "eth_rut_corr",
                "condition": {"moving_down": {"by": 0.3, "bars": 20}},
            }
        ),
        RuleConfig.model_validate(
            {
                "name": "mfi-jumps",
                "metric": "eth_mfi",
                "condition": {"moving_up_pct": {"pct": 40, "bars": 5}},
            }
        ),
        RuleConfig.model_validate(
            {"name": "mfi-band", "metric": "eth_mfi", "condition": {"enters": [40, 60]}}
        ),
    )
    settings = base.model_copy(update={"rules": base.rules + extra})
    paths = {"eth": ETH, "btc": DATA / "daily/binance_yanniedog/BTCUSDT_1d.csv"}
    paths["rut"] = DATA / "daily/yahoo_alitalbi/RUT.csv"
    history = {}
    for feed, path in paths.items():
        calendar = None
        if feed == "rut":
            from moodring.market.calendar import calendar_named

            calendar = calendar_named("nyse")
        history[feed] = clean_history(load_csv(path).bars, calendar).history
    return settings, history


@pytest.mark.parametrize(
    "spec",
    [
        "eth-rut-recoupling.condition.crosses_above=0.3:0.8:0.05",
        "eth-mfi-enters-bullish-band.condition.enters.band.0=20:60:2.5",
        "eth-mfi-leaves-bullish-band.condition.exits.band.1=55:95:5",
        "corr-drops.condition.moving_down.by=0.1:0.5:0.05",
        "corr-drops.condition.moving_down.bars=5:40:5",
        "mfi-jumps.condition.moving_up_pct.pct=10:100:10",
        "mfi-band.condition.enters.0=20:55:5",
        "ethbtc-breakout-up.cooldown=0:60d:10d",  # a level rule: replayed whole
    ],
)
def test_edge_rules_replayed_around_their_edges_equal_a_full_replay(spec: str, history) -> None:
    settings, feeds = history
    metrics = list(settings.metrics)
    table = run_batch(settings, feeds, metrics)
    sweeps = [parse_sweep(spec, settings)]
    points = swept_rules(settings, sweeps)
    rule = points[0][1]
    inputs = sweep_inputs(settings, rule, table, RuleInputs.of(settings, table, feeds))
    edges = EdgeCandidates(table, inputs, rule)
    fewer = False
    for _, swept in points:
        full = replay_rule(settings, swept, inputs)
        assert replay_rule(settings, swept, inputs, edges) == full, swept
        found = edges.moments(swept)
        fewer |= found is not None and len(found[0]) < len(inputs.moments) / 2
    edge = not rule.is_composite and rule.when.is_edge
    assert fewer == edge  # edge rules skip most bars; level rules are replayed whole


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        (
            "eth-rut-decoupling.condition.abvoe=1:2:1",
            "eth-rut-decoupling has no condition.abvoe; its numbers: condition.below, "
            "clear.above, for, cooldown, repeat_interval\n",
        ),
        ("eth-rut-decoupling=1:2:1", "name one of eth-rut-decoupling's numbers"),
        ("eth-rut-decouplin.for=1:2:1", "no rule named like 'eth-rut-decouplin.for'"),
        (
            "eth-rut-decoupling.metric=1:2:1",
            "eth-rut-decoupling.metric is 'eth_rut_corr', not a number",
        ),
        ("eth-rut-decoupling.for=1:3:0.5", "for takes whole numbers, not 1.5"),
        (
            "eth-rut-decoupling.condition.below=0.2:0.6:0.05",
            "at condition.below=0.5 the rule contradicts itself: its condition and its clear "
            "both hold at eth_rut_corr = 0.475, so it would resolve as soon as it fired",
        ),
        (
            "eth-decoupled-and-leading.all.0.below=0.5:0.7:0.1",
            "at all.0.below=0.7 the rule contradicts itself: its condition and its clear both "
            "hold at eth_rut_corr = 0.65",
        ),
        (
            "eth-mfi-enters-bullish-band.condition.enters.band.0=70:90:10",
            "at condition.enters.band.0=90 the rule is invalid: condition.enters: "
            "band: [lo, hi] needs lo <= hi",
        ),
        (
            "eth-rut-decoupling.for=0:2:1",
            "at for=0 the rule is invalid: for: at least 1 bar\n",
        ),
        (
            "eth-rut-decoupling.condition.below=0.1:0.3",
            "the values are START:STOP:STEP, got '0.1:0.3'",
        ),
        ("eth-rut-decoupling.condition.below=0.3:0.1:0.1", "STOP (0.1) is below START (0.3)"),
        ("eth-rut-decoupling.condition.below=0.1:0.3:0", "STEP must be above 0"),
        ("eth-rut-decoupling.condition.below=a:b:c", "START:STOP:STEP must be numbers"),
        ("eth-rut-decoupling.condition.below=0:1:0.00001", "100001 values; at most 10000"),
        ("eth-rut-decoupling", "--sweep takes RULE.PATH=START:STOP:STEP"),
    ],
)
def test_a_bad_sweep_is_one_sentence_naming_it(spec: str, says: str) -> None:
    code, out, err = run("--log-level=WARNING", "backtest", "--sample", "--sweep", spec)
    assert code == 1 and out == ""
    assert err.startswith("moodring: --sweep ") and spec in err and says in err, err
    assert "Traceback" not in err and err.count("\n") == 1


@pytest.mark.parametrize(
    ("specs", "says"),
    [
        (
            ["eth-rut-decoupling.for=1:2:1", "eth-mfi-overbought.for=1:2:1"],
            "a grid sweeps two numbers of one rule, not of eth-rut-decoupling and "
            "eth-mfi-overbought",
        ),
        (["eth-rut-decoupling.for=1:2:1"] * 2, "eth-rut-decoupling.for is swept twice"),
        (["eth-rut-decoupling.for=1:2:1"] * 3, "at most 2 (a grid), got 3"),
    ],
)
def test_sweeps_make_a_line_or_a_grid_of_one_rule(specs: list[str], says: str) -> None:
    args = [a for spec in specs for a in ("--sweep", spec)]
    code, out, err = run("--log-level=WARNING", "backtest", "--sample", *args)
    assert code == 1 and out == "" and says in err and err.count("\n") == 1, err


def test_report_without_bokeh_says_what_to_install(tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "bokeh", None)  # as if the report extra were missing
    page = tmp_path / "r.html"
    code, out, err = run("--log-level=WARNING", "backtest", "--sample", "--report", str(page))
    assert code == 1 and out == "" and not page.exists()
    assert err == (
        f"moodring: --report {page}: the report needs bokeh, which a plain install leaves "
        "out: pip install 'moodring[report]'\n"
    )


def test_report_into_a_missing_directory_is_named(tmp_path) -> None:
    page = tmp_path / "nope" / "r.html"
    code, _, err = run("--log-level=WARNING", "backtest", "--sample", "--report", str(page))
    assert code == 1 and err == f"moodring: --report {page}: no such directory {page.parent}\n"


def test_a_grid_report_has_a_heat_map_and_a_chooser_per_swept_path(tmp_path) -> None:
    page = tmp_path / "grid.html"
    below, bars = (
        "eth-rut-decoupling.condition.below=0.25:0.35:0.05",
        "eth-rut-decoupling.for=1:3:1",
    )
    code, out, err = run(
        "backtest", "--sample", "--sweep", below, "--sweep", bars, "--report", str(page)
    )
    assert code == 0, err
    html = page.read_text()
    assert len(out.splitlines()) == 9 and 'id="sweep-table"' in html
    assert "alerts for each condition.below and for" in html  # the heat map's title
    for label in ("eth-rut-decoupling.condition.below =", "eth-rut-decoupling.for ="):
        assert label in html  # a select for each swept path


def test_a_report_leaves_the_alerts_on_stdout(tmp_path, sample: str) -> None:
    code, out, err = run("backtest", "--sample", "--report", str(tmp_path / "r.html"))
    assert code == 0 and out == sample and sample.count("\n") > 10, err


async def test_the_daemon_never_imports_the_report(tmp_path, monkeypatch) -> None:
    from moodring.testing.fake_exchange import FakeExchange
    from tests.support.captures import CAPTURES
    from tests.support.daemon import daemon_config, start
    from tests.support.receiver import Receiver

    exchange = FakeExchange(CAPTURES, speed=80.0, loop=True)
    await exchange.start()
    receiver = Receiver()
    cfg = daemon_config(exchange, tmp_path / "state")
    # a tick rule with a chart: its alert goes out at once, through charts and delivery
    cfg["rules"] = [
        {
            "name": "mfi-tick",
            "metric": "mfi",
            "condition": {"above": -1},
            "on": "tick",
            "chart": True,
        }
    ]
    cfg["notify"] = {"urls": [receiver.url()]}
    monkeypatch.setenv("PYTHONPROFILEIMPORTTIME", "1")  # every import, lazy ones too, on stderr
    service = await start(tmp_path, cfg)
    try:
        await service.wait(lambda: receiver.payloads, timeout=90, what="an alert delivered")
        service.proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(service.proc.wait(), 30) == 0
        await asyncio.wait_for(service.log_read(), 30)
    finally:
        await service.close()
        await exchange.stop()
        receiver.down()
    imported = [line.rsplit("|", 1)[-1].strip() for line in service.lines if "import time:" in line]
    assert "moodring.service.daemon" in imported and "matplotlib" in imported
    heavy = [m for m in imported if m.split(".")[0] == "bokeh" or m.startswith("moodring.report")]
    assert not heavy, heavy
    assert receiver.payloads[0]["attachments"], "the alert carried its chart"
