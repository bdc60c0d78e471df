"""Composite rules (all/any of metric items) and band edges with a side.

Semantics on hand-made values, config errors naming the item, and on real data: the
vectorised and streaming backtests against an independent pandas reading of the rule over
the ``--metrics-out`` table, daily and with items on different timeframes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from moodring.backtest.csvfile import load_csv
from moodring.backtest.runner import FeedHistory, merged_bars, run_streaming
from moodring.charts.render import render_png
from moodring.cli import main
from moodring.market.bar import Bar
from moodring.pipeline import Pipeline
from moodring.rules.alert import Alert
from moodring.rules.book import RuleBook
from moodring.service.snapshot import capture, restore
from moodring.settings import Settings
from tests.support.paths import DATA

DAY = 86_400_000
HOUR = 3_600_000
NAN = math.nan
ETH_1D = DATA / "daily/binance_yanniedog/ETHUSDT_1d.csv"
BTC_1D = DATA / "daily/binance_yanniedog/BTCUSDT_1d.csv"
RUT_1D = DATA / "daily/yahoo_alitalbi/RUT.csv"
ETH_1H = DATA / "intraday/binance_rocketalerts/ETHUSDT_1h.csv"
BTC_1H = DATA / "intraday/binance_rocketalerts/BTCUSDT_1h.csv"


def settings_with(*rules: dict, timeframes: tuple[str, str] = ("1d", "1d")) -> Settings:
    """Two metrics of feed x, ``a`` and ``b`` (their values are fed by hand), and the rules."""
    return Settings(
        feeds={"x": {"symbol": "X"}, "y": {"symbol": "Y"}},
        metrics={
            "a": {"type": "mfi", "series": "x", "timeframe": timeframes[0]},
            "b": {"type": "pct_change", "series": "y", "lookback": 1, "timeframe": timeframes[1]},
        },
        rules=[{"name": f"r{i}", **rule} for i, rule in enumerate(rules)],
    )


def book_of(*rules: dict, timeframes: tuple[str, str] = ("1d", "1d")) -> tuple[RuleBook, list]:
    book = RuleBook(settings_with(*rules, timeframes=timeframes))
    alerts: list[Alert] = []
    book.subscribe(alerts.append)
    return book, alerts


def feed(book: RuleBook, rows: list[tuple[float, float]]) -> None:
    """Close one daily bar of a and b per row (NaN: that metric closes no bar that day)."""
    latest = {"a": NAN, "b": NAN}
    for day, (a, b) in enumerate(rows):
        updates = [(c, day * DAY, float(v)) for c, v in (("a", a), ("b", b)) if v == v]
        latest |= {c: v for c, _, v in updates}
        book.evaluate_close_rules(updates, latest)


def told(alerts: list[Alert]) -> list[tuple[int, str]]:
    return [(a.time // DAY, a.state) for a in alerts]


BOTH = {"all": [{"metric": "a", "above": 50}, {"metric": "b", "below": 0}]}


def test_all_holds_when_every_item_holds_and_any_when_one_does() -> None:
    rows = [(60, 1), (60, -1), (40, -1), (60, -1), (40, 1)]
    book, alerts = book_of({**BOTH, "send_resolved": True})
    feed(book, rows)
    assert told(alerts) == [(1, "firing"), (2, "resolved"), (3, "firing"), (4, "resolved")]
    book, alerts = book_of({"any": BOTH["all"], "send_resolved": True})
    feed(book, rows)
    assert told(alerts) == [(0, "firing"), (4, "resolved")]


def test_a_group_nests_inside_the_other() -> None:
    rule = {
        "all": [
            {"metric": "a", "inside": [50, 80]},
            {"any": [{"metric": "b", "below": -1}, {"metric": "b", "above": 1}]},
        ],
        "send_resolved": True,
    }
    book, alerts = book_of(rule)
    feed(book, [(60, 0), (60, 2), (60, -2), (90, -2), (60, 0.5)])
    assert told(alerts) == [(1, "firing"), (3, "resolved")]


def test_for_counts_judgements_and_each_item_reads_its_latest_value() -> None:
    book, alerts = book_of({**BOTH, "for": 3})
    # b closes no bar on days 3 and 4 (a weekend): its value of day 2 still holds
    feed(book, [(60, -1), (40, -1), (60, -1), (60, NAN), (60, NAN)])
    assert told(alerts) == [(4, "firing")]


def test_an_undefined_item_leaves_the_state_as_it_is() -> None:
    book, alerts = book_of({**BOTH, "for": 2, "send_resolved": True})
    feed(book, [(60, -1)])
    book.evaluate_close_rules(
        [("b", DAY, NAN)], {"a": 60, "b": NAN}
    )  # undefined: still pending (1 bar)
    feed_from(book, 2, [(60, -1), (60, NAN), (40, -1)])
    assert told(alerts) == [(2, "firing"), (4, "resolved")]
    book, alerts = book_of({**BOTH, "send_resolved": True})
    feed(book, [(60, -1)])
    book.evaluate_close_rules([("a", DAY, NAN)], {"a": NAN, "b": -1})  # firing stays firing
    assert told(alerts) == [(0, "firing")] and book.status("r0").state == "firing"


def feed_from(book: RuleBook, first_day: int, rows: list[tuple[float, float]]) -> None:
    for day, (a, b) in enumerate(rows, first_day):
        updates = [(c, day * DAY, v) for c, v in (("a", a), ("b", b)) if v == v]
        book.evaluate_close_rules(updates, {"a": a, "b": b})


def test_clear_takes_a_list_of_items_for_hysteresis() -> None:
    rule = {
        **BOTH,
        "clear": {"any": [{"metric": "a", "below": 40}, {"metric": "b", "above": 2}]},
        "send_resolved": True,
    }
    book, alerts = book_of(rule)
    feed(book, [(60, -1), (45, 1), (60, -1), (39, -1), (60, -1), (60, 3)])
    assert told(alerts) == [(0, "firing"), (3, "resolved"), (4, "firing"), (5, "resolved")]


def test_cooldown_delays_a_composite_and_repeat_interval_re_sends() -> None:
    book, alerts = book_of({**BOTH, "cooldown": "3d"})
    feed(book, [(60, -1), (40, -1), (60, -1), (60, -1), (60, -1)])
    assert told(alerts) == [(0, "firing"), (3, "firing")]  # held from day 2, fired when cooled
    book, alerts = book_of({**BOTH, "repeat_interval": "2d"})
    feed(book, [(60, -1)] * 5)
    assert told(alerts) == [(0, "firing"), (2, "firing"), (4, "firing")]


def test_a_bar_judged_again_later_in_the_same_moment_counts_once() -> None:
    """Live, an equity's bar may close after the crypto bars of the same time."""
    book, alerts = book_of({**BOTH, "for": 2})
    book.evaluate_close_rules([("a", 0, 40.0), ("b", 0, -1.0)], {"a": 40.0, "b": -1.0})
    book.evaluate_close_rules(
        [("a", DAY, 60.0)], {"a": 60.0, "b": -1.0}
    )  # holds on b's value of day 0
    book.evaluate_close_rules(
        [("b", DAY, -1.0)], {"a": 60.0, "b": -1.0}
    )  # the same bar: judged afresh
    assert book.status("r0").pending == 1 and not alerts
    book.evaluate_close_rules([("a", 2 * DAY, 60.0)], {"a": 60.0, "b": -1.0})
    assert told(alerts) == [(2, "firing")]
    book, alerts = book_of({**BOTH, "for": 5})
    book.evaluate_close_rules([("a", 0, 60.0), ("b", 0, -1.0)], {"a": 60.0, "b": -1.0})
    # put back from a snapshot: not undone by a re-judging
    book.resume("r0", dataclasses.replace(book.status("r0"), pending=3), through=0)
    book.evaluate_close_rules([("b", 0, -1.0)], {"a": 60.0, "b": -1.0})
    assert book.status("r0").pending == 4
    book, alerts = book_of({**BOTH, "send_resolved": True})
    book.evaluate_close_rules([("a", 0, 60.0), ("b", 0, 1.0)], {"a": 60.0, "b": 1.0})
    book.evaluate_close_rules(
        [("b", DAY, -1.0)], {"a": 60.0, "b": -1.0}
    )  # a's bar of day 1 not in yet: yes
    book.evaluate_close_rules(
        [("a", DAY, 40.0)], {"a": 40.0, "b": -1.0}
    )  # the bar's alert is out: it stands
    assert told(alerts) == [(1, "firing")] and book.status("r0").state == "firing"


