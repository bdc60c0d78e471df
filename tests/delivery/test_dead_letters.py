"""Dead letters: a refused, too old or too often failed alert stops holding back its target."""

from __future__ import annotations

import logging
import re
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import generate_latest

from moodring.configfile import load_settings
from moodring.delivery.dispatcher import Dispatcher
from moodring.delivery.outbox import Outbox
from moodring.delivery.sender import Sender, target_id
from moodring.rules.alert import Alert
from moodring.service.daemon import Daemon
from moodring.service.telemetry import Telemetry
from moodring.settings import NotifyConfig
from tests.support.delivery import FakeClock
from tests.support.receiver import Receiver
from tests.support.wait import until


@pytest.fixture
def outbox(tmp_path: Path) -> Iterator[Outbox]:
    with Outbox(tmp_path / "state" / "outbox.sqlite") as box:
        yield box


def alert(rule: str, i: int, message: str | None = None) -> Alert:
    return Alert(
        rule, "firing", i * 60_000, "corr", 0.1, "warning", f"{rule} {i}", message or f"{rule} {i}"
    )


def notify_for(url: str, **kw: Any) -> NotifyConfig:
    settings: dict[str, Any] = {
        "rate_per_minute": 6000,
        "retry_initial": 0.05,
        "retry_max": 0.2,
        "timeout": 10,
        **kw,
    }
    return NotifyConfig(urls=(url,), **settings)


