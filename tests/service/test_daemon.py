"""``moodring run`` as systemd runs it: sd_notify, /healthz and /metrics, SIGHUP, SIGTERM."""

from __future__ import annotations

import asyncio
import base64
import json
import math
import os
import re
import signal
import socket
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import yaml

from moodring.configfile import load_settings
from moodring.market.timeframe import Timeframe
from moodring.service import daemon as daemon_module
from moodring.service.daemon import Daemon
from moodring.service.snapshot import EngineState, SeriesState
from moodring.settings import Settings
from moodring.testing.fake_exchange import FakeExchange
from tests.support.captures import CAPTURES
from tests.support.daemon import daemon_config, start
from tests.support.mosquitto import Collector, Mosquitto, ensure_mosquitto
from tests.support.receiver import Receiver
from tests.support.wait import until


@pytest.fixture
async def fake() -> AsyncIterator[FakeExchange]:
    exchange = FakeExchange(CAPTURES, speed=20.0, loop=True)
    await exchange.start()
    yield exchange
    await exchange.stop()


async def test_notify_health_reload_and_stop(tmp_path: Path, fake: FakeExchange) -> None:
    cfg = daemon_config(fake, tmp_path / "state")
    service = await start(tmp_path, cfg)
    path = tmp_path / "moodring.yaml"
    try:
        await service.wait(lambda: service.sent("READY=1"), what="READY=1")
        await service.wait(lambda: service.port is not None, what="the HTTP port")
        status, body = await service.get("/healthz")
        assert status == 200, body
        health = json.loads(body)
        assert health["status"] == "ok" and set(health["feeds"]) == {"eth", "btc"}
        await service.wait(lambda: len(service.sent("WATCHDOG=1")) >= 3, what="watchdog pings")
        assert service.sent("STATUS="), "STATUS= tells the feed states"

        status, metrics = await service.get("/metrics")
        assert status == 200
        text = metrics.decode()
        assert re.search(r'moodring_ticks_total\{feed="eth"\} [1-9]', text), text[:2000]
        assert "moodring_outbox_depth" in text
        assert status == 200 and (await service.get("/nope"))[0] == 404

        # a valid change of a threshold: applied, no restart of anything
        cfg["rules"][0]["condition"] = {"below": 0.5}
        path.write_text(yaml.safe_dump(cfg))
        readies = len(service.sent("READY=1"))
        service.proc.send_signal(signal.SIGHUP)
        await service.wait(lambda: service.logged("reloaded"), what="the reload")
        assert service.sent("RELOADING=1\nMONOTONIC_USEC=")
        await service.wait(lambda: len(service.sent("READY=1")) > readies, what="READY after")

        # an invalid file: the old config keeps running, the error names the key
        cfg["rules"][0]["conditon"] = cfg["rules"][0].pop("condition")
        path.write_text(yaml.safe_dump(cfg))
        service.proc.send_signal(signal.SIGHUP)
        await service.wait(lambda: service.logged("reload failed"), what="the failed reload")
        assert service.logged("rules.0.conditon"), service.lines[-10:]
        _, metrics = await service.get("/metrics")
        assert "moodring_last_reload_success 0.0" in metrics.decode()

        # a changed window: a new engine, the bars carried over, feeds restarted
        cfg["rules"][0]["condition"] = cfg["rules"][0].pop("conditon")
        cfg["metrics"]["corr"]["window"] = 4
        path.write_text(yaml.safe_dump(cfg))
        reloaded = len(service.logged("reloaded"))
        service.proc.send_signal(signal.SIGHUP)
        await service.wait(lambda: len(service.logged("reloaded")) > reloaded, what="reload 2")
        ticks = len(service.logged("connected"))
        await service.wait(lambda: len(service.logged("connected")) >= ticks, what="feeds back")
        assert (await service.get("/healthz"))[0] == 200
        assert service.proc.returncode is None

        stopping = time.monotonic()
        service.proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(service.proc.wait(), 10)
        assert code == 0
        assert time.monotonic() - stopping < 5.0
        assert service.sent("STOPPING=1")
        assert not service.logged("Traceback"), "\n".join(service.lines)
    finally:
        await service.close()


async def test_a_broken_config_at_start_exits_78_and_names_the_key(tmp_path: Path) -> None:
    cfg = {
        "feeds": {"eth": {"symbol": "ETH/USDT", "stale_afer": "5m"}},
        "http": {"port": 0},
        # checked by the delivery worker: apprise is not loaded in `moodring run`
        "notify": {"urls": ["json://127.0.0.1:9/ok", "bogus://nothing-here"]},
    }
    service = await start(tmp_path, cfg)
    try:
        code = await asyncio.wait_for(service.proc.wait(), 60)
        await asyncio.sleep(0.2)
        assert code == 78
        assert service.logged("feeds.eth.stale_afer"), service.lines
        [bad_url] = service.logged("notify.urls.1.url")
        assert "apprise cannot use this bogus:// URL" in bad_url and "(line " in bad_url
        assert not service.logged("Traceback")
        assert not service.sent("READY=1")
    finally:
        await service.close()


