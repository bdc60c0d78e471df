"""Rule states saved with their alerts, alerts held while SQLite is full, late alerts on restart.

SQLite's ``PRAGMA max_page_count`` makes the outbox's writes fail for real (SQLITE_FULL);
restarts run the daemon's own restore on real daily bars (see test_snapshot).
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from moodring.delivery.dispatcher import Dispatcher
from moodring.delivery.intake import AlertIntake
from moodring.delivery.outbox import Outbox
from moodring.rules.alert import Alert
from moodring.rules.silences import Silences
from moodring.service import daemon as daemon_module
from moodring.service.daemon import Daemon
from moodring.service.snapshot import capture, restore, resume_rules, rule_state_json, save
from moodring.settings import NotifyConfig, Settings
from tests.support.daily_replay import (
    DAY,
    START,
    TRADE_DAY,
    bars_between,
    day_trades,
    live,
    settings_with,
    started,
    status,
)
from tests.support.delivery import make_alert, notify_for

ETH_UP = {"name": "eth-up", "metric": "eth_chg", "condition": {"above": 0}, "send_resolved": True}
ETH_CHG = {"type": "pct_change", "series": "eth", "timeframe": "1d", "lookback": 1}


def full(outbox: Outbox) -> None:
    """Make every later write of the outbox fail with SQLITE_FULL."""
    pages = outbox._db.execute("PRAGMA page_count").fetchone()[0]
    outbox._db.execute(f"PRAGMA max_page_count={pages}")


def big(i: int) -> Alert:
    """Return alert ``i`` with a message that needs new pages (a full database refuses it)."""
    return replace(make_alert(i), message="x" * 20_000)


def freed(outbox: Outbox) -> None:
    outbox._db.execute("PRAGMA max_page_count=1073741823")


def stored(path: Path) -> list[Alert]:
    """Return the alerts an outbox file holds, in the order they were added."""
    with sqlite3.connect(path) as db:
        return [Alert.from_json(body) for (body,) in db.execute("SELECT body FROM alerts")]


def test_a_rule_state_is_saved_in_the_transaction_of_its_alert(tmp_path: Path) -> None:
    with Outbox(tmp_path / "outbox.sqlite") as outbox:
        outbox.add(make_alert(1), ["t"], rule_state='{"at": 1}')
        assert [(r.rule, r.at, r.state) for r in outbox.rule_states()] == [
            ("r", 60_000, '{"at": 1}')
        ]
        # a replay of an older bar never overwrites a newer state, even with a new alert
        assert outbox.add(make_alert(0), ["t"], rule_state='{"at": 0}')
        assert [r.state for r in outbox.rule_states()] == ['{"at": 1}']
        full(outbox)
        with pytest.raises(sqlite3.OperationalError, match="full"):
            outbox.add(big(2), ["t"], rule_state='{"at": 2}')
        freed(outbox)
        # neither the alert nor its rule's state was kept
        assert [r.state for r in outbox.rule_states()] == ['{"at": 1}']
        assert outbox.depth() == 2


def test_alerts_wait_in_memory_while_sqlite_is_full_and_go_in_order(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="moodring.delivery")
    with Outbox(tmp_path / "outbox.sqlite") as outbox:
        dispatcher = Dispatcher(outbox, notify_for("json://127.0.0.1:9/x"))
        sink = AlertIntake(dispatcher, Silences(tmp_path / "silences.json"), capacity=3)
        sink(make_alert(1))
        full(outbox)
        for i in range(2, 7):
            sink(big(i), f'{{"n": {i}}}')  # never raises
        assert sink.held == 3 and sink.lost == 2
        problem = sink.problem()
        assert problem is not None and "database or disk is full" in problem
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert sum("cannot be written (" in e for e in errors) == 1  # once, at the change
        assert [e.split()[1] for e in errors if "LOST" in e] == [
            make_alert(2).key,
            make_alert(3).key,
        ]
        assert not sink.flush()
        freed(outbox)
        assert sink.flush()
        assert sink.held == 0 and sink.problem() is None
        assert "written again after" in caplog.text and "3 held alert(s) saved, 2 lost" in (
            caplog.text
        )
        assert [a.time for a in stored(outbox.path)] == [make_alert(i).time for i in (1, 4, 5, 6)]
        assert [r.state for r in outbox.rule_states()] == ['{"n": 6}']


def daily_daemon(tmp_path: Path, *rules: dict, late_max_age: str = "10d") -> Settings:
    """Settings of the shipped feeds with ``eth_chg``, its rules and a state directory."""
    settings = settings_with(*rules, eth_chg=ETH_CHG)
    notify = NotifyConfig(late_max_age=late_max_age)
    return settings.model_copy(update={"state_dir": tmp_path / "state", "notify": notify})


def catch_up(daemon: Daemon, until: int) -> None:
    """Give the daemon's warm-up every daily bar since its last one up to ``until``."""
    for feed in daemon.settings.feeds:
        last = daemon.engine.builders(feed)[0].bars.last()
        since = last.time + 1 if last is not None else START
        bars = [bar for f, bar in bars_between(since, until) if f == feed]
        daemon.sink.history(feed, bars, length_ms=DAY)


