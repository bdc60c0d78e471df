"""MqttPublisher against a real Mosquitto broker (installed with apt-get when missing)."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
from collections.abc import AsyncIterator, Iterator
from importlib import metadata
from pathlib import Path

import jinja2
import pytest
from pydantic import SecretStr

import moodring
from moodring.backoff import Backoff
from moodring.delivery.mqtt import MqttPublisher
from moodring.market.bar import Bar
from moodring.rules.alert import Alert
from moodring.settings import MqttConfig
from tests.support.mosquitto import (
    Collector,
    Mosquitto,
    TcpProxy,
    ensure_mosquitto,
    make_password_file,
    make_tls_files,
)

T0 = 1_700_000_040_000  # 2023-11-14T22:14:00Z
STATUS = "moodring/status"


@pytest.fixture(scope="session")
def mosquitto_tools() -> tuple[str, str]:
    return ensure_mosquitto()


@pytest.fixture
def broker(mosquitto_tools: tuple[str, str], tmp_path: Path) -> Iterator[Mosquitto]:
    server = Mosquitto(mosquitto_tools[0], tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def proxy(broker: Mosquitto) -> AsyncIterator[TcpProxy]:
    relay = TcpProxy(broker.port)
    await relay.listen()
    try:
        yield relay
    finally:
        await relay.close()


def config(port: int, **overrides: object) -> MqttConfig:
    return MqttConfig(host="127.0.0.1", port=port, **overrides)  # type: ignore[arg-type]


def fast_backoff() -> Backoff:
    return Backoff(0.1, 0.5)


def alert(rule: str, t: int, value: float = 1.5, chart: dict | None = None) -> Alert:
    return Alert(
        rule=rule,
        state="firing",
        time=t,
        metric="mfi",
        value=value,
        severity="warning",
        title=f"{rule} fired",
        message="MFI above 80",
        chart=chart,
    )


async def eventually(condition: object, timeout: float = 30.0) -> None:
    """Wait until the callable ``condition`` returns true."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "condition never became true"
        await asyncio.sleep(0.02)


async def test_topics_and_payloads(broker: Mosquitto) -> None:
    publisher = MqttPublisher(config(broker.port), backoff=fast_backoff())
    async with Collector(broker.port) as sub, publisher:
        await sub.wait_for(lambda s: s.texts(STATUS) == ["online"])
        publisher.metric("eth_mfi", 81.25, T0, closed=True)
        publisher.metric("ratio", math.nan, T0 + 500, closed=True)
        publisher.bar("eth", "1m", Bar(T0, 2000.5, 2010.0, 1995.25, 2005.0, 12.5))
        publisher.alert(alert("mfi_high", T0, chart={"big": list(range(1000))}))
        publisher.feed_state("eth", "stale", T0 + 1)
        publisher.publish("digest", {"count": 3}, retain=True, qos=1)
        await sub.wait_for(lambda s: len(s.on("moodring/digest")) == 1)

    assert sub.jsons("moodring/metrics/eth_mfi") == [
        {
            "name": "eth_mfi",
            "value": 81.25,
            "time": "2023-11-14T22:14:00Z",
            "t": T0,
            "forming": False,
        }
    ]
    assert sub.jsons("moodring/metrics/ratio") == [
        {
            "name": "ratio",
            "value": None,
            "time": "2023-11-14T22:14:00.500Z",
            "t": T0 + 500,
            "forming": False,
        }
    ]
    assert sub.jsons("moodring/bars/eth/1m") == [
        {
            "feed": "eth",
            "timeframe": "1m",
            "t": T0,
            "time": "2023-11-14T22:14:00Z",
            "open": 2000.5,
            "high": 2010.0,
            "low": 1995.25,
            "close": 2005.0,
            "volume": 12.5,
        }
    ]
    assert sub.jsons("moodring/alerts/mfi_high") == [
        {
            "rule": "mfi_high",
            "state": "firing",
            "time": T0,
            "metric": "mfi",
            "value": 1.5,
            "severity": "warning",
            "title": "mfi_high fired",
            "message": "MFI above 80",
            "time_iso": "2023-11-14T22:14:00Z",
        }
    ]
    assert sub.on("moodring/alerts/mfi_high")[0].qos == 1
    assert sub.jsons("moodring/feeds/eth") == [
        {"feed": "eth", "state": "stale", "t": T0 + 1, "time": "2023-11-14T22:14:00.001Z"}
    ]
    assert sub.jsons("moodring/digest") == [{"count": 3}]
    assert publisher.stats.published >= 6
    assert publisher.stats.dropped == 0