async def test_the_http_port_taken_is_a_clear_error(tmp_path: Path, fake: FakeExchange) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        cfg = daemon_config(fake, tmp_path / "state")
        cfg["http"] = {"port": taken.getsockname()[1]}
        service = await start(tmp_path, cfg)
        try:
            code = await asyncio.wait_for(service.proc.wait(), 60)
            await asyncio.sleep(0.2)
            assert code == 78
            assert service.logged("http: cannot listen"), service.lines
        finally:
            await service.close()


async def test_the_daemon_publishes_on_mqtt(tmp_path: Path, fake: FakeExchange) -> None:
    binary, _ = ensure_mosquitto()
    broker = Mosquitto(binary, tmp_path)
    broker.start()
    try:
        cfg = daemon_config(fake, tmp_path / "state", below=2.0)  # fires on the first value
        cfg["mqtt"] = {
            "host": "127.0.0.1",
            "port": broker.port,
            "prefix": "mr",
            "forming_interval": "1s",
            "discovery": True,
        }
        async with Collector(broker.port, "#") as seen:
            async with Daemon(load_settings_dict(tmp_path, cfg)):
                await seen.wait_for(lambda c: "online" in c.texts("mr/status"), 60)
                await seen.wait_for(lambda c: bool(c.on("mr/alerts/decoupling")), 120)
                await seen.wait_for(
                    lambda c: (
                        any(not m["forming"] for m in c.jsons("mr/metrics/corr"))
                        and any(m["forming"] for m in c.jsons("mr/metrics/mfi"))
                    ),
                    60,
                )
                await seen.wait_for(lambda c: bool(c.on("mr/bars/eth/1m")), 60)
                # the next bar clock round after the alert tells Home Assistant it fires
                await seen.wait_for(
                    lambda c: [p["count"] for p in c.jsons("mr/firing")][-1:] == [1], 60
                )
            await seen.wait_for(lambda c: c.texts("mr/status")[-1:] == ["offline"], 10)
        alert = seen.jsons("mr/alerts/decoupling")[0]
        assert alert["rule"] == "decoupling" and alert["state"] == "firing"
        assert seen.on("mr/alerts/decoupling")[0].qos == 1
        bar = seen.jsons("mr/bars/eth/1m")[-1]
        assert bar["low"] <= bar["close"] <= bar["high"] and bar["t"] % 60_000 == 0
        # Home Assistant: the rule fires, both feeds are connected
        rule = seen.jsons("mr/rules/decoupling")[-1]
        assert (rule["state"], rule["firing"], rule["muted"]) == ("firing", True, False)
        assert seen.jsons("mr/firing")[-1]["rules"] == ["decoupling"]
        assert [seen.jsons(f"mr/feeds/{feed}")[-1]["state"] for feed in ("eth", "btc")] == [
            "ok",
            "ok",
        ]
        ha = {m.topic.value for m in seen.messages if m.topic.value.startswith("homeassistant/")}
        assert ha == {
            "homeassistant/sensor/mr_corr/config",
            "homeassistant/sensor/mr_mfi/config",
            "homeassistant/binary_sensor/mr_feed_eth/config",
            "homeassistant/binary_sensor/mr_feed_btc/config",
            "homeassistant/binary_sensor/mr_rule_decoupling/config",
            "homeassistant/sensor/mr_firing_rules/config",
        }
        # retained: a late subscriber still gets the latest values
        async with Collector(broker.port, "mr/metrics/#") as late:
            await late.wait_for(lambda c: bool(c.on("mr/metrics/corr")), 10)
            assert late.on("mr/metrics/corr")[0].retain
    finally:
        broker.stop()


def load_settings_dict(tmp_path: Path, cfg: dict) -> Settings:
    path = tmp_path / "mqtt.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return load_settings(path)


@pytest.mark.parametrize("keep_snapshot", [True, False], ids=["restored", "control"])
async def test_a_restart_restores_state_and_sends_nothing_twice(
    tmp_path: Path, fake: FakeExchange, monkeypatch: pytest.MonkeyPatch, keep_snapshot: bool
) -> None:
    # the capture is from 2024: every series would be too old for warm-up to join it up
    monkeypatch.setattr(daemon_module, "_fresh", lambda state: state)
    receiver = Receiver()
    cfg = daemon_config(fake, tmp_path / "state")
    cfg["rules"] = [{"name": "mfi-tick", "metric": "mfi", "condition": {"above": -1}, "on": "tick"}]
    cfg["notify"] = {"urls": [receiver.url()]}
    settings = load_settings_dict(tmp_path, cfg)
    snapshot = tmp_path / "state" / "snapshot.npz"

    async with Daemon(settings) as first:
        await until(lambda: len(receiver.payloads) == 1, timeout=90)
        # go on a bar: after the restart the tick rule sees later bars than it fired on
        eth = first.engine.builders("eth")[0].bars.time
        fired = eth.window()[-1] if len(eth.window()) else 0
        await until(lambda: eth.window()[-1] >= fired + 60_000, timeout=60)
    assert snapshot.is_file()
    values = first.engine.values()
    if not keep_snapshot:
        snapshot.unlink()

    second = Daemon(settings)
    if keep_snapshot:  # restored before the first tick: the values and the rule's state
        assert second.engine.values() == pytest.approx(values, nan_ok=True)
        assert second.engine.rules.status("mfi-tick").state == "firing"
    async with second:
        stats = second.parts[0].stats
        await until(lambda: stats.trades > 2000, timeout=90)
        await second.dispatcher.drain(5)
    titles = [p["title"] for p in receiver.payloads]
    assert len(titles) == (1 if keep_snapshot else 2), titles