def test_bars_closed_while_down_alert_late_and_older_ones_are_only_logged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    monkeypatch.setattr(daemon_module, "_fresh", lambda state: state)  # 2024 bars
    settings = daily_daemon(tmp_path, ETH_UP)
    reference, alerts = started(settings)
    live(reference, START, TRADE_DAY)
    save(tmp_path / "state" / "snapshot.npz", capture(reference))
    before = len(alerts)
    down = TRADE_DAY + 30 * DAY
    live(reference, TRADE_DAY, down)  # what an unbroken run would have told
    told = alerts[before:]

    daemon = Daemon(settings)
    try:
        catch_up(daemon, down)
    finally:
        daemon.outbox.close()
    # the newest bar replayed closed at `down`: up to 10 days before it, an alert is late
    recent = [a for a in told if a.time + DAY >= down - 10 * DAY]
    old = [a for a in told if a not in recent]
    assert recent and old
    assert any(a.rule == "eth-up" for a in recent) and any(a.rule == "eth-up" for a in old)
    sent = stored(tmp_path / "state" / "outbox.sqlite")
    assert sorted(a.key for a in sent) == sorted(a.key for a in recent)
    for alert in sent:
        day = datetime.fromtimestamp(alert.time / 1000, UTC).date()
        assert alert.message.startswith("While moodring was down: "), alert.message
        assert alert.message.endswith(f"(at {day} 00:00 UTC)"), alert.message
    assert daemon.catch_up is not None
    assert (daemon.catch_up.late, daemon.catch_up.too_old) == (len(recent), len(old))
    logged = [r.getMessage() for r in caplog.records if "not sent" in r.getMessage()]
    assert len(logged) == len(old) and all("ALERT" in line for line in logged)


def test_without_a_snapshot_the_warm_up_tells_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = daily_daemon(tmp_path, ETH_UP)
    daemon = Daemon(settings)
    try:
        catch_up(daemon, TRADE_DAY + 30 * DAY)
        assert daemon.catch_up is None
        assert daemon.outbox.depth() == 0 and daemon.outbox.rule_states() == []
    finally:
        daemon.outbox.close()
    assert stored(tmp_path / "state" / "outbox.sqlite") == []


def test_a_tick_rule_state_saved_with_its_alert_is_not_told_again_after_a_crash(
    tmp_path: Path,
) -> None:
    rule = {"name": "eth-ema-tick", "metric": "eth_ema", "on": "tick", "condition": {"above": 0}}
    settings = settings_with(rule)
    a, alerts_a = started(settings)
    live(a, START, TRADE_DAY)
    snapshot = capture(a)  # the rule has not seen a tick yet: inactive

    outbox = Outbox(tmp_path / "outbox.sqlite")

    def enqueue(alert: Alert) -> None:  # as the daemon does: the state with the alert
        rule = a.rules.rule(alert.rule)
        outbox.add(alert, [], None if rule is None else rule_state_json(rule))

    a.rules.subscribe(enqueue)
    trades = day_trades()
    for trade in trades:
        a.on_trade(*trade)
    ticked = [(x.rule, x.time) for x in alerts_a if x.rule == "eth-ema-tick"]
    assert ticked == [("eth-ema-tick", TRADE_DAY)]
    # the process dies here; the snapshot is older than the alert

    # the next day's trades (the capture moved on by a day) for whatever comes after
    next_day = [(f, t + DAY, p, q, i) for f, t, p, q, i in trades]
    candle = {feed: bar for feed, bar in bars_between(TRADE_DAY, TRADE_DAY + DAY)}
    restarted = []
    for durable in (True, False):
        engine = type(a)(settings)
        alerts: list[Alert] = []
        engine.rules.subscribe(alerts.append)
        restore(engine, snapshot, forming_bars=False)
        if durable:
            assert resume_rules(engine, outbox.rule_states(), snapshot.taken_ms) == ["eth-ema-tick"]
            assert status(engine, "eth-ema-tick") == status(a, "eth-ema-tick")
        for feed, bar in candle.items():
            engine.on_candle(feed, bar.time, bar, closed=True, length_ms=DAY)
        for trade in next_day:
            engine.on_trade(*trade)
        restarted.append([(x.state, x.time) for x in alerts if x.rule == "eth-ema-tick"])
    outbox.close()
    with_state, snapshot_only = restarted
    assert with_state == [], "the firing was told once, before the crash"
    # what the state saved with the alert prevents: the same firing told again next day
    assert snapshot_only == [("firing", TRADE_DAY + DAY)]
