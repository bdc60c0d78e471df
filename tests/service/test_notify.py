"""sd_notify: the exact datagrams systemd receives, and the watchdog's pings and silences."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from moodring.service.notify import SdNotify, watchdog_loop
from tests.support.sdnotify import NotifySocket


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.fixture
def receiver(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> Iterator[NotifySocket]:
    path = str(tmp_path / "notify.sock")
    rx = NotifySocket(path)
    clean_env.setenv("NOTIFY_SOCKET", path)
    yield rx
    rx.close()


def test_each_message_is_one_exact_datagram(receiver: NotifySocket) -> None:
    notify = SdNotify.from_env()
    assert notify.enabled
    assert notify.ready()
    assert notify.ready("watching 3 feeds")
    assert notify.status("feed binance\nreconnecting")
    assert notify.stopping()
    assert notify.watchdog()
    assert notify.send("EXTEND_TIMEOUT_USEC=5000000")
    assert notify.send(ERRNO=5, STATUS="x")
    assert receiver.wait_for(7) == [
        b"READY=1",
        b"READY=1\nSTATUS=watching 3 feeds",
        b"STATUS=feed binance reconnecting",
        b"STOPPING=1",
        b"WATCHDOG=1",
        b"EXTEND_TIMEOUT_USEC=5000000",
        b"ERRNO=5\nSTATUS=x",
    ]
    notify.close()


def test_reloading_carries_the_monotonic_clock(receiver: NotifySocket) -> None:
    notify = SdNotify.from_env()
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert notify.reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    [datagram] = receiver.wait_for(1)
    first, second = datagram.decode().split("\n")
    assert first == "RELOADING=1"
    key, _, value = second.partition("=")
    assert key == "MONOTONIC_USEC"
    assert before <= int(value) <= after


def test_abstract_socket(clean_env: pytest.MonkeyPatch) -> None:
    name = f"moodring-test-{uuid.uuid4().hex}"
    rx = NotifySocket("\0" + name)
    try:
        clean_env.setenv("NOTIFY_SOCKET", "@" + name)
        notify = SdNotify.from_env()
        assert notify.ready("up")
        assert rx.wait_for(1) == [b"READY=1\nSTATUS=up"]
    finally:
        rx.close()


def test_field_values_cannot_smuggle_extra_lines(receiver: NotifySocket) -> None:
    with pytest.raises(ValueError):
        SdNotify.from_env().send(STATUS="ok\nREADY=1")


def test_without_notify_socket_everything_is_a_no_op(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("WATCHDOG_USEC", "30000000")
    notify = SdNotify.from_env()
    assert not notify.enabled
    assert notify.watchdog_interval is None
    assert not notify.ready("x")
    assert not notify.status("x")
    assert not notify.reloading()
    assert not notify.stopping()
    assert not notify.watchdog()


def test_a_vanished_socket_is_logged_once_and_never_raises(
    tmp_path: Path, clean_env: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    clean_env.setenv("NOTIFY_SOCKET", str(tmp_path / "gone.sock"))
    notify = SdNotify.from_env()
    caplog.set_level(logging.DEBUG, logger="moodring.service.notify")
    for _ in range(5):
        assert not notify.watchdog()
    assert not notify.ready()
    failures = [r for r in caplog.records if "sd_notify" in r.getMessage()]
    assert len(failures) == 1
    assert failures[0].levelno == logging.DEBUG


def test_watchdog_interval_is_half_of_watchdog_usec(receiver: NotifySocket) -> None:
    env = os.environ.copy()
    env["WATCHDOG_USEC"] = "30000000"
    assert SdNotify.from_env(env).watchdog_interval == 15.0
    env["WATCHDOG_PID"] = str(os.getpid())
    assert SdNotify.from_env(env).watchdog_interval == 15.0
    env["WATCHDOG_USEC"] = "0"
    assert SdNotify.from_env(env).watchdog_interval is None
    env["WATCHDOG_USEC"] = "soon"
    assert SdNotify.from_env(env).watchdog_interval is None


async def test_watchdog_pid_of_another_process_disables_the_watchdog(
    receiver: NotifySocket, clean_env: pytest.MonkeyPatch
) -> None:
    clean_env.setenv("WATCHDOG_USEC", "100000")
    clean_env.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    notify = SdNotify.from_env()
    assert notify.watchdog_interval is None
    await asyncio.wait_for(watchdog_loop(notify, lambda: True), 1.0)
    time.sleep(0.2)
    assert receiver.got == []


def _gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(times)]


async def test_watchdog_pings_at_the_interval_while_healthy(
    receiver: NotifySocket, clean_env: pytest.MonkeyPatch
) -> None:
    clean_env.setenv("WATCHDOG_USEC", "200000")
    notify = SdNotify.from_env()
    assert notify.watchdog_interval == pytest.approx(0.1)
    task = asyncio.create_task(watchdog_loop(notify, lambda: True))
    await asyncio.sleep(1.05)
    task.cancel()
    await asyncio.sleep(0.1)
    assert {data for _, data in receiver.got} == {b"WATCHDOG=1"}
    # 11 expected; generous bounds for a loaded machine
    assert 6 <= len(receiver.got) <= 14
    gaps = sorted(_gaps([t for t, _ in receiver.got]))
    assert 0.05 <= gaps[len(gaps) // 2] <= 0.25


async def test_watchdog_holds_back_pings_while_unhealthy(
    receiver: NotifySocket, clean_env: pytest.MonkeyPatch
) -> None:
    clean_env.setenv("WATCHDOG_USEC", "200000")
    notify = SdNotify.from_env()
    state = {"healthy": True}
    task = asyncio.create_task(watchdog_loop(notify, lambda: state["healthy"]))
    await asyncio.sleep(0.45)
    state["healthy"] = False
    off = time.monotonic()
    await asyncio.sleep(0.8)
    on = time.monotonic()
    state["healthy"] = True
    await asyncio.sleep(0.45)
    task.cancel()
    await asyncio.sleep(0.1)
    times = [t for t, _ in receiver.got]
    assert any(t < off for t in times)
    # a ping sent just before the switch may be read a moment after it
    assert [t for t in times if off + 0.05 < t < on] == []
    assert sum(t > on for t in times) >= 2


async def test_a_raising_health_check_counts_as_unhealthy(
    receiver: NotifySocket, clean_env: pytest.MonkeyPatch
) -> None:
    clean_env.setenv("WATCHDOG_USEC", "200000")

    def broken() -> bool:
        raise RuntimeError("boom")

    task = asyncio.create_task(watchdog_loop(SdNotify.from_env(), broken))
    await asyncio.sleep(0.5)
    assert not task.done()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert receiver.got == []


async def test_a_blocked_event_loop_sends_no_pings(
    receiver: NotifySocket, clean_env: pytest.MonkeyPatch
) -> None:
    clean_env.setenv("WATCHDOG_USEC", "200000")
    task = asyncio.create_task(watchdog_loop(SdNotify.from_env(), lambda: True))
    await asyncio.sleep(0.45)
    start = time.monotonic()
    time.sleep(0.6)  # blocks the event loop for 6 intervals
    end = time.monotonic()
    await asyncio.sleep(0.45)
    task.cancel()
    await asyncio.sleep(0.1)
    times = [t for t, _ in receiver.got]
    assert sum(t < start for t in times) >= 2
    assert [t for t in times if start + 0.05 < t < end] == []
    assert max(_gaps(times)) >= 0.5
    assert sum(t > end for t in times) >= 2