def test_series_older_than_warm_up_reaches_are_not_restored() -> None:
    now = int(time.time() * 1000)
    minute, day = 60_000, 86_400_000

    def series(feed: str, tf: str, last: int, kept: int) -> SeriesState:
        times = np.array([last - i * Timeframe.parse(tf).ms for i in range(3)][::-1])
        return SeriesState(feed, tf, "id", kept, times, np.ones((3, 5)), None)

    state = EngineState(
        now,
        "fp",
        (
            series("eth", "1m", now - 10 * minute, kept=21),  # the warm-up fetches the 10 since
            series("btc", "1m", now - 1000 * minute, kept=21),  # past what one REST call fetches
            series("rut", "1d", now - 100 * day, kept=240),
        ),
        {},
    )
    kept = daemon_module._fresh(state).series
    assert [(s.feed, s.timeframe) for s in kept] == [("eth", "1m"), ("rut", "1d")]


async def test_the_daemon_sends_the_digest_with_its_chart(
    tmp_path: Path, fake: FakeExchange
) -> None:
    receiver = Receiver()
    cfg = daemon_config(fake, tmp_path / "state")
    cfg["notify"] = {"urls": [receiver.url()]}
    message = "corr {{ num(correlation.value) }}, MFI {{ num(mfi.value, 0) }}"
    cfg["digest"] = {"correlation": ["corr"], "mfi": "mfi", "message": message}
    async with Daemon(load_settings_dict(tmp_path, cfg)) as daemon:
        await until(lambda: not math.isnan(daemon.engine.values()["mfi"]), timeout=90)
        mfi = daemon.engine.values()["mfi"]
        daemon.send_digest(datetime.now(UTC))
        await until(lambda: bool(receiver.payloads), timeout=60)
    payload = receiver.payloads[0]
    assert payload["message"].endswith(f"MFI {mfi:.0f}"), payload["message"]
    png = base64.b64decode(payload["attachments"][0]["base64"])
    assert png.startswith(b"\x89PNG") and len(png) < 300_000


def _delivery_workers(parent: int) -> list[int]:
    """Return the pids of ``parent``'s delivery worker processes."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rpartition(")")[2].split()[1])
            cmdline = (stat.parent / "cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue
        if ppid == parent and b"moodring.delivery.worker" in cmdline:
            found.append(int(stat.parent.name))
    return found


async def test_apprise_stays_out_of_the_daemon_and_a_killed_send_is_retried_once(
    tmp_path: Path, fake: FakeExchange
) -> None:
    receiver = Receiver()
    receiver.mode = "hang"
    cfg = daemon_config(fake, tmp_path / "state")
    cfg["rules"] = [{"name": "mfi-tick", "metric": "mfi", "condition": {"above": -1}, "on": "tick"}]
    cfg["notify"] = {"urls": [receiver.url()], "retry_initial": "0.2s", "retry_max": "1s"}
    modules = tmp_path / "modules.txt"
    service = await start(tmp_path, cfg, modules_to=modules)
    try:
        await until(receiver.hung.is_set, timeout=90)
        [worker] = _delivery_workers(service.proc.pid)
        os.kill(worker, signal.SIGKILL)  # the alert's POST is in flight, unanswered
        await service.wait(
            lambda: service.logged("the delivery worker exited (killed by SIGKILL)"),
            what="the killed send failing, retryable",
        )
        receiver.mode = "ok"
        receiver.release.set()
        await service.wait(lambda: service.logged("(attempt 2)"), what="the retry going out")
        [sent] = service.logged("sent mfi-tick")
        assert "(attempt 2)" in sent
        assert len(receiver.payloads) == 1
        service.proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(service.proc.wait(), 30) == 0
    finally:
        receiver.release.set()
        await service.close()
    loaded = set(modules.read_text().split())
    assert "moodring.delivery.dispatcher" in loaded
    assert not {m for m in loaded if m.split(".")[0] == "apprise"}
    assert len(receiver.payloads) == 1