def test_items_on_different_timeframes_are_judged_when_either_closes() -> None:
    book, alerts = book_of({**BOTH, "send_resolved": True}, timeframes=("1h", "1d"))
    values = {"a": NAN, "b": NAN}

    def close(updates: list[tuple[str, int, float]]) -> None:
        values.update({c: v for c, _, v in updates})
        book.evaluate_close_rules(updates, values)

    for hour in range(24):
        updates = [("a", hour * HOUR, 60.0)]
        if hour == 23:  # the day closes with its last hour: one moment
            updates.append(("b", 0, -1.0))
        close(updates)
    close([("a", DAY, 60.0)])
    close([("a", DAY + HOUR, 40.0)])
    assert [(a.time // HOUR, a.state) for a in alerts] == [(23, "firing"), (25, "resolved")]


def test_templates_see_every_item() -> None:
    rule = {
        **BOTH,
        "message": "{{ metric }}={{ value }} was {{ previous }} {{ threshold }}; "
        "{% for i in items %}{{ i.metric }} {{ i.operator }} {{ i.threshold }}: {{ i.value }}"
        " {{ i.holds }}; {% endfor %}{{ b }}",
    }
    book, alerts = book_of(rule)
    feed(book, [(55, 1), (60, -1)])
    assert alerts[0].message == (
        "a=60.0 was 55.0 50.0; a above 50.0: 60.0 True; b below 0.0: -1.0 True; -1.0"
    )
    assert (alerts[0].metric, alerts[0].value) == ("a", 60.0)


@pytest.mark.parametrize(
    ("condition", "values", "expected"),
    [
        ({"enters": {"band": [50, 80], "from": "below"}}, [40, 60, 85, 70, 45, 55], [1, 5]),
        ({"enters": {"band": [50, 80], "from": "above"}}, [40, 60, 85, 70, 45, 55], [3]),
        ({"enters": {"band": [50, 80]}}, [40, 60, 85, 70, 45, 55], [1, 3, 5]),
        ({"exits": {"band": [50, 80], "to": "above"}}, [60, 85, 70, 45, 60, 90], [1, 5]),
        ({"exits": {"band": [50, 80], "to": "below"}}, [60, 85, 70, 45, 60, 90], [3]),
        ({"exits": [50, 80]}, [60, 85, 70, 45, 60, 90], [1, 3, 5]),
        ({"enters": {"band": [50, 80], "from": "below"}}, [40, 90, 60], []),  # from above
        ({"exits": {"band": [50, 80], "to": "below"}}, [60, NAN, 40], []),
    ],
)
def test_band_edges_with_a_side(condition: dict, values: list[float], expected: list) -> None:
    book = RuleBook(
        Settings(
            feeds={"x": {"symbol": "X"}},
            metrics={"m": {"type": "mfi", "series": "x"}},
            rules=[
                {"name": "r", "metric": "m", "condition": condition, "message": "{{ threshold }}"}
            ],
        )
    )
    alerts: list[Alert] = []
    book.subscribe(alerts.append)
    for day, value in enumerate(values):
        book.evaluate_close_rules([("m", day * DAY, value)], {"m": value})
    assert [a.time // DAY for a in alerts] == expected
    operand = next(iter(condition.values()))
    side = {k: v for k, v in operand.items() if k != "band"} if isinstance(operand, dict) else {}
    shown = str({"band": [50.0, 80.0], **side}) if side else "[50.0, 80.0]"
    assert all(a.message == shown for a in alerts)


GOOD = """\
feeds:
  eth: {symbol: ETH/USDT}
  btc: {symbol: BTC/USDT}
metrics:
  corr: {type: correlation, a: eth, b: btc, window: 30}
  mfi: {type: mfi, series: eth}
rules:
  - name: both
    all:
      - {metric: corr, below: 0.5}
      - {metric: mfi, inside: [50, 80]}
    for: 2
"""


@pytest.mark.parametrize(
    ("old", "new", "key", "line", "message"),
    [
        ("metric: mfi,", "metric: mfo,", "rules.0.all.1.metric", 11, "unknown metric output 'mfo'"),
        (
            "below: 0.5}",
            "crosses_below: 0.5}",
            "rules.0.all.0.crosses_below",
            10,
            "an item takes a level operator",
        ),
        (
            "{metric: mfi, inside: [50, 80]}",
            "{any: [{metric: mfi, above: 50}, {all: [{metric: mfi, below: 1}]}]}",
            "rules.0.all.1.any.1",
            11,
            "groups nest one level",
        ),
        (
            "    for: 2",
            "    for: 2\n    metric: mfi",
            "rules.0.metric",
            13,
            "metric + condition, or items under all/any, not both",
        ),
        (
            "    for: 2",
            "    for: 2\n    clear: {above: 3}",
            "rules.0.clear",
            13,
            "{all: [...]} or {any: [...]}",
        ),
        (
            "    for: 2",
            "    for: 2\n    any: [{metric: mfi, above: 50}]",
            "rules.0.any",
            13,
            "give all or any",
        ),
        (
            "    for: 2",
            "    for: 2\n    clear: {any: [{metric: corr, above: 0.6}, {metric: mfx, above: 1}]}",
            "rules.0.clear.any.1.metric",
            13,
            "unknown metric output",
        ),
        (
            "{metric: corr, below: 0.5}",
            "{metric: corr}",
            "rules.0.all.0",
            10,
            "give exactly one level operator",
        ),
        (
            "    all:\n      - {metric: corr, below: 0.5}\n      - {metric: mfi, inside: [50, 80]}",
            "    metric: mfi\n    condition: {enters: {band: [50, 80], to: above}}",
            "rules.0.condition.enters.to",
            10,
            "enters takes from: below or above",
        ),
        ("    for: 2", "    for: 2\n    on: tick", "rules.0.on", 13, "on: close"),
    ],
    ids=[
        "unknown-metric",
        "edge-item",
        "deep-nesting",
        "metric-and-all",
        "single-clear",
        "all-and-any",
        "clear-item",
        "no-operator",
        "enters-to",
        "tick",
    ],
)
def test_config_errors_name_the_item(
    capsys, tmp_path: Path, old: str, new: str, key: str, line: int, message: str
) -> None:
    assert old in GOOD
    path = tmp_path / "moodring.yaml"
    path.write_text(GOOD.replace(old, new, 1))
    assert main(["check-config", "-c", str(path)]) == 78
    err = capsys.readouterr().err
    (error,) = [x for x in err.splitlines() if x.startswith(f"  {key} ")]
    assert error.startswith(f"  {key} (line {line}): ") and message in error, err
    assert "Traceback" not in err


# --------------------------------------------------------------------------- real data

DAILY = """\
feeds:
  eth: {symbol: ETH/USDT}
  btc: {symbol: BTC/USDT}
  rut: {symbol: ^RUT, source: yahoo, market: equity}
series:
  ethbtc: {ratio: [eth, btc]}
metrics:
  corr: {type: correlation, a: eth, b: rut, window: 30}
  mfi: {type: mfi, series: eth}
  chg: {type: pct_change, series: ethbtc, lookback: 30}
rules:
  - name: regime
    all:
      - {metric: corr, below: 0.5}
      - {metric: chg, above: 0}
      - {any: [{metric: mfi, inside: [50, 80]}, {metric: mfi, above: 90}]}
    for: 2
    clear: {any: [{metric: corr, above: 0.6}, {metric: chg, below: -5}]}
    cooldown: 10d
    send_resolved: true
    message: "{{ items | map(attribute='value') | join(' ') }}"
  - name: lonely
    any:
      - {metric: mfi, below: 15}
      - {all: [{metric: corr, above: 0.7}, {metric: chg, below: -10}]}
    send_resolved: true
"""

HOURLY = """\
feeds:
  eth: {symbol: ETH/USDT}
  btc: {symbol: BTC/USDT}
series:
  ethbtc: {ratio: [eth, btc]}
metrics:
  mfi_1h: {type: mfi, series: eth, timeframe: 1h}
  chg_4h: {type: pct_change, series: ethbtc, lookback: 3, timeframe: 4h}
  corr_1d: {type: correlation, a: eth, b: btc, window: 7, timeframe: 1d}
rules:
  - name: mixed
    all:
      - {metric: mfi_1h, above: 55}
      - {metric: chg_4h, above: 0}
      - {metric: corr_1d, below: 0.9}
    for: 2
    clear: {any: [{metric: mfi_1h, below: 45}]}
    send_resolved: true
"""


def backtest(tmp_path: Path, config: str, data: dict[str, Path], *extra: str) -> tuple:
    """Run ``moodring backtest``; return its alerts (JSON) and its --metrics-out table."""
    path = tmp_path / "c.yaml"
    path.write_text(config)
    table = tmp_path / f"m{len(extra)}.csv"
    args = ["backtest", "-c", str(path), "--metrics-out", str(table), *extra]
    args += [f"--data={feed}={file}" for feed, file in data.items()]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(args) == 0
    alerts = [json.loads(line) for line in out.getvalue().splitlines()]
    read = pd.read_csv(table, index_col="time", parse_dates=["time"], dtype=str)
    return alerts, read.apply(lambda column: column.map(float, na_action="ignore"))


Check = Callable[[dict[str, float]], bool | None]


def level(metric: str, op: str, x: object) -> Check:
    """A plain reading of one item: None when its value is missing."""

    def check(v: dict[str, float]) -> bool | None:
        value = v[metric]
        if value != value:
            return None
        match op:
            case "above":
                return value > x
            case "below":
                return value < x
            case "inside":
                return x[0] <= value <= x[1]
        raise AssertionError(op)

    return check


def group(kind: str, *parts: Check) -> Check:
    def check(v: dict[str, float]) -> bool | None:
        results = [p(v) for p in parts]
        if None in results:
            return None
        return all(results) if kind == "all" else any(results)

    return check


def reference(
    table: pd.DataFrame,
    timeframes: dict[str, str],
    holds: Check,
    clear: Check | None,
    *,
    bars_for: int = 1,
    cooldown_days: float = 0,
) -> list[tuple[pd.Timestamp, str]]:
    """The rule read plainly over the metrics table, written apart from the rule book.

    A metric's value at row t (bar open) is known once the bar closes (t + timeframe); the
    rule is judged at each such close, on every metric's latest known value, and stamped
    with the latest open time among the bars that closed then.
    """
    events = []
    for column, tf in timeframes.items():
        for t, value in table[column].dropna().items():
            events.append((t + pd.Timedelta(tf), t, column, value))
    events.sort()
    latest = dict.fromkeys(timeframes, NAN)
    out, state, pending, fired = [], "inactive", 0, None
    i = 0
    while i < len(events):
        moment, stamp = events[i][0], events[i][1]
        while i < len(events) and events[i][0] == moment:
            latest[events[i][2]] = events[i][3]
            stamp = max(stamp, events[i][1])
            i += 1
        now = holds(latest)
        if state == "firing":
            done = clear(latest) if clear is not None else (None if now is None else not now)
            if done:
                state, pending = "inactive", 0
                out.append((stamp, "resolved"))
            continue
        if now is None:
            continue
        if not now:
            state, pending = "inactive", 0
            continue
        pending += 1
        cooled = fired is None or stamp - fired >= pd.Timedelta(days=cooldown_days)
        if pending >= bars_for and cooled:
            state, fired = "firing", stamp
            out.append((stamp, "firing"))
    return out


def alerts_of(alerts: list[dict], rule: str) -> list[tuple[pd.Timestamp, str]]:
    return [(pd.Timestamp(a["time"]), a["state"]) for a in alerts if a["rule"] == rule]


def test_daily_composites_match_an_independent_evaluation_on_both_paths(tmp_path: Path) -> None:
    data = {"eth": ETH_1D, "btc": BTC_1D, "rut": RUT_1D}
    batch, table = backtest(tmp_path, DAILY, data)
    streamed, _ = backtest(tmp_path, DAILY, data, "--streaming")
    assert [(a["time"], a["rule"], a["state"]) for a in batch] == [
        (a["time"], a["rule"], a["state"]) for a in streamed
    ]
    daily = dict.fromkeys(("corr", "mfi", "chg"), "1D")
    regime = reference(
        table,
        daily,
        group(
            "all",
            level("corr", "below", 0.5),
            level("chg", "above", 0),
            group("any", level("mfi", "inside", (50, 80)), level("mfi", "above", 90)),
        ),
        group("any", level("corr", "above", 0.6), level("chg", "below", -5)),
        bars_for=2,
        cooldown_days=10,
    )
    lonely = reference(
        table,
        daily,
        group(
            "any",
            level("mfi", "below", 15),
            group("all", level("corr", "above", 0.7), level("chg", "below", -10)),
        ),
        None,
    )
    assert alerts_of(batch, "regime") == regime and len(regime) > 20
    assert alerts_of(batch, "lonely") == lonely and len(lonely) > 10
    # weekends count: corr has no bar then, mfi does, and the rule is judged on both
    assert {t.day_of_week for t, _ in regime} & {5, 6}
    first = next(a for a in batch if a["rule"] == "regime")
    row = table.ffill().loc[pd.Timestamp(first["time"])]
    shown = [row[c] for c in ("corr", "chg", "mfi", "mfi", "corr", "chg")]  # clear's items last
    assert first["message"] == " ".join(repr(float(v)) for v in shown)
    assert first["metric"] == "corr" and first["value"] == pytest.approx(row["corr"], abs=1e-12)


def test_items_on_different_timeframes_match_an_independent_evaluation(tmp_path: Path) -> None:
    data = {"eth": ETH_1H, "btc": BTC_1H}
    batch, table = backtest(tmp_path, HOURLY, data)
    streamed, _ = backtest(tmp_path, HOURLY, data, "--streaming")
    assert [(a["time"], a["state"]) for a in batch] == [(a["time"], a["state"]) for a in streamed]
    expected = reference(
        table,
        {"mfi_1h": "1h", "chg_4h": "4h", "corr_1d": "1D"},
        group(
            "all",
            level("mfi_1h", "above", 55),
            level("chg_4h", "above", 0),
            level("corr_1d", "below", 0.9),
        ),
        group("any", level("mfi_1h", "below", 45)),
        bars_for=2,
    )
    assert alerts_of(batch, "mixed") == expected and len(expected) > 10
    # judged at every hour: times are hourly bars, not only 4h or daily ones
    assert {t.hour for t, _ in expected} - {0, 4, 8, 12, 16, 20}


def history_of(files: dict[str, Path]) -> dict[str, FeedHistory]:
    return {feed: FeedHistory.of(load_csv(path).bars) for feed, path in files.items()}


def daily_settings(tmp_path: Path, **change: object) -> Settings:
    raw = yaml.safe_load(DAILY)
    raw["rules"][0].update(change)
    path = tmp_path / "d.yaml"
    path.write_text(yaml.safe_dump(raw))
    from moodring.configfile import load_settings

    return load_settings(path)


def test_the_live_engine_tells_the_backtests_alerts(tmp_path: Path) -> None:
    """The daemon's engine, each feed's bar closing in its own flush, alerts as the backtest."""
    settings = daily_settings(tmp_path)
    history = history_of({"eth": ETH_1D, "btc": BTC_1D, "rut": RUT_1D})
    expected: list[Alert] = []
    run_streaming(settings, history, list(settings.metrics), expected)
    engine = Pipeline(settings)
    got: list[Alert] = []
    engine.rules.subscribe(got.append)
    days: dict[int, list[tuple[str, Bar]]] = {}
    for feed, t, bar in merged_bars(history):
        days.setdefault(t, []).append((feed, bar))
    for t, bars in days.items():
        for feed, bar in bars:  # the day's trades: forming bars
            engine.on_candle(feed, t, bar, length_ms=DAY)
        for feed, bar in bars:  # the day ends: each feed's bar closes on its own
            engine.on_candle(feed, t, bar, closed=True, length_ms=DAY)
            if feed == "eth":
                assert engine.rules.waiting == (len(bars) > 1)
    assert [(a.time, a.state) for a in got if a.rule == "regime"] == [
        (a.time, a.state) for a in expected if a.rule == "regime"
    ]


def test_snapshots_and_reloads_keep_a_composites_state(tmp_path: Path) -> None:
    settings = daily_settings(tmp_path, cooldown=None)
    history = history_of({"eth": ETH_1D, "btc": BTC_1D, "rut": RUT_1D})
    alerts: list[Alert] = []
    run_streaming(settings, history, list(settings.metrics), alerts)
    fired = next(a.time for a in alerts if a.rule == "regime" and a.state == "firing")
    engine = Pipeline(settings)
    with engine.rules.quiet():
        for feed, t, bar in merged_bars(history):
            if t <= fired:
                engine.on_candle(feed, t, bar, closed=True, length_ms=DAY)
    status = engine.rules.status("regime")
    assert status.state == "firing"
    state = capture(engine)
    assert state.rules["regime"].metric == "all(corr,chg,any(mfi,mfi))"
    fresh = Pipeline(settings)
    assert restore(fresh, state).rules["regime"] == "restored"
    assert fresh.rules.status("regime") == status
    # a changed threshold keeps the state; another metric in the items does not
    moved = daily_settings(
        tmp_path,
        all=[
            {"metric": "corr", "below": 0.4},
            {"metric": "chg", "above": 1},
            {"any": [{"metric": "mfi", "inside": [50, 80]}, {"metric": "mfi", "above": 90}]},
        ],
    )
    assert restore(Pipeline(moved), state).rules["regime"] == "restored"
    other = daily_settings(
        tmp_path, all=[{"metric": "corr", "below": 0.5}, {"metric": "mfi", "above": 50}]
    )
    assert restore(Pipeline(other), state).rules["regime"].startswith("fresh: its metric was all(")


def test_a_composites_chart_shows_each_metric_with_its_thresholds(tmp_path: Path) -> None:
    settings = daily_settings(tmp_path, chart=True)
    history = history_of({"eth": ETH_1D, "btc": BTC_1D, "rut": RUT_1D})
    engine = Pipeline(settings)
    alerts: list[Alert] = []
    engine.rules.subscribe(alerts.append)
    for feed, t, bar in merged_bars(history):
        engine.on_candle(feed, t, bar, closed=True, length_ms=DAY)
    chart = alerts[-1].chart
    assert chart is not None and chart["marker"] == alerts[-1].time
    panels = {p["label"]: p for p in chart["panels"]}
    assert list(panels) == ["corr", "chg", "mfi"]
    assert panels["corr"]["thresholds"] == [0.5, 0.6]
    assert panels["chg"]["thresholds"] == [-5.0, 0.0]
    assert panels["mfi"]["thresholds"] == [50.0, 80.0, 90.0]
    times = chart["time"]
    assert len(times) == 120 and times[-1] <= alerts[-1].time + DAY
    corr = panels["corr"]["series"]["corr"]
    assert all(v is not None for v in corr)  # carried over the days without a joined bar
    saturday = next(i for i, t in enumerate(times) if pd.Timestamp(t, unit="ms").day_of_week == 5)
    assert corr[saturday] == corr[saturday - 1]
    png = render_png(chart)
    assert png.startswith(b"\x89PNG") and len(png) < 300_000


def test_composites_mute_on_any_stale_feed_they_read() -> None:
    settings = Settings(
        feeds={"x": {"symbol": "X"}, "y": {"symbol": "Y"}, "z": {"symbol": "Z"}},
        metrics={
            "a": {"type": "mfi", "series": "x"},
            "b": {"type": "pct_change", "series": "y", "lookback": 1},
        },
        rules=[{"name": "r", **BOTH, "send_resolved": True}],
    )
    book = RuleBook(settings)
    alerts: list[Alert] = []
    book.subscribe(alerts.append)
    assert settings.stale_feeds_of(settings.rules[0]) == ("x", "y")
    book.set_feed_state("y", "stale", DAY)
    book.evaluate_close_rules([("a", DAY, 60.0), ("b", DAY, -1.0)], {"a": 60.0, "b": -1.0})
    book.set_feed_state("z", "stale", 2 * DAY)  # not read by the rule
    book.set_feed_state("y", "ok", 3 * DAY)
    assert [(a.rule, a.state, a.time // DAY) for a in alerts] == [
        ("stale.y", "firing", 1),
        ("stale.z", "firing", 2),
        ("stale.y", "resolved", 3),
        ("r", "firing", 3),
    ]
    assert "muted for 2d" in alerts[-1].message


def test_vectorised_rules_see_an_undefined_value_as_the_engine_does() -> None:
    """A bar whose value is NaN is a closed bar with no value, not a missing bar."""
    settings = settings_with({**BOTH, "send_resolved": True})
    from moodring.backtest.runner import evaluate_rules
    from moodring.backtest.table import MetricTable

    t = np.arange(4, dtype=np.int64) * DAY
    table = MetricTable.from_series(
        {
            "a": (t, np.array([60.0, NAN, 60.0, 40.0])),
            "b": (t, np.array([-1.0, 1, -1, -1])),
        }
    )
    alerts = evaluate_rules(settings, table, {})
    assert told(alerts) == [(0, "firing"), (3, "resolved")]  # day 1 is undefined
    bars = table.series()
    assert bars["a"][0].tolist() == t.tolist() and math.isnan(bars["a"][1][1])


def test_on_is_read_as_a_key_in_yaml(tmp_path: Path) -> None:
    """YAML 1.1 reads a bare ``on`` as true; the README's ``on: close`` must still load."""
    from moodring.configfile import load_settings

    path = tmp_path / "moodring.yaml"
    path.write_text(GOOD.replace("    all:\n", "    on: close\n    all:\n"))
    assert load_settings(path).rules[0].on == "close"
    single = "  - name: t\n    metric: mfi\n    condition: {above: 50}\n    on: tick\n"
    path.write_text(GOOD + single)
    assert load_settings(path).rules[1].on == "tick"
