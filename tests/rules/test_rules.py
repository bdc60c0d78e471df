"""Rule semantics: operators, the alert state machine, templates, muting, backtest output."""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from moodring.backtest.csvfile import load_csv
from moodring.backtest.runner import FeedHistory, evaluate_rules, run_batch, run_streaming
from moodring.cli import main
from moodring.configfile import ConfigError, load_settings
from moodring.rules.alert import Alert
from moodring.rules.book import RuleBook
from moodring.rules.silences import Silences
from moodring.settings import Settings
from tests.support import oracles
from tests.support.oracles import read_ohlcv
from tests.support.paths import DATA, ROOT

DAY = 86_400_000
ETH_1D = DATA / "daily/binance_yanniedog/ETHUSDT_1d.csv"
BTC_1D = DATA / "daily/binance_yanniedog/BTCUSDT_1d.csv"
RUT_1D = DATA / "daily/yahoo_alitalbi/RUT.csv"


def settings_with(rules: list[dict], **extra) -> Settings:
    """Settings with one metric ``m`` (an MFI of feed x) and the given rules."""
    return Settings(
        feeds={"x": {"symbol": "X"}},
        metrics={"m": {"type": "mfi", "series": "x"}},
        rules=rules,
        **extra,
    )


def run(rule: dict, values: list[float]) -> list[Alert]:
    """Feed ``values`` as closes of consecutive daily bars to one rule; return its alerts."""
    book = RuleBook(settings_with([{"name": "r", "metric": "m", **rule}]))
    alerts: list[Alert] = []
    book.subscribe(alerts.append)
    for i, value in enumerate(values):
        book.evaluate_close_rules([("m", i * DAY, value)], {"m": value})
    return alerts