def dead_total(telemetry: Telemetry, tid: str) -> float:
    text = generate_latest(telemetry.registry).decode()
    found = re.search(rf'^moodring_alerts_dead_total\{{target="{tid}"\}} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


# --- the fault: one message the service refuses ---------------------------------------------


async def test_a_refused_alert_ends_dead_and_every_other_alert_arrives_in_order(
    tmp_path: Path, receiver: Receiver
) -> None:
    """The daemon's own wiring: AlertIntake → outbox → dispatcher → apprise → HTTP 400."""
    receiver.refusing(400, "poisoned")
    cfg = {
        "feeds": {
            "eth": {
                "symbol": "ETH/USDT",
                "ws_url": "ws://127.0.0.1:9",
                "rest_url": "http://127.0.0.1:9",
            }
        },
        "notify": {
            "urls": [receiver.url()],
            "rate_per_minute": 6000,
            "retry_initial": 0.05,
            "retry_max": 60,
        },
        "http": {"enabled": False},
        "state_dir": str(tmp_path / "state"),
    }
    path = tmp_path / "moodring.yaml"
    path.write_text(yaml.safe_dump(cfg))
    daemon = Daemon(load_settings(path))
    tid = target_id(receiver.url())
    sent = [alert("ok", i) for i in range(12)]
    poisoned = alert("poisoned", 3)
    async with daemon.dispatcher:
        for a in [*sent[:3], poisoned, *sent[3:]]:
            daemon.alerts(a)
        await until(lambda: daemon.dispatcher.sent == len(sent), timeout=30)
        await until(lambda: dead_total(daemon.telemetry, tid) == 1, timeout=10)
    assert receiver.messages == [a.message for a in sent]
    assert [p["message"] for p in receiver.refused] == ["poisoned 3"], "refused once, not retried"
    [dead] = daemon.outbox.undelivered()
    assert (dead.alert, dead.state, dead.attempts) == (poisoned, "dead", 1)
    assert dead.error is not None and "error=400" in dead.error
    assert daemon.outbox.depth() == 0
    daemon.outbox.close()


async def test_an_alert_failing_retryably_is_overtaken_then_dead_after_max_attempts(
    receiver: Receiver, outbox: Outbox
) -> None:
    receiver.refusing(500, "poisoned")
    url = receiver.url()
    telemetry = Telemetry()
    dispatcher = Dispatcher(outbox, notify_for(url, max_attempts=8), on_dead=telemetry.alert_dead)
    sent = [alert("ok", i) for i in range(10)]
    async with dispatcher:
        dispatcher.enqueue(sent[0])
        dispatcher.enqueue(alert("poisoned", 1))
        for a in sent[1:]:
            dispatcher.enqueue(a)
        await until(lambda: dispatcher.dead == 1 and dispatcher.sent == len(sent), timeout=30)
    assert receiver.messages == [a.message for a in sent], "the rest keep their order"
    assert len(receiver.refused) == 8
    [dead] = outbox.undelivered()
    assert (dead.alert.rule, dead.state, dead.attempts) == ("poisoned", "dead", 8)
    assert dead.error is not None and dead.error.startswith("failed 8 times (notify.max_attempts)")
    assert dead.overtaken is not None
    assert dead_total(telemetry, target_id(url)) == 1


async def test_a_head_is_not_overtaken_before_twice_retry_max(
    receiver: Receiver, outbox: Outbox
) -> None:
    receiver.refusing(500, "poisoned")
    dispatcher = Dispatcher(outbox, notify_for(receiver.url(), retry_max=3600))
    async with dispatcher:
        dispatcher.enqueue(alert("poisoned", 0))
        dispatcher.enqueue(alert("ok", 1))
        await until(lambda: dispatcher.failed >= 3)
    assert receiver.messages == []
    assert {p["message"] for p in receiver.refused} == {"poisoned 0"}, "only the head was tried"
    assert [(d.alert.rule, d.overtaken) for d in outbox.pending(target_id(receiver.url()))] == [
        ("poisoned", None),
        ("ok", None),
    ]


async def test_while_the_service_fails_everything_order_is_kept(
    receiver: Receiver, outbox: Outbox
) -> None:
    """Past the bound the alert behind the head is tried too; it fails, so the head stays."""
    probes: list[str] = []

    def answer(payload: dict[str, Any]) -> int:
        if len(probes) >= 3:
            return 200  # back: the service recovered right after the third probe failed
        if payload["message"] == "ok 1":
            probes.append(payload["message"])
        return 503

    receiver.answer = answer
    dispatcher = Dispatcher(outbox, notify_for(receiver.url(), retry_max=0.1))
    async with dispatcher:
        for i in range(5):
            dispatcher.enqueue(alert("ok", i))
        await until(lambda: dispatcher.sent == 5, timeout=30)
    assert receiver.messages == [f"ok {i}" for i in range(5)]
    assert {p["message"] for p in receiver.refused} == {"ok 0", "ok 1"}, "head and the next"
    assert dispatcher.dead == 0 and len(probes) == 3


async def test_a_service_back_at_the_probe_swaps_two_alerts_and_overtakes_none(
    receiver: Receiver, outbox: Outbox, caplog: pytest.LogCaptureFixture
) -> None:
    """The probe is the first request the service takes: the head goes right after it."""
    back: list[bool] = []

    def answer(payload: dict[str, Any]) -> int:
        if payload["message"] == "ok 1":
            back.append(True)
        return 200 if back else 503

    receiver.answer = answer
    dispatcher = Dispatcher(outbox, notify_for(receiver.url(), retry_max=0.1))
    with caplog.at_level(logging.WARNING, logger="moodring.delivery"):
        async with dispatcher:
            for i in range(4):
                dispatcher.enqueue(alert("ok", i))
            await until(lambda: dispatcher.sent == 4, timeout=30)
    assert receiver.messages == ["ok 1", "ok 0", "ok 2", "ok 3"]
    assert "later alerts go ahead" not in caplog.text


async def test_an_alert_older_than_max_age_ends_dead(receiver: Receiver, outbox: Outbox) -> None:
    receiver.mode = "fail"
    clock = FakeClock(time.time())
    tid = target_id(receiver.url())
    notify = notify_for(receiver.url(), max_age="1h", retry_initial=1, retry_max=600)
    dispatcher = Dispatcher(outbox, notify, clock=clock)
    async with dispatcher:
        dispatcher.enqueue(alert("ok", 0))
        dispatcher.enqueue(alert("ok", 1))
        await until(lambda: dispatcher.failed == 1)
        clock.advance(3601)
        dispatcher.kick()
        await until(lambda: dispatcher.dead == 2)
    rows = outbox.undelivered()
    assert [(d.state, d.attempts) for d in rows] == [("dead", 1), ("dead", 0)]
    assert all(d.error == "not delivered within 1h (notify.max_age)" for d in rows)
    assert outbox.depth() == 0 and outbox.dead_count() == 2
    assert outbox.requeue_dead(at=clock.now) == 2
    receiver.mode = "ok"
    assert await Dispatcher(outbox, notify, clock=clock).drain(10)
    assert receiver.messages == ["ok 0", "ok 1"], "requeued: their age counts from then"
    assert outbox.pending(tid) == []


async def test_an_unusable_url_is_dead_at_the_first_attempt(outbox: Outbox) -> None:
    url = "json://127.0.0.1:9/hook"
    notify = notify_for(url)
    sender = Sender(notify)
    sender._apprise._apprise[url] = None  # as if apprise could not parse it
    dispatcher = Dispatcher(outbox, notify, sender=sender)
    dispatcher.enqueue(alert("ok", 0))
    assert await dispatcher.drain(10)
    [dead] = outbox.undelivered()
    assert (dead.state, dead.error) == ("dead", "refused: apprise cannot parse the URL")


@pytest.mark.parametrize(
    ("status", "permanent"),
    [(400, True), (403, True), (404, True), (408, False), (429, False), (500, False), (503, False)],
)
async def test_http_4xx_but_408_and_429_is_permanent(
    receiver: Receiver, status: int, permanent: bool
) -> None:
    receiver.answer = lambda payload: status
    url = receiver.url()
    error = await Sender(notify_for(url)).deliver(url, alert("ok", 0), None)
    assert error is not None and error.permanent is permanent
    assert f"error={status}" in error.reason and "127.0.0.1" not in error.reason


# --- body formats --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "query", "received"),
    [
        ("text", "?format=html", "corr&nbsp;&lt;&nbsp;0.3&nbsp;&amp;&nbsp;&lt;b&gt;x&lt;/b&gt;"),
        ("html", "?format=html", "corr < 0.3 & <b>x</b>"),
        ("text", "", "corr < 0.3 & <b>x</b>"),
        ("markdown", "?format=html", "<p>corr &lt; 0.3 &amp; <b>x</b></p>"),
    ],
)
async def test_the_body_is_escaped_for_the_service_by_its_format(
    receiver: Receiver, fmt: str, query: str, received: str
) -> None:
    """``?format=html`` makes json:// an HTML service, like Telegram: text must be escaped."""
    url = receiver.url() + query
    notify = NotifyConfig(urls=({"url": url, "format": fmt},))
    message = "corr < 0.3 & <b>x</b>"
    assert await Sender(notify).send(url, alert("ok", 0, message), None)
    assert receiver.messages == [received]