async def test_retained_values_reach_a_late_subscriber(broker: Mosquitto) -> None:
    publisher = MqttPublisher(config(broker.port), backoff=fast_backoff())
    async with publisher:
        async with Collector(broker.port) as first:
            publisher.metric("eth_mfi", 70.0, T0, closed=True)
            publisher.bar("eth", "1m", Bar(T0, 1.0, 2.0, 0.5, 1.5, 3.0))
            publisher.feed_state("eth", "ok", T0)
            publisher.alert(alert("mfi_high", T0))
            await first.wait_for(lambda s: len(s.on("moodring/feeds/eth")) == 1)
        async with Collector(broker.port) as late:
            topics = {
                STATUS,
                "moodring/metrics/eth_mfi",
                "moodring/bars/eth/1m",
                "moodring/feeds/eth",
            }
            await late.wait_for(lambda s: {m.topic.value for m in s.messages} >= topics)
            # a sentinel published after subscribing: everything retained arrived before it
            publisher.publish("sentinel", {}, retain=False)
            await late.wait_for(lambda s: len(s.on("moodring/sentinel")) == 1)
    retained = {m.topic.value: m.retain for m in late.messages}
    assert retained == {**dict.fromkeys(topics, True), "moodring/sentinel": False}
    assert late.jsons("moodring/metrics/eth_mfi")[0]["value"] == 70.0
    assert late.texts(STATUS) == ["online"]


async def test_forming_values_are_throttled_latest_wins(broker: Mosquitto) -> None:
    publisher = MqttPublisher(config(broker.port, forming_interval=2.0), backoff=fast_backoff())
    topic = "moodring/metrics/m"
    async with Collector(broker.port) as sub, publisher:
        await sub.wait_for(lambda s: s.texts(STATUS) == ["online"])
        # each block runs without yielding: far less than the interval passes inside one
        for value in range(1, 51):  # 1 goes at once, the rest are held back
            publisher.metric("m", float(value), T0, closed=False)
        await sub.wait_for(lambda s: len(s.on(topic)) == 1)
        publisher.metric("m", 70.0, T0, closed=True)  # closed: at once, and drops the held 50
        await sub.wait_for(lambda s: len(s.on(topic)) == 2)
        await asyncio.sleep(2.5)  # past the interval: a held-back 50 would show up now
        for value in range(80, 91):  # 80 goes at once, the latest held (90) after the interval
            publisher.metric("m", float(value), T0 + 60_000, closed=False)
        await sub.wait_for(lambda s: len(s.on(topic)) == 4)
        await asyncio.sleep(0.5)  # room for anything unexpected
    values = [(p["value"], p["forming"]) for p in sub.jsons(topic)]
    assert values == [(1.0, True), (70.0, False), (80.0, True), (90.0, True)]


async def test_will_says_offline_when_the_connection_dies(
    broker: Mosquitto, proxy: TcpProxy
) -> None:
    publisher = MqttPublisher(config(proxy.port, keepalive=5), backoff=fast_backoff())
    async with Collector(broker.port, STATUS) as sub, publisher:
        await sub.wait_for(lambda s: s.texts(STATUS) == ["online"])
        await proxy.close_listener()
        proxy.sever()  # no DISCONNECT packet: the broker publishes the will
        await sub.wait_for(lambda s: s.texts(STATUS) == ["online", "offline"])
        await eventually(lambda: not publisher.stats.connected)
        await proxy.listen()  # the publisher reconnects by itself
        await sub.wait_for(lambda s: s.texts(STATUS) == ["online", "offline", "online"])
    assert sub.texts(STATUS) == ["online", "offline", "online", "offline"]


async def test_clean_shutdown_publishes_offline(broker: Mosquitto) -> None:
    publisher = MqttPublisher(config(broker.port, client_id="moodring-clean"))
    async with Collector(broker.port, STATUS) as sub:
        async with publisher:
            await sub.wait_for(lambda s: s.texts(STATUS) == ["online"])
        await sub.wait_for(lambda s: s.texts(STATUS) == ["online", "offline"])
    assert not publisher.stats.connected
    # a clean DISCONNECT, so the `offline` above was published, not the will
    await eventually(lambda: "Received DISCONNECT from moodring-clean" in broker.logs())