def fired(rule: dict, values: list[float]) -> list[tuple[int, str]]:
    return [(a.time // DAY, a.state) for a in run(rule, values)]


NAN = math.nan


@pytest.mark.parametrize(
    ("condition", "values", "expected"),
    [
        ({"above": 5}, [4, 5, 6, 7, 4], [(2, "firing")]),
        ({"below": 5}, [6, 5, 4, 3, 6], [(2, "firing")]),
        ({"inside": [2, 4]}, [1, 2, 4, 5], [(1, "firing")]),
        ({"outside": [2, 4]}, [3, 4, 5, 3, 1], [(2, "firing"), (4, "firing")]),
        ({"equals": 1}, [0, 1, 1, 0, 1], [(1, "firing"), (4, "firing")]),
        ({"crosses_above": 5}, [4, 5, 6, 4, 6, 7], [(2, "firing"), (4, "firing")]),
        ({"crosses_above": 5}, [5, 5.0000001], [(1, "firing")]),  # v[t-1] <= X < v[t]
        ({"crosses_above": 5}, [4, 5], []),
        ({"crosses_below": 5}, [6, 5, 4, 6, 5], [(2, "firing")]),
        ({"enters": [2, 4]}, [1, 2, 3, 5, 4], [(1, "firing"), (4, "firing")]),
        ({"exits": [2, 4]}, [3, 4, 5, 3, 1], [(2, "firing"), (4, "firing")]),
        ({"moving_up_pct": {"pct": 10, "bars": 2}}, [100, 105, 111, 120, 90], [(2, "firing")]),
        ({"moving_down_pct": {"pct": 10, "bars": 1}}, [100, 89, 79, 80], [(1, "firing")]),
        (
            {"moving_up": {"by": 10, "bars": 3}},
            [30, 31, 35, 40, 45, 30, 50],
            [(3, "firing"), (6, "firing")],
        ),
        ({"crosses_above": 5}, [4, NAN, 6, 4, 6], [(4, "firing")]),  # NaN breaks an edge
        ({"enters": [2, 4]}, [NAN, 3], []),
        ({"above": 5}, [6, NAN, 7], [(0, "firing")]),  # NaN leaves a level state alone
    ],
)
def test_operators(condition: dict, values: list[float], expected: list) -> None:
    assert fired({"condition": condition}, values) == expected


def test_level_resolves_only_with_send_resolved() -> None:
    rule = {"condition": {"above": 5}, "send_resolved": True}
    assert fired(rule, [6, 7, 4, 6]) == [(0, "firing"), (2, "resolved"), (3, "firing")]
    alerts = run(rule, [6, 4])
    assert alerts[1].title.startswith("Resolved: ")


def test_for_needs_consecutive_bars() -> None:
    rule = {"condition": {"below": 0.3}, "for": 3, "send_resolved": True}
    assert fired(rule, [0.2, 0.2, 0.5, 0.2, 0.2, 0.2, 0.2, 0.5]) == [
        (5, "firing"),
        (7, "resolved"),
    ]


def test_for_as_a_duration_rounds_up_to_bars() -> None:
    settings = settings_with(
        [{"name": "r", "metric": "m", "condition": {"above": 1}, "for": "36h"}]
    )
    assert settings.rule_bars(settings.rules[0]) == 2


def test_clear_gives_hysteresis() -> None:
    rule = {"condition": {"below": 0.3}, "clear": {"above": 0.45}, "send_resolved": True}
    values = [0.5, 0.29, 0.31, 0.29, 0.44, 0.28, 0.46, 0.29]
    assert fired(rule, values) == [(1, "firing"), (6, "resolved"), (7, "firing")]


def test_repeat_interval_re_sends_while_firing() -> None:
    rule = {"condition": {"above": 5}, "repeat_interval": "2d"}
    assert fired(rule, [6, 6, 6, 6, 6, 4, 6]) == [
        (0, "firing"),
        (2, "firing"),
        (4, "firing"),
        (6, "firing"),
    ]


def test_cooldown_spaces_edge_firings() -> None:
    rule = {"condition": {"crosses_above": 5}, "cooldown": "3d"}
    values = [4, 6, 4, 6, 4, 6, 4, 6]
    assert fired(rule, values) == [(1, "firing"), (5, "firing")]


def test_cooldown_also_spaces_level_firings() -> None:
    rule = {"condition": {"above": 5}, "cooldown": "2d"}
    assert fired(rule, [6, 4, 6, 6, 4, 6]) == [(0, "firing"), (2, "firing"), (5, "firing")]


@pytest.mark.parametrize(
    "rule",
    [
        {"condition": {"crosses_above": 1}, "clear": {"below": 0}},
        {"condition": {"crosses_above": 1}, "for": 2},
        {"condition": {"enters": [1, 2]}, "send_resolved": True},
        {"condition": {"above": 1, "below": 2}},
        {"condition": {}},
        {"condition": {"inside": [3, 1]}},
        {"condition": {"moving_up_pct": {"bars": 3}}},
        {"condition": {"above": 1}, "clear": {"crosses_below": 0}},
        {"condition": {"above": 1}, "on": "tick", "for": 2},
        {"condition": {"above": 1}, "severity": "fatal"},
    ],
)
def test_contradictory_rules_are_config_errors(rule: dict) -> None:
    with pytest.raises(ValueError):
        settings_with([{"name": "r", "metric": "m", **rule}])


def test_tick_rules_change_state_at_most_once_per_bar() -> None:
    settings = settings_with(
        [
            {
                "name": "r",
                "metric": "m",
                "condition": {"above": 5},
                "on": "tick",
                "send_resolved": True,
            }
        ]
    )
    book = RuleBook(settings)
    alerts: list[Alert] = []
    book.subscribe(alerts.append)
    for minute, value in enumerate([6, 4, 6, 4, 6]):  # one bar: fires once, holds
        book.evaluate_tick_rules(minute * 60_000, {"m": value}, ["m"])
    book.evaluate_tick_rules(DAY + 1, {"m": 4}, ["m"])  # next bar: resolves
    book.evaluate_tick_rules(DAY + 2, {"m": 6}, ["m"])
    assert [(a.time, a.state) for a in alerts] == [(0, "firing"), (DAY, "resolved")]


def load_with_rule(tmp_path: Path, **rule) -> None:
    config = yaml.safe_load((ROOT / "config/moodring.yaml").read_text())
    config["rules"][1].update(rule)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    load_settings(path)


@pytest.mark.parametrize(
    ("field", "template", "expected"),
    [
        ("message", "{{ value | round(2) ", "rules.1"),
        ("message", "{{ value | rounded(2) }}", "No filter named 'rounded'"),
        ("title", "{{ eth_mfii }}", "unknown name(s) eth_mfii"),
        ("message", "{% if value %}x", "rules.1"),
    ],
)
def test_template_errors_are_config_errors_at_load(tmp_path, field, template, expected) -> None:
    with pytest.raises(ConfigError) as err:
        load_with_rule(tmp_path, **{field: template})
    assert expected in str(err.value) and "c.yaml" in str(err.value)


def test_templates_see_every_metric_and_feed_prices() -> None:
    settings = Settings(
        feeds={"x": {"symbol": "X"}, "y": {"symbol": "Y"}},
        metrics={
            "m": {"type": "mfi", "series": "x"},
            "d": {"type": "divergence", "a": "x", "b": "y"},
        },
        rules=[
            {
                "name": "r",
                "metric": "m",
                "condition": {"above": 50},
                "message": "{{ value }}>{{ threshold }} z={{ d.residual_z }} "
                "x={{ feeds.x }} {{ metrics['d.beta'] }} {{ severity }} {{ time }}",
            }
        ],
    )
    book = RuleBook(settings, prices=lambda: {"x": 101.5, "y": 7.0})
    alerts: list[Alert] = []
    book.subscribe(alerts.append)
    values = {"m": 60.0, "d.residual_z": -2.5, "d.beta": 1.25, "d.opposite": 0.0, "d.swing": 0.0}
    book.evaluate_close_rules([("m", DAY, 60.0)], values)
    assert alerts[0].message == "60.0>50.0 z=-2.5 x=101.5 1.25 warning 1970-01-02T00:00:00Z"


def test_stale_feed_mutes_its_rules_and_says_so_on_resume() -> None:
    rule = {"name": "r", "metric": "m", "condition": {"above": 5}, "send_resolved": True}
    book = RuleBook(settings_with([rule]))
    alerts: list[Alert] = []
    book.subscribe(alerts.append)
    book.evaluate_close_rules([("m", 0, 4.0)], {"m": 4.0})
    book.set_feed_state("x", "stale", DAY)
    book.evaluate_close_rules([("m", 2 * DAY, 6.0)], {"m": 6.0})  # would fire: held back
    book.set_feed_state("x", "ok", 3 * DAY)
    book.evaluate_close_rules([("m", 4 * DAY, 7.0)], {"m": 7.0})  # still firing: nothing new
    assert [(a.rule, a.state, a.time // DAY) for a in alerts] == [
        ("stale.x", "firing", 1),
        ("stale.x", "resolved", 3),
        ("r", "firing", 3),
    ]
    assert "muted for 2d" in alerts[2].message


def test_a_change_undone_while_muted_is_not_told() -> None:
    rule = {"name": "r", "metric": "m", "condition": {"above": 5}, "send_resolved": True}
    book = RuleBook(settings_with([rule]))
    alerts: list[Alert] = []
    book.subscribe(alerts.append)
    book.set_feed_state("x", "stale", 0)
    for day, value in enumerate([6.0, 4.0]):
        book.evaluate_close_rules([("m", day * DAY, value)], {"m": value})
    book.set_feed_state("x", "ok", 3 * DAY)
    assert [a.rule for a in alerts] == ["stale.x", "stale.x"]


def test_silences_expire_and_clear(tmp_path: Path) -> None:
    silences = Silences(tmp_path / "silences.json")
    silences.add("r", 3600, "maintenance", now=1000.0)
    assert silences.silenced("r", now=2000.0).reason == "maintenance"
    assert silences.silenced("r", now=1000.0 + 3601) is None
    assert Silences(tmp_path / "silences.json").silenced("r", now=2000.0) is not None
    silences.add("q", 60, now=1000.0)
    assert silences.clear("r", now=1001.0) == 1
    assert [s.rule for s in silences.active(now=1001.0)] == ["q"]
    assert silences.clear(now=1001.0) == 1


def test_silence_cli(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path))
    assert main(["silence", "eth-rut-decoupling", "--for", "2h", "--reason", "FOMC"]) == 0
    assert main(["silence", "--list"]) == 0
    out = capsys.readouterr().out
    assert "eth-rut-decoupling" in out and "FOMC" in out
    assert main(["silence", "no-such-rule", "--for", "1h"]) == 1
    assert main(["silence", "--clear"]) == 0
    assert Silences(tmp_path / "silences.json").active() == []


def history_of(files: dict[str, Path]) -> dict[str, FeedHistory]:
    return {feed: FeedHistory.of(load_csv(path).bars) for feed, path in files.items()}


REAL = {"eth": ETH_1D, "btc": BTC_1D, "rut": RUT_1D}


def test_backtest_alerts_batch_equal_streaming_on_real_data() -> None:
    settings = load_settings()
    history = history_of(REAL)
    names = list(settings.metrics)
    batch = evaluate_rules(settings, run_batch(settings, history, names), history)
    streamed: list[Alert] = []
    run_streaming(settings, history, names, streamed)
    assert len(batch) > 100
    assert [(a.rule, a.state, a.time, a.message) for a in batch] == [
        (a.rule, a.state, a.time, a.message) for a in streamed
    ]
    np.testing.assert_allclose([a.value for a in batch], [a.value for a in streamed], rtol=1e-9)


def test_hysteresis_stops_flapping_on_real_data() -> None:
    """Around 0.3 the real ETH/RUT correlation wobbles; clear at 0.45 sends far fewer alerts."""
    history = history_of(REAL)

    def alerts_with(rule: dict) -> list[Alert]:
        base = load_settings()
        settings = base.model_copy(
            update={
                "rules": Settings(
                    feeds=base.feeds,
                    series=base.series,
                    metrics=base.metrics,
                    rules=[{"name": "r", "metric": "eth_rut_corr", "send_resolved": True, **rule}],
                ).rules
            }
        )
        return evaluate_rules(settings, run_batch(settings, history, list(base.metrics)), history)

    plain = alerts_with({"condition": {"below": 0.3}})
    damped = alerts_with({"condition": {"below": 0.3}, "clear": {"above": 0.45}})
    assert len(plain) > 2 * len(damped) > 0
    for a, b in itertools.pairwise(damped):
        assert a.state != b.state  # strictly alternating firing / resolved
        if b.state == "resolved":
            assert b.value > 0.45


def independent(column: pd.Series, kind: str, x: float, clear: float | None = None) -> list:
    """Alerts by a plain reading of the rule definitions, on the oracle metric column."""
    out, firing, prev = [], False, math.nan
    for t, v in column.dropna().items():
        if kind == "crosses_above" and prev <= x < v:
            out.append((t, "firing"))
        elif kind == "equals":
            if v == x and not firing:
                out.append((t, "firing"))
            firing = v == x
        elif kind == "below":
            if not firing and v < x:
                firing = True
                out.append((t, "firing"))
            elif firing and v > clear:
                firing = False
                out.append((t, "resolved"))
        prev = v
    return out


def test_crossing_hysteresis_and_equals_alerts_match_an_independent_evaluation(tmp_path) -> None:
    config = yaml.safe_load((ROOT / "config/moodring.yaml").read_text())
    config["rules"] = [
        {"name": "cross", "metric": "eth_rut_corr", "condition": {"crosses_above": 0.5}},
        {
            "name": "hyst",
            "metric": "eth_rut_corr",
            "condition": {"below": 0.2},
            "clear": {"above": 0.4},
            "send_resolved": True,
        },
        {"name": "eq", "metric": "ethbtc_breakout", "condition": {"equals": 1}},
    ]
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    args = ["backtest", "-c", str(path)] + [f"--data={f}={p}" for f, p in REAL.items()]
    out = tmp_path / "alerts.jsonl"
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        assert main(args) == 0
    out.write_text(buffer.getvalue())
    got: dict[str, list] = {"cross": [], "hyst": [], "eq": []}
    for line in out.read_text().splitlines():
        alert = json.loads(line)
        got[alert["rule"]].append((pd.Timestamp(alert["time"]), alert["state"]))

    eth, btc, rut = (read_ohlcv(p) for p in REAL.values())
    corr = oracles.log_returns_corr(
        eth["close"], rut["close"], 30, sessions=oracles.nyse_sessions()
    )
    ratio = (eth["close"] / btc["close"]).dropna().to_frame("close")
    ratio["high"] = ratio["low"] = ratio["close"]
    brk = oracles.breakout(ratio, 20)
    assert got["cross"] == independent(corr, "crosses_above", 0.5) and got["cross"]
    assert got["hyst"] == independent(corr, "below", 0.2, clear=0.4) and got["hyst"]
    assert got["eq"] == independent(brk, "equals", 1.0) and got["eq"]