# --- the outbox file -----------------------------------------------------------------------

OLD_SCHEMA = """
CREATE TABLE alerts (id INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE, body TEXT NOT NULL,
                     added REAL NOT NULL);
CREATE TABLE deliveries (id INTEGER PRIMARY KEY, alert_id INTEGER NOT NULL REFERENCES alerts (id),
    target TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, next_try REAL NOT NULL DEFAULT 0,
    error TEXT, delivered REAL);
"""


def test_an_outbox_of_the_previous_version_is_migrated_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    with sqlite3.connect(path) as db:
        db.executescript(OLD_SCHEMA)
        db.execute(
            "INSERT INTO alerts VALUES (1, ?, ?, ?)",
            (alert("ok", 1).key, alert("ok", 1).to_json(), time.time()),
        )
        db.execute(
            "INSERT INTO deliveries (alert_id, target, attempts, error) VALUES (1, 'a', 3, 'boom')"
        )
    db.close()
    for _ in range(2):  # the second open finds the columns there
        with Outbox(path) as box:
            [row] = box.pending("a")
            assert (row.alert, row.attempts, row.error) == (alert("ok", 1), 3, "boom")
            assert row.state == "pending"
            assert (row.failing_since, row.overtaken, row.dead) == (None, None, None)


def test_requeue_and_remove(outbox: Outbox) -> None:
    for i in range(3):
        outbox.add(alert("ok", i), ["a"])
    first, second, third = outbox.pending("a")
    outbox.mark_failed(first.id, "boom", time.time() + 600, at=time.time())
    assert outbox.mark_dead(first.id, "refused: 400", time.time(), attempted=True)
    assert not outbox.mark_dead(first.id, "again", time.time()), "dead once"
    assert outbox.mark_dead(second.id, "too old", time.time())
    assert [d.id for d in outbox.pending("a")] == [third.id]
    assert (outbox.depth(), outbox.dead_count()) == (1, 2)
    assert outbox.requeue(first.id)
    again = outbox.get(first.id)
    assert again is not None and (again.state, again.attempts, again.next_try) == ("pending", 0, 0)
    assert again.failing_since is None and again.queued > again.added
    assert outbox.remove(second.id) and not outbox.remove(second.id)
    assert outbox.get(second.id) is None
    assert not outbox.requeue(10_000)
    assert [d.id for d in outbox.pending("a")] == [first.id, third.id]


def test_dead_rows_are_kept_seven_days(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    with Outbox(path) as box:
        for i in range(2):
            box.add(alert("ok", i), ["a"])
        old, recent = box.pending("a")
        assert box.mark_dead(old.id, "refused", time.time() - 8 * 86_400)
        assert box.mark_dead(recent.id, "refused", time.time() - 6 * 86_400)
    with Outbox(path) as box:
        assert [d.id for d in box.undelivered()] == [recent.id]