async def test_broker_restart_delivers_queued_alerts_and_latest_values(
    broker: Mosquitto, proxy: TcpProxy
) -> None:
    publisher = MqttPublisher(config(proxy.port), backoff=fast_backoff())
    async with publisher:
        async with Collector(broker.port) as before:
            publisher.metric("m", 0.0, T0, closed=True)
            await before.wait_for(lambda s: len(s.on("moodring/metrics/m")) == 1)
        # keep the publisher out until the subscriber is back on the restarted broker
        await proxy.close_listener()
        broker.stop()
        await eventually(lambda: not publisher.stats.connected)

        for i in range(10):
            publisher.alert(alert("a", T0 + i * 60_000, value=float(i)))
            publisher.metric("m", float(i + 1), T0 + i * 60_000, closed=True)
            publisher.feed_state("eth", "stale" if i < 9 else "ok", T0 + i)
        publisher.publish("sentinel", {"last": True}, retain=True)  # the last value sent
        assert publisher.stats.queued_alerts == 10

        broker.start()
        async with Collector(broker.port) as after:
            await proxy.listen()
            await after.wait_for(lambda s: len(s.on("moodring/sentinel")) == 1)
            await asyncio.sleep(0.5)  # room for a duplicate to show up
    assert [p["value"] for p in after.jsons("moodring/alerts/a")] == [float(i) for i in range(10)]
    assert [p["value"] for p in after.jsons("moodring/metrics/m")] == [10.0]
    assert [p["state"] for p in after.jsons("moodring/feeds/eth")] == ["ok"]
    assert after.texts(STATUS) == ["online"]
    assert publisher.stats.queued_alerts == 0
    assert publisher.stats.dropped == 0


@pytest.mark.parametrize("kind", ["alert", "retained qos 1"])
async def test_message_lost_in_flight_is_sent_again(
    broker: Mosquitto, proxy: TcpProxy, kind: str
) -> None:
    publisher = MqttPublisher(config(proxy.port), backoff=fast_backoff())
    async with Collector(broker.port) as sub, publisher:
        await sub.wait_for(lambda s: s.texts(STATUS) == ["online"])
        proxy.blackhole = True  # the publisher sends, the broker never sees it nor acknowledges
        if kind == "alert":
            publisher.alert(alert("a", T0))
        else:
            publisher.publish("digest", {"n": 1}, retain=True, qos=1)
        await eventually(lambda: proxy.swallowed > 0)
        await proxy.close_listener()
        proxy.sever()
        proxy.blackhole = False
        await eventually(lambda: not publisher.stats.connected)
        await proxy.listen()
        topic = "moodring/alerts/a" if kind == "alert" else "moodring/digest"
        await sub.wait_for(lambda s: len(s.on(topic)) == 1)
        publisher.publish("sentinel", {}, retain=False)
        await sub.wait_for(lambda s: len(s.on("moodring/sentinel")) == 1)
    assert len(sub.on(topic)) == 1


