"""A full disk under ``moodring run``: alerts wait in memory and each goes out once it is freed.

The daemon runs in its own mount namespace with its state directory on a 1 MB tmpfs that
the test fills (``dd``) while it runs and frees (``rm``) later, through ``nsenter``.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml

from moodring.testing.fake_exchange import FakeExchange
from tests.support.captures import CAPTURES
from tests.support.daemon import KEY, Service, frequent_rules
from tests.support.receiver import Receiver
from tests.support.wait import until

# the daemon as `moodring run`, saving a snapshot every second so snapshot writes meet
# the full disk too
LAUNCH = (
    "import sys; from moodring.service import daemon; daemon.SNAPSHOT_EVERY = 1.0; "
    "from moodring.cli import main; sys.exit(main(sys.argv[1:]))"
)
HELD = re.compile(r"alert \S+ held in memory")
ALERT_LINE = re.compile(r"ALERT (\S+) (\S+) \[\w+\] (\w+):")


def keys_received(receiver: Receiver) -> Counter[str]:
    """Count the alert keys in the messages received (the time in the key as ISO-8601)."""
    return Counter(m.group(1) for m in map(KEY.search, receiver.messages) if m)


def keys_logged(service: Service) -> list[str]:
    """Return the keys of the alerts the daemon logged (``ALERT <time> <rule> [..] <state>``)."""
    found = (ALERT_LINE.search(line) for line in service.lines)
    return [f"{m.group(2)}|{m.group(3)}|{m.group(1)}" for m in found if m]


@pytest.fixture
async def fake() -> AsyncIterator[FakeExchange]:
    exchange = FakeExchange(CAPTURES, speed=60.0, loop=True)
    await exchange.start()
    yield exchange
    await exchange.stop()


async def start_on_tmpfs(tmp_path: Path, cfg: dict, state: Path) -> Service:
    """Start the daemon in a new mount namespace whose ``state`` is a 1 MB tmpfs."""
    path = tmp_path / "moodring.yaml"
    path.write_text(yaml.safe_dump(cfg))
    address = str(tmp_path / "notify.sock")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(address)
    notify.setblocking(False)
    script = (
        f"mount -t tmpfs -o size=1m tmpfs {state} && "
        f'exec {sys.executable} -c "{LAUNCH}" run -c {path}'
    )
    env = {**os.environ, "NOTIFY_SOCKET": address}
    env.pop("JOURNAL_STREAM", None)
    argv = ["unshare", "-m", "--propagation", "private", "sh", "-c", script]
    proc = await asyncio.create_subprocess_exec(
        *argv, env=env, stderr=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL
    )
    return Service(proc, notify)


def in_namespace(service: Service, *argv: str) -> subprocess.CompletedProcess[str]:
    """Run a command in the daemon's mount namespace (where its tmpfs is)."""
    command = ["nsenter", "-t", str(service.proc.pid), "-m", "--", *argv]
    return subprocess.run(command, capture_output=True, text=True, timeout=30)


async def test_a_full_disk_holds_alerts_and_each_goes_out_once_when_freed(
    tmp_path: Path, fake: FakeExchange
) -> None:
    receiver = Receiver()
    state = tmp_path / "state"
    state.mkdir()
    service = await start_on_tmpfs(tmp_path, frequent_rules(fake, state, receiver), state)

    def snapshot_logged(text: str) -> list[str]:
        return [line for line in service.logged(text) if "snapshot" in line]

    def outbox_logged(text: str) -> list[str]:
        return [line for line in service.logged(text) if "outbox" in line]

    def held() -> list[str]:
        return [line for line in service.lines if HELD.search(line)]

    def status_says(text: str) -> bool:
        return any(text in datagram for datagram in service.sent("STATUS="))

    try:
        await service.wait(lambda: service.sent("READY=1"), what="READY=1")
        await service.wait(lambda: service.port is not None, what="the HTTP port")
        await service.wait(lambda: len(receiver.payloads) >= 2, what="alerts before the fill")
        assert (await service.get("/healthz"))[0] == 200

        filled = in_namespace(service, "dd", "if=/dev/zero", f"of={state}/fill", "bs=4k")
        assert "No space left" in filled.stderr, filled.stderr
        await service.wait(lambda: outbox_logged("cannot be written ("), 60, "the outbox error")
        await service.wait(lambda: len(held()) >= 4, 60, "four alerts held")
        await service.wait(lambda: snapshot_logged("not written"), 30, "a failed snapshot")
        status, body = await service.get("/healthz")
        health = json.loads(body)
        assert status == 503 and "cannot be written" in health["problems"]["outbox"], health

        async def held_in_memory() -> bool:
            _, metrics = await service.get("/metrics")
            unsaved = re.search(r"^moodring_alerts_unsaved (\S+)", metrics.decode(), re.M)
            assert unsaved is not None, metrics.decode()[-1500:]
            return float(unsaved.group(1)) >= 1

        # SQLite may find room now and then and write the held alerts: the gauge says so
        await until(held_in_memory, "an alert shown as held in memory", timeout=20)
        await service.wait(lambda: status_says("cannot be written"), 10, "STATUS= saying so")

        freed = in_namespace(service, "rm", f"{state}/fill")
        assert freed.returncode == 0, freed.stderr
        await service.wait(lambda: outbox_logged("written again after"), 30, "the recovery")
        await service.wait(lambda: snapshot_logged("written again after"), 30, "snapshots back")

        def all_delivered() -> bool:
            return set(keys_logged(service)) <= set(keys_received(receiver))

        # the replay paused, alerts come no faster than bars close on the clock: a loaded
        # machine's deliveries catch up with them instead of chasing a replay's burst
        fake.pause()
        await service.wait(all_delivered, 60, "every logged alert delivered")
        assert (await service.get("/healthz"))[0] == 200
        service.proc.terminate()
        assert await asyncio.wait_for(service.proc.wait(), 10) == 0
    finally:
        await service.close()
        receiver.down()
    logged = keys_logged(service)
    received = keys_received(receiver)
    # logged when writes start failing and when they work again, not per alert (SQLite may
    # still find room now and then on the full disk: each such episode is logged)
    for failing, again in (
        (outbox_logged("cannot be written ("), outbox_logged("written again")),
        (snapshot_logged("not written"), snapshot_logged("written again")),
    ):
        assert 1 <= len(failing) == len(again), (failing, again)
    assert not service.logged("LOST") and not service.logged("Traceback")
    assert not service.logged("bad frame"), "a storage error reached a feed"
    assert len(held()) >= 4
    assert len(logged) == len(set(logged))
    assert {key: n for key, n in received.items() if n != 1} == {}, "each exactly once"
    assert set(received) == set(logged)
