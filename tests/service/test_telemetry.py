"""Telemetry, the loop-lag monitor and the /metrics + /healthz server, over real loopback HTTP."""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from moodring import __version__
from moodring.feeds.frames import BadFrames
from moodring.service.telemetry import HttpEndpoint, Telemetry, watch_loop_lag
from moodring.settings import HttpConfig

CONFIG = HttpConfig(host="127.0.0.1", port=0)
NOW = 1_700_000_000.0


class Clock:
    """A settable epoch clock."""

    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def raw(port: int, data: bytes, *, timeout: float = 10.0) -> bytes:
    """Send raw bytes, return everything the server sends until it closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()
        await writer.wait_closed()


def split(response: bytes) -> tuple[int, dict[str, str], bytes]:
    """Split a raw HTTP response into status, headers (lower-case names) and body."""
    head, _, body = response.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0].startswith("HTTP/1."), lines[0]
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, body


async def get(port: int, path: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    """Make one request (the connection closed after it) and return status, headers, body."""
    request = (
        f"{method} {path} HTTP/1.1\r\nHost: localhost\r\nUser-Agent: test\r\n"
        "Connection: close\r\n\r\n"
    )
    return split(await raw(port, request.encode()))


async def fetch(port: int, path: str) -> tuple[int, str, bytes]:
    """GET a path with urllib (in a thread); return status, content type and body."""

    def run() -> tuple[int, str, bytes]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
                return resp.status, resp.headers["Content-Type"], resp.read()
        except urllib.error.HTTPError as err:
            with err:
                return err.code, err.headers["Content-Type"], err.read()

    return await asyncio.to_thread(run)


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Parse an exposition into {(sample name, labels): value}."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def key(name: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
    """Return the samples() key of a sample."""
    return name, frozenset(labels.items())


@pytest.fixture
def states() -> dict[str, str]:
    return {"eth": "ok", "iwm": "closed"}


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def telemetry(states: dict[str, str], clock: Clock) -> Telemetry:
    frames = BadFrames()
    frames.add("eth", "bad number")
    frames.add("eth", "bad number")
    frames.add("iwm", "missing field")
    return Telemetry(
        bad_frames=frames.counts,
        feed_states=lambda: states,
        outbox_depth=lambda: 5,
        alerts_queued=lambda: 2,
        clock=clock,
    )


@pytest.fixture
async def server(telemetry: Telemetry) -> AsyncIterator[HttpEndpoint]:
    async with HttpEndpoint(CONFIG, telemetry, timeout=2.0) as srv:
        yield srv


async def test_metrics_exports_every_family(
    telemetry: Telemetry, server: HttpEndpoint, clock: Clock
) -> None:
    for _ in range(3):
        telemetry.tick("eth", at=NOW - 2.5)
    telemetry.tick("iwm")
    clock.now = NOW + 4.0
    telemetry.observe_update(3e-6)
    telemetry.observe_update(2e-3)
    telemetry.alert_sent("t1")
    telemetry.alert_sent("t1")
    telemetry.alert_failed("t2")
    telemetry.reconnect("eth")
    telemetry.reload(True)
    telemetry.reload(False)
    telemetry.record_loop_lag(0.125)

    assert server.port
    status, ctype, body = await fetch(server.port, "/metrics")
    assert status == 200
    assert ctype.startswith("text/plain; version=")
    got = samples(body.decode())

    assert got[key("moodring_ticks_total", feed="eth")] == 3
    assert got[key("moodring_ticks_total", feed="iwm")] == 1
    assert got[key("moodring_bad_frames_total", feed="eth", reason="bad number")] == 2
    assert got[key("moodring_bad_frames_total", feed="iwm", reason="missing field")] == 1
    assert got[key("moodring_feed_lag_seconds", feed="eth")] == pytest.approx(6.5)
    assert got[key("moodring_feed_lag_seconds", feed="iwm")] == pytest.approx(4.0)
    assert got[key("moodring_feed_state", feed="eth", state="ok")] == 1
    assert got[key("moodring_feed_state", feed="eth", state="stale")] == 0
    assert got[key("moodring_feed_state", feed="iwm", state="closed")] == 1
    assert got[key("moodring_feed_state", feed="iwm", state="ok")] == 0
    assert got[key("moodring_metric_update_seconds_count")] == 2
    assert got[key("moodring_metric_update_seconds_bucket", le="5e-06")] == 1
    assert got[key("moodring_metric_update_seconds_sum")] == pytest.approx(2.003e-3)
    assert got[key("moodring_alerts_sent_total", target="t1")] == 2
    assert got[key("moodring_alerts_failed_total", target="t2")] == 1
    assert key("moodring_alerts_sent_total", target="t2") not in got
    assert got[key("moodring_alerts_queued")] == 2
    assert got[key("moodring_outbox_depth")] == 5
    assert got[key("moodring_event_loop_lag_seconds")] == 0.125
    assert got[key("moodring_event_loop_lag_distribution_seconds_count")] == 1
    assert got[key("moodring_reconnects_total", feed="eth")] == 1
    assert got[key("moodring_up")] == 1
    assert got[key("moodring_build_info", version=__version__)] == 1
    assert got[key("moodring_last_reload_success")] == 0
    assert got[key("moodring_config_reloads_total", result="success")] == 1
    assert got[key("moodring_config_reloads_total", result="failure")] == 1


async def test_bad_frames_are_read_live_at_scrape() -> None:
    counts: Counter[tuple[str, str]] = Counter()
    telemetry = Telemetry(bad_frames=counts)
    async with HttpEndpoint(CONFIG, telemetry) as server:
        assert server.port
        counts["eth", "bad timestamp"] += 7
        status, _, body = await get(server.port, "/metrics")
    assert status == 200
    got = samples(body.decode())
    assert got[key("moodring_bad_frames_total", feed="eth", reason="bad timestamp")] == 7


async def test_unwired_sources_are_left_out_and_a_failing_one_is_skipped() -> None:
    def broken() -> int:
        raise RuntimeError("database is locked")

    telemetry = Telemetry(outbox_depth=broken)
    telemetry.tick("eth")
    async with HttpEndpoint(CONFIG, telemetry) as server:
        assert server.port
        status, _, body = await get(server.port, "/metrics")
    assert status == 200
    names = {name for name, _ in samples(body.decode())}
    assert "moodring_outbox_depth" not in names
    assert "moodring_alerts_queued" not in names
    assert "moodring_ticks_total" in names


async def test_two_telemetries_do_not_share_a_registry() -> None:
    one, two = Telemetry(), Telemetry()
    one.tick("eth")
    assert one.registry.get_sample_value("moodring_ticks_total", {"feed": "eth"}) == 1
    assert two.registry.get_sample_value("moodring_ticks_total", {"feed": "eth"}) is None


async def test_healthz_starting_then_ok(telemetry: Telemetry, server: HttpEndpoint) -> None:
    assert server.port
    status, ctype, body = await fetch(server.port, "/healthz")
    assert (status, ctype) == (503, "application/json")
    assert json.loads(body)["status"] == "starting"

    telemetry.mark_ready()
    telemetry.record_loop_lag(0.01)
    status, ctype, body = await fetch(server.port, "/healthz")
    assert (status, ctype) == (200, "application/json")
    doc = json.loads(body)
    assert doc["status"] == "ok"
    assert doc["feeds"] == {"eth": "ok", "iwm": "closed"}
    assert doc["loop_lag_s"] == 0.01
    assert doc["outbox_depth"] == 5
    assert 0 <= doc["uptime_s"] < 600


async def test_healthz_unhealthy_with_a_stale_feed(
    telemetry: Telemetry, server: HttpEndpoint, states: dict[str, str]
) -> None:
    telemetry.mark_ready()
    states["eth"] = "stale"
    assert server.port
    status, _, body = await get(server.port, "/healthz")
    assert status == 503
    doc = json.loads(body)
    assert doc["status"] == "unhealthy"
    assert doc["feeds"]["eth"] == "stale"

    states["eth"] = "ok"
    status, _, _ = await get(server.port, "/healthz")
    assert status == 200


async def test_custom_health_callable(telemetry: Telemetry) -> None:
    async with HttpEndpoint(CONFIG, telemetry, health=lambda: (False, {"why": "test"})) as server:
        assert server.port
        status, _, body = await get(server.port, "/healthz")
    assert status == 503
    assert json.loads(body) == {"why": "test"}


async def test_head_404_405_and_connection_close(server: HttpEndpoint) -> None:
    assert server.port
    status, headers, body = await get(server.port, "/healthz", method="HEAD")
    assert status == 503
    assert int(headers["content-length"]) > 0
    assert body == b""
    assert headers["connection"] == "close"

    status, _, _ = await get(server.port, "/nope")
    assert status == 404
    status, _, _ = await get(server.port, "/metrics?x=1")
    assert status == 200

    status, headers, _ = await get(server.port, "/metrics", method="DELETE")
    assert status == 405
    posted = (
        b"POST /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 5\r\n\r\nhello"
    )
    status, _, _ = split(await raw(server.port, posted))
    assert status == 405


async def test_post_with_urllib_gets_405(server: HttpEndpoint) -> None:
    assert server.port
    url = f"http://127.0.0.1:{server.port}/healthz"

    def post() -> int:
        try:
            with urllib.request.urlopen(url, data=b"{}", timeout=10) as resp:
                return resp.status
        except urllib.error.HTTPError as err:
            with err:
                return err.code

    assert await asyncio.to_thread(post) == 405


@pytest.mark.parametrize(
    "garbage",
    [
        b"\x00\xff\xfe garbage\r\n\r\n",
        b"GET\r\n\r\n",
        b"GET /metrics SPDY/9\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\nno colon here\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\n" + b"X-Long: " + b"a" * 20_000 + b"\r\n\r\n",
    ],
)
async def test_garbage_gets_400_and_the_server_lives_on(
    server: HttpEndpoint, garbage: bytes
) -> None:
    assert server.port
    response = await raw(server.port, garbage)
    if response:  # an over-long line may be dropped without an answer
        assert split(response)[0] == 400
    status, _, _ = await get(server.port, "/metrics")
    assert status == 200


async def test_idle_and_half_sent_clients_do_not_block_others(server: HttpEndpoint) -> None:
    assert server.port
    idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", server.port)
    half_reader, half_writer = await asyncio.open_connection("127.0.0.1", server.port)
    half_writer.write(b"GET /metr")
    await half_writer.drain()
    try:
        status, _, _ = await asyncio.wait_for(get(server.port, "/metrics"), 1.5)
        assert status == 200
        # The server drops both once its 2 s timeout passes.
        assert await asyncio.wait_for(idle_reader.read(), 10) == b""
        assert await asyncio.wait_for(half_reader.read(), 10) == b""
    finally:
        for writer in (idle_writer, half_writer):
            writer.close()
    status, _, _ = await get(server.port, "/healthz")
    assert status == 503


async def test_client_vanishing_mid_request(server: HttpEndpoint) -> None:
    assert server.port
    _, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET /metrics HTTP/1.1\r\nHost")
    await writer.drain()
    writer.close()
    await writer.wait_closed()
    status, _, _ = await get(server.port, "/metrics")
    assert status == 200


async def test_exit_closes_open_connections_and_the_port(
    telemetry: Telemetry, caplog: pytest.LogCaptureFixture
) -> None:
    async with HttpEndpoint(CONFIG, telemetry, timeout=60.0) as server:
        assert server.port
        port = server.port
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await asyncio.sleep(0.05)  # let the server accept it
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)
    await asyncio.sleep(0.05)  # the loop reports failed handler tasks from a callback
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


async def test_disabled_serves_nothing(telemetry: Telemetry) -> None:
    async with HttpEndpoint(HttpConfig(enabled=False, port=0), telemetry) as server:
        assert server.port is None


async def test_loop_lag_monitor_sees_a_blocked_loop() -> None:
    telemetry = Telemetry()
    interval, block = 0.2, 0.6
    watcher = asyncio.create_task(watch_loop_lag(telemetry, interval))
    try:
        await asyncio.sleep(0)  # the watcher starts its first sleep
        time.sleep(block)  # blocking the loop is the point
        # Fires before the watcher's next check (interval later), after the late wake-up.
        await asyncio.sleep(0.05)
        assert telemetry.loop_lag >= block - interval - 0.05
        gauge = telemetry.registry.get_sample_value("moodring_event_loop_lag_seconds")
        assert gauge == telemetry.loop_lag
        name = "moodring_event_loop_lag_distribution_seconds"
        assert telemetry.registry.get_sample_value(f"{name}_count") == 1
        assert telemetry.registry.get_sample_value(f"{name}_bucket", {"le": "0.1"}) == 0
        await asyncio.sleep(interval * 2.5)  # unblocked: later checks are on time
        assert telemetry.loop_lag < block - interval - 0.05
        assert telemetry.registry.get_sample_value(f"{name}_count") >= 2
    finally:
        watcher.cancel()
        with pytest.raises(asyncio.CancelledError):
            await watcher


async def test_metrics_speak_openmetrics_and_gzip_when_asked(server: HttpEndpoint) -> None:
    assert server.port
    request = (
        "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
        "Accept: application/openmetrics-text; version=1.0.0\r\nAccept-Encoding: gzip\r\n\r\n"
    )
    status, headers, body = split(await raw(server.port, request.encode()))
    assert status == 200
    assert headers["content-type"].startswith("application/openmetrics-text; version=1.0.0")
    assert headers["content-encoding"] == "gzip"
    text = gzip.decompress(body).decode()
    assert text.endswith("# EOF\n")
    assert "moodring_up 1.0" in text