async def test_broker_absent_at_start(
    mosquitto_tools: tuple[str, str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="moodring.mqtt")
    server = Mosquitto(mosquitto_tools[0], tmp_path)  # not started yet
    publisher = MqttPublisher(config(server.port), backoff=fast_backoff())
    try:
        async with publisher:
            publisher.metric("m", 5.0, T0, closed=True)
            publisher.alert(alert("a", T0))

            def retries() -> int:
                return sum("cannot connect" in r.getMessage() for r in caplog.records)

            await eventually(lambda: retries() >= 3)
            assert publisher.running
            server.start()
            await eventually(lambda: publisher.stats.connected)
            async with Collector(server.port) as sub:
                await sub.wait_for(lambda s: len(s.on("moodring/metrics/m")) == 1)
            await eventually(lambda: publisher.stats.queued_alerts == 0)
    finally:
        server.stop()
    assert sub.jsons("moodring/metrics/m")[0]["value"] == 5.0
    assert any("MQTT connected" in r.getMessage() for r in caplog.records)


async def test_username_and_password(
    mosquitto_tools: tuple[str, str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="moodring.mqtt")
    passwords = make_password_file(mosquitto_tools[1], tmp_path / "passwd", "mood", "s3cret")
    server = Mosquitto(mosquitto_tools[0], tmp_path, password_file=passwords)
    server.start()
    try:
        wrong = MqttPublisher(
            config(server.port, username="mood", password=SecretStr("nope")),
            backoff=fast_backoff(),
        )
        right = MqttPublisher(
            config(server.port, username="mood", password=SecretStr("s3cret"), prefix="ok"),
            backoff=fast_backoff(),
        )
        async with wrong:

            def refusals() -> list[logging.LogRecord]:
                return [r for r in caplog.records if "refused the connection" in r.getMessage()]

            await eventually(lambda: len(refusals()) >= 2)
            assert all(r.levelno == logging.ERROR for r in refusals())
            assert wrong.running
            assert not wrong.stats.connected
            async with (
                Collector(server.port, username="mood", password="s3cret") as sub,
                right,
            ):
                right.metric("m", 1.0, T0, closed=True)
                await sub.wait_for(lambda s: len(s.on("ok/metrics/m")) == 1)
    finally:
        server.stop()
    assert sub.texts("ok/status")[0] == "online"
    assert "moodring/status" not in {m.topic.value for m in sub.messages}
    assert "s3cret" not in caplog.text and "nope" not in caplog.text


async def test_tls(
    mosquitto_tools: tuple[str, str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="moodring.mqtt")
    ca, cert, key = make_tls_files(tmp_path)
    server = Mosquitto(mosquitto_tools[0], tmp_path, tls_files=(ca, cert, key))
    server.start()
    try:
        # the system's CAs do not know the test CA: refused, retried, never raised
        untrusted = MqttPublisher(config(server.port, tls=True), backoff=fast_backoff())
        trusted = MqttPublisher(config(server.port, tls=True, ca_file=ca), backoff=fast_backoff())
        async with untrusted:

            def failures() -> int:
                return sum("CERTIFICATE_VERIFY_FAILED" in r.getMessage() for r in caplog.records)

            await eventually(lambda: failures() >= 2)
            assert untrusted.running
            async with Collector(server.port, ca_file=ca) as sub, trusted:
                trusted.metric("m", 2.0, T0, closed=True)
                await sub.wait_for(lambda s: len(s.on("moodring/metrics/m")) == 1)
    finally:
        server.stop()
    assert not untrusted.stats.connected and untrusted.stats.published == 0


async def test_full_alert_queue_drops_the_oldest(
    broker: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="moodring.mqtt")
    publisher = MqttPublisher(config(broker.port, alert_queue=3), backoff=fast_backoff())
    for i in range(5):  # before run(): as if the broker were down
        publisher.alert(alert("a", T0 + i, value=float(i)))
    assert publisher.stats.dropped == 2
    assert publisher.stats.queued_alerts == 3
    assert sum("queue full" in r.getMessage() for r in caplog.records) == 1
    async with Collector(broker.port) as sub, publisher:
        await sub.wait_for(lambda s: len(s.on("moodring/alerts/a")) == 3)
    assert [p["value"] for p in sub.jsons("moodring/alerts/a")] == [2.0, 3.0, 4.0]


async def test_producers_never_raise(caplog: pytest.LogCaptureFixture) -> None:
    publisher = MqttPublisher(config(1))
    publisher.metric("m", "not a number", T0, closed=True)  # type: ignore[arg-type]
    publisher.publish("x", {"bad": object()})
    publisher.bar("eth", "1m", None)  # type: ignore[arg-type]
    assert publisher.stats.dropped == 3
    publisher.metric("odd/name+#", math.inf, T0, closed=True)
    publisher.publish("a/+/b", {"v": 1})
    assert publisher.stats.dropped == 3


# what Home Assistant's MQTT discovery documents: <prefix>/<component>/<object_id>/config,
# object_id in [a-zA-Z0-9_-], origin.name required, device.identifiers or connections
HA_TOPIC = re.compile(r"^ha/(sensor|binary_sensor)/([a-zA-Z0-9_-]+)/config$")
HA_KEYS = {
    "name",
    "unique_id",
    "state_topic",
    "value_template",
    "json_attributes_topic",
    "availability_topic",
    "payload_available",
    "payload_not_available",
    "device",
    "origin",
    "device_class",
    "state_class",
    "entity_category",
    "icon",
    "payload_on",
    "payload_off",
}


def installed_origin() -> dict[str, str]:
    """Return the origin an installed moodring sends: its homepage when its metadata has one."""
    found = {"name": "moodring", "sw_version": moodring.__version__}
    urls = metadata.metadata("moodring").get_all("Project-URL") or []
    homepage = [url.split(", ", 1)[1] for url in urls if url.startswith("Homepage, ")]
    if homepage:
        found["support_url"] = homepage[0]
    return found


ORIGIN = installed_origin()


def check_entity(topic: str, entity: dict) -> str:
    """Assert ``entity`` is a discovery config Home Assistant accepts; return its component."""
    found = HA_TOPIC.match(topic)
    assert found is not None, topic
    component, object_id = found.groups()
    assert set(entity) <= HA_KEYS, set(entity) - HA_KEYS
    assert entity["unique_id"] == object_id
    assert entity["origin"] == ORIGIN
    assert entity["device"] == {
        "identifiers": ["moodring"],
        "name": "moodring",
        "manufacturer": "moodring",
        "model": "moodring alert daemon",
        "sw_version": moodring.__version__,
    }
    assert (entity["availability_topic"], entity["payload_available"]) == (STATUS, "online")
    assert entity["payload_not_available"] == "offline"
    if component == "binary_sensor":
        assert (entity["payload_on"], entity["payload_off"]) == ("ON", "OFF")
    return component


def state_of(entity: dict, payload: str) -> str:
    """Return what Home Assistant makes of ``payload`` on the entity's state topic."""
    template = jinja2.Environment().from_string(entity["value_template"])
    return template.render(value_json=json.loads(payload), value=payload)


async def test_home_assistant_discovery(broker: Mosquitto) -> None:
    ha_config = config(broker.port, discovery=True, discovery_prefix="ha")
    publisher = MqttPublisher(ha_config, backoff=fast_backoff())
    publisher.announce(["eth_mfi", "eth/btc"], feeds=["eth", "spy"], rules=["mfi high"])
    publisher.metric("eth_mfi", 81.5, T0, closed=True)
    publisher.feed_state("eth", "stale", T0)
    publisher.feed_state("spy", "closed", T0)
    publisher.rule_state("mfi high", "firing", T0, firing=True, muted=False)
    publisher.firing_rules(["mfi high"], T0)
    async with Collector(broker.port) as sub, publisher:
        await sub.wait_for(lambda s: len(s.on("moodring/firing")) == 1)
        await sub.wait_for(
            lambda s: len([m for m in s.messages if HA_TOPIC.match(m.topic.value)]) == 6
        )
    configs = {
        m.topic.value: json.loads(m.payload) for m in sub.messages if HA_TOPIC.match(m.topic.value)
    }
    async with Collector(broker.port, "ha/#") as late:  # Home Assistant starting later
        await late.wait_for(lambda s: {m.topic.value for m in s.messages} == configs.keys())
    assert all(m.retain for m in late.messages)
    kinds = {topic: check_entity(topic, entity) for topic, entity in configs.items()}
    assert kinds == {
        "ha/sensor/moodring_eth_mfi/config": "sensor",
        "ha/sensor/moodring_eth_btc/config": "sensor",
        "ha/binary_sensor/moodring_feed_eth/config": "binary_sensor",
        "ha/binary_sensor/moodring_feed_spy/config": "binary_sensor",
        "ha/binary_sensor/moodring_rule_mfi_high/config": "binary_sensor",
        "ha/sensor/moodring_firing_rules/config": "sensor",
    }

    def shown(topic: str) -> str:
        entity = configs[topic]
        return state_of(entity, sub.texts(entity["state_topic"])[-1])

    mfi = configs["ha/sensor/moodring_eth_mfi/config"]
    assert (mfi["state_topic"], mfi["state_class"]) == ("moodring/metrics/eth_mfi", "measurement")
    assert shown("ha/sensor/moodring_eth_mfi/config") == "81.5"
    assert configs["ha/sensor/moodring_eth_btc/config"]["state_topic"] == "moodring/metrics/eth_btc"
    eth = configs["ha/binary_sensor/moodring_feed_eth/config"]
    assert (eth["device_class"], eth["state_topic"]) == ("connectivity", "moodring/feeds/eth")
    assert shown("ha/binary_sensor/moodring_feed_eth/config") == "OFF"  # stale
    assert shown("ha/binary_sensor/moodring_feed_spy/config") == "ON"  # market closed: fine
    rule = configs["ha/binary_sensor/moodring_rule_mfi_high/config"]
    assert (rule["name"], rule["state_topic"]) == ("mfi high", "moodring/rules/mfi high")
    assert shown("ha/binary_sensor/moodring_rule_mfi_high/config") == "ON"
    assert shown("ha/sensor/moodring_firing_rules/config") == "1"
    assert sub.jsons("moodring/firing")[-1]["rules"] == ["mfi high"]  # the sensor's attributes

    off = MqttPublisher(config(broker.port))
    off.announce(["eth_mfi"], feeds=["eth"], rules=["r"])
    assert off.stats.queued_alerts == 0 and not off._latest


async def test_home_assistant_online_announces_again(broker: Mosquitto) -> None:
    publisher = MqttPublisher(config(broker.port, discovery=True), backoff=fast_backoff())
    publisher.announce(["m"], feeds=["eth"], rules=["r"])
    topics = {
        "homeassistant/sensor/moodring_m/config",
        "homeassistant/binary_sensor/moodring_feed_eth/config",
        "homeassistant/binary_sensor/moodring_rule_r/config",
        "homeassistant/sensor/moodring_firing_rules/config",
    }
    async with Collector(broker.port, "homeassistant/+/+/config") as sub, publisher:
        await sub.wait_for(lambda s: sorted(m.topic.value for m in s.messages) == sorted(topics))
        # Home Assistant's birth message, as it sends it when it (re)starts
        await sub.client.publish("homeassistant/status", "online", qos=1)
        await sub.wait_for(lambda s: all(len(s.on(topic)) == 2 for topic in topics))


async def test_announce_removes_entities_that_are_gone(broker: Mosquitto) -> None:
    publisher = MqttPublisher(config(broker.port, discovery=True), backoff=fast_backoff())
    publisher.announce(["m"], feeds=["eth"], rules=["a", "b"])
    publisher.rule_state("b", "inactive", T0, firing=False, muted=False)
    gone = ["homeassistant/binary_sensor/moodring_rule_b/config", "moodring/rules/b"]
    async with Collector(broker.port) as sub, publisher:
        await sub.wait_for(lambda s: all(len(s.on(topic)) == 1 for topic in gone))
        publisher.announce(["m"], feeds=["eth"], rules=["a"])  # a reload dropped rule b
        await sub.wait_for(lambda s: all(len(s.on(topic)) == 2 for topic in gone))
        assert [sub.texts(topic)[-1] for topic in gone] == ["", ""]  # retained message deleted
        # the configs still there were sent again as they are, not deleted
        kept = "homeassistant/binary_sensor/moodring_rule_a/config"
        assert all(text for text in sub.texts(kept))


async def test_a_restarted_broker_gets_the_retained_messages_again(broker: Mosquitto) -> None:
    publisher = MqttPublisher(config(broker.port, discovery=True), backoff=fast_backoff())
    publisher.announce(["m"])
    publisher.metric("m", 5.0, T0, closed=True)
    topics = {"homeassistant/sensor/moodring_m/config", "moodring/metrics/m", STATUS}
    async with publisher:
        async with Collector(broker.port) as before:
            await before.wait_for(lambda s: {m.topic.value for m in s.messages} >= topics)
        published = publisher.stats.published
        broker.restart()  # persistence off: the broker forgot every retained message
        # published anew once reconnected (a fast reconnect hides the time it was down)
        await eventually(lambda: publisher.stats.published >= published + len(topics))
        async with Collector(broker.port) as late:
            await late.wait_for(lambda s: {m.topic.value for m in s.messages} >= topics)
    assert late.jsons("moodring/metrics/m")[0]["value"] == 5.0
    assert all(m.retain for m in late.messages)


async def test_run_returns_at_once_without_a_host() -> None:
    publisher = MqttPublisher(MqttConfig())
    publisher.metric("m", 1.0, T0, closed=True)
    await asyncio.wait_for(publisher.run(), timeout=10)
    assert not publisher.stats.connected


def test_payload_json_is_compact() -> None:
    from moodring.delivery.mqtt import metric_payload

    text = metric_payload("m", 1.0, T0, closed=False)
    assert " " not in text
    assert json.loads(text)["forming"] is True
