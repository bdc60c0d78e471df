"""Publish metrics, bars, alerts and feed states to an MQTT broker.

Topics (``P`` is ``MqttConfig.prefix``), all payloads compact JSON unless noted:

- ``P/status``: plain ``online`` / ``offline``, retained, QoS 1; ``offline`` is also the will.
- ``P/metrics/<name>``: ``{"name","value","time","t","forming"}``, retained.
- ``P/bars/<feed>/<timeframe>``: ``{"feed","timeframe","t","time","open","high","low","close",
  "volume"}``, retained.
- ``P/alerts/<rule>``: the alert's fields except ``chart``, plus ``time_iso``; QoS 1, not retained.
- ``P/feeds/<feed>``: ``{"feed","state","t","time"}``, retained.
- ``P/rules/<rule>``: ``{"rule","state","firing","muted","t","time"}``, retained; ``state`` is
  ``inactive``, ``pending`` or ``firing``, ``firing`` whether the rule fires now.
- ``P/firing``: ``{"count","rules","t","time"}``, retained: the rules firing now, by name.
- With ``discovery``, Home Assistant discovery configs (see ``homeassistant.py``), retained;
  they are sent again whenever Home Assistant says ``online`` on ``discovery_status_topic``.

``t`` is epoch milliseconds (UTC; a bar's open time), ``time`` the same as ISO-8601 UTC, and a
value that is not a finite number is ``null``. In a topic, ``/``, ``+`` and ``#`` in a name
become ``_``.

Delivery: a retained message only matters as the latest value of its topic, so while the broker
is away (or busy) only the latest one per topic is kept; a non-retained message (an alert) is an
event, so those are queued in order, up to ``alert_queue``, dropping the oldest. Each new
connection sends the latest retained message of every topic again (a restarted broker may have
lost them).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import math
import ssl
import time
from collections import deque
from collections.abc import Iterable
from typing import Any

import aiomqtt
from aiomqtt.exceptions import MqttConnectError

from moodring.backoff import Backoff
from moodring.delivery.homeassistant import discovery_configs
from moodring.lifecycle import Component, first_completed
from moodring.market.bar import Bar
from moodring.rules.alert import Alert
from moodring.settings import MqttConfig
from moodring.times import iso_time

log = logging.getLogger("moodring.mqtt")

ONLINE = "online"
OFFLINE = "offline"
SHUTDOWN_TIMEOUT = 0.5  # seconds for each of: publishing `offline`, then disconnecting
CLIENT_TIMEOUT = 10.0  # seconds aiomqtt waits for CONNACK, PUBACK and the like
_ALERT_FIELDS = tuple(f.name for f in dataclasses.fields(Alert) if f.name != "chart")
# characters a topic level must not contain: MQTT wildcards, NUL, and `/` (a level separator)
_TOPIC_UNSAFE = str.maketrans({"+": "_", "#": "_", "\0": "_", "/": "_"})


@dataclasses.dataclass
class MqttStats:
    """Counters for monitoring: messages published, dropped, alerts queued, connection up."""

    published: int = 0
    dropped: int = 0  # alerts pushed out of a full queue, or messages the broker cannot take
    queued_alerts: int = 0  # alerts (non-retained messages) waiting to be sent
    connected: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class _Message:
    topic: str
    payload: str
    qos: int = 0
    retain: bool = True


def _level(name: str) -> str:
    """Return ``name`` made safe as one topic level."""
    return name.translate(_TOPIC_UNSAFE) or "_"


def _number(value: float) -> float | None:
    """Return ``value`` as a float, or None when it is NaN or infinite (JSON has neither)."""
    number = float(value)
    return number if math.isfinite(number) else None


def _dumps(payload: dict[str, Any]) -> str:
    """Serialise a payload compactly; NaN or infinity raise rather than emit invalid JSON."""
    return json.dumps(payload, separators=(",", ":"), allow_nan=False)


def metric_payload(name: str, value: float, t_ms: int, *, closed: bool) -> str:
    """Return the JSON payload of a metric value."""
    t = int(t_ms)
    return _dumps(
        {"name": name, "value": _number(value), "time": iso_time(t), "t": t, "forming": not closed}
    )


def bar_payload(feed: str, timeframe: str, bar: Bar) -> str:
    """Return the JSON payload of a bar."""
    t = int(bar.time)
    return _dumps(
        {
            "feed": feed,
            "timeframe": timeframe,
            "t": t,
            "time": iso_time(t),
            "open": _number(bar.open),
            "high": _number(bar.high),
            "low": _number(bar.low),
            "close": _number(bar.close),
            "volume": _number(bar.volume),
        }
    )


def alert_payload(alert: Alert) -> str:
    """Return the JSON payload of an alert: its fields without ``chart``, plus ``time_iso``."""
    data: dict[str, Any] = {name: getattr(alert, name) for name in _ALERT_FIELDS}
    data["value"] = _number(alert.value)
    data["time_iso"] = iso_time(alert.time)
    return _dumps(data)


def feed_payload(feed: str, state: str, t_ms: int) -> str:
    """Return the JSON payload of a feed state."""
    t = int(t_ms)
    return _dumps({"feed": feed, "state": state, "t": t, "time": iso_time(t)})


def rule_payload(rule: str, state: str, t_ms: int, *, firing: bool, muted: bool) -> str:
    """Return the JSON payload of a rule's state."""
    t = int(t_ms)
    data = {"rule": rule, "state": state, "firing": firing, "muted": muted}
    return _dumps({**data, "t": t, "time": iso_time(t)})


def firing_payload(rules: Iterable[str], t_ms: int) -> str:
    """Return the JSON payload of the rules firing now."""
    t, names = int(t_ms), list(rules)
    return _dumps({"count": len(names), "rules": names, "t": t, "time": iso_time(t)})


class MqttPublisher(Component):
    """Publishes to MQTT: synchronous never-failing producers, and a connection that sends.

    ``async with publisher:`` runs the connection (``run()``); leaving the block publishes
    ``offline`` and disconnects. Producers must be called from the event loop's thread.
    """

    def __init__(self, config: MqttConfig, *, backoff: Backoff | None = None) -> None:
        self.config = config
        self.prefix = config.prefix.rstrip("/")
        self.status_topic = f"{self.prefix}/status"
        self.stats = MqttStats()
        self._backoff = backoff or Backoff(1.0, 60.0)
        self._latest: dict[str, _Message] = {}  # retained: only the latest per topic matters
        self._events: deque[_Message] = deque()  # not retained (alerts): every one, in order
        self._wake = asyncio.Event()
        self._forming_due: dict[str, float] = {}  # metric -> clock time its next forming may go
        self._forming_held: dict[str, tuple[float, int]] = {}  # metric -> latest held back
        self._forming_timers: dict[str, asyncio.TimerHandle] = {}
        self._dropping = False  # a full-queue warning was logged since the queue last drained
        self._metric_topics: dict[str, str] = {}
        self._was_connected = False  # the current connection attempt got through
        self._retained: dict[str, _Message] = {}  # the latest retained message of each topic
        self._discovery: dict[str, _Message] = {}  # Home Assistant configs, by topic
        self._feeds: list[str] = []  # the feeds and rules of the latest announce()
        self._rules: list[str] = []
        self._feed_states: dict[str, str] = {}  # the latest state put, per feed and rule
        self._rule_states: dict[str, tuple[str, bool, bool]] = {}
        self._firing: list[str] | None = None

    # -- producers: synchronous, O(1), never raise ------------------------------------------

    def metric(self, name: str, value: float, t_ms: int, *, closed: bool) -> None:
        """Publish a metric value; a not closed one at most once per ``forming_interval``."""
        try:
            if closed:
                # a closed-bar value supersedes any forming value still held back
                self._forming_held.pop(name, None)
                self._put_metric(name, value, t_ms, closed=True)
                return
            now = time.monotonic()
            due = self._forming_due.get(name, -math.inf)
            if now >= due:
                self._forming_held.pop(name, None)
                self._forming_due[name] = now + self.config.forming_interval
                self._put_metric(name, value, t_ms, closed=False)
                return
            self._forming_held[name] = (value, t_ms)
            if name not in self._forming_timers:
                with contextlib.suppress(RuntimeError):  # no loop: the next value after due goes
                    loop = asyncio.get_running_loop()
                    self._forming_timers[name] = loop.call_later(due - now, self._release, name)
        except Exception:
            self._failed("metric " + repr(name))

    def bar(self, feed: str, timeframe: str, bar: Bar) -> None:
        """Publish a feed's latest bar of a timeframe (retained)."""
        try:
            topic = f"{self.prefix}/bars/{_level(feed)}/{_level(timeframe)}"
            self._put(_Message(topic, bar_payload(feed, timeframe, bar), 0, True))
        except Exception:
            self._failed(f"bar {feed!r} {timeframe!r}")

    def alert(self, alert: Alert) -> None:
        """Queue an alert for ``<prefix>/alerts/<rule>`` (QoS 1, not retained)."""
        try:
            topic = f"{self.prefix}/alerts/{_level(alert.rule)}"
            self._put(_Message(topic, alert_payload(alert), 1, False))
        except Exception:
            self._failed("alert " + repr(alert.rule))

    def feed_state(self, feed: str, state: str, t_ms: int) -> None:
        """Publish a feed's state (``ok``, ``stale`` or ``closed``, retained) if it changed."""
        try:
            if self._feed_states.get(feed) == state:
                return
            self._feed_states[feed] = state
            message = _Message(self._state_topic("feeds", feed), feed_payload(feed, state, t_ms))
            self._put(message)
        except Exception:
            self._failed("feed state " + repr(feed))

    def rule_state(self, rule: str, state: str, t_ms: int, *, firing: bool, muted: bool) -> None:
        """Publish a rule's state (retained) if it changed."""
        try:
            if self._rule_states.get(rule) == (state, firing, muted):
                return
            self._rule_states[rule] = (state, firing, muted)
            payload = rule_payload(rule, state, t_ms, firing=firing, muted=muted)
            self._put(_Message(self._state_topic("rules", rule), payload))
        except Exception:
            self._failed("rule state " + repr(rule))

    def firing_rules(self, rules: Iterable[str], t_ms: int) -> None:
        """Publish the names of the rules firing now (retained) if they changed."""
        try:
            names = list(rules)
            if names == self._firing:
                return
            self._firing = names
            self._put(_Message(self._state_topic("firing", ""), firing_payload(names, t_ms)))
        except Exception:
            self._failed("firing rules")

    def publish(
        self, topic_suffix: str, payload: dict[str, Any], *, retain: bool = False, qos: int = 0
    ) -> None:
        """Publish a JSON payload to ``<prefix>/<topic_suffix>``; retained ones are latest-wins."""
        try:
            levels = "/".join(_level(level) for level in topic_suffix.strip("/").split("/"))
            self._put(_Message(f"{self.prefix}/{levels}", _dumps(payload), int(qos), retain))
        except Exception:
            self._failed("message " + repr(topic_suffix))

    def announce(
        self, metric_names: Iterable[str], *, feeds: Iterable[str] = (), rules: Iterable[str] = ()
    ) -> None:
        """Say which metrics, feeds and rules there are (at start, and after a reload).

        With ``discovery`` on, publishes their Home Assistant discovery configs and removes the
        entities no longer there. The retained states of feeds and rules gone since the last
        call are cleared.
        """
        try:
            feeds, rules = list(feeds), list(rules)
            for kind, gone in (
                ("feeds", set(self._feeds) - set(feeds)),
                ("rules", set(self._rules) - set(rules)),
            ):
                for name in sorted(gone):
                    self._clear(self._state_topic(kind, name))
                    (self._feed_states if kind == "feeds" else self._rule_states).pop(name, None)
            self._feeds, self._rules = feeds, rules
            if not self.config.discovery:
                return
            configs = discovery_configs(
                self.config,
                self._state_topic,
                self.status_topic,
                metrics=metric_names,
                feeds=feeds,
                rules=rules,
            )
            for topic in self._discovery.keys() - configs.keys():
                self._clear(topic)
            self._discovery = {
                topic: _Message(topic, _dumps(config), 1, True) for topic, config in configs.items()
            }
            for message in self._discovery.values():
                self._put(message)
        except Exception:
            self._failed("discovery")

    # -- the connection -------------------------------------------------------------------

    async def _setup(self) -> None:
        self.spawn(self.run(), name="mqtt")

    async def run(self) -> None:
        """Connect, send everything pending as it comes, reconnect on errors; until cancelled."""
        if self.config.host is None:
            log.info("MQTT is off (no host configured)")
            return
        where = f"{self.config.host}:{self.config.port}"
        while True:
            self._was_connected = False
            level, problem = logging.WARNING, "cannot connect"
            try:
                await self._session()
            except MqttConnectError as exc:
                level, problem = logging.ERROR, f"refused the connection ({exc})"
            except aiomqtt.MqttError as exc:
                lost = "connection lost" if self._was_connected else "cannot connect"
                problem = f"{lost} ({exc})"
            except Exception as exc:
                # a broker problem must never stop the daemon: TLS, DNS, odd socket errors
                level, problem = logging.ERROR, f"failed ({type(exc).__name__}: {exc})"
            delay = self._backoff.next()
            log.log(
                level,
                "MQTT broker %s %s; retry %d in %.1fs (%d alerts, %d values pending)",
                where,
                problem,
                self._backoff.attempt,
                delay,
                len(self._events),
                len(self._latest),
            )
            await asyncio.sleep(delay)

    async def _session(self) -> None:
        """Run one connection: connect, say online, send until it breaks or is cancelled."""
        client = self._client()
        async with client:
            self.stats.connected = self._was_connected = True
            self._backoff.reset()
            log.info("MQTT connected to %s:%d", self.config.host, self.config.port)
            try:
                await client.publish(self.status_topic, ONLINE, qos=1, retain=True)
                self.stats.published += 1
                for topic, message in self._retained.items():
                    self._latest.setdefault(topic, message)  # a new broker may have lost them
                if self.config.discovery:
                    await client.subscribe(self.config.discovery_status_topic, qos=1)
                await self._serve(client)
            except asyncio.CancelledError:
                await self._goodbye(client)
                raise
            finally:
                self.stats.connected = False

    async def _serve(self, client: aiomqtt.Client) -> None:
        """Send until the connection drops (raising MqttError)."""
        await first_completed(self._send_forever(client), self._watch(client))
        raise aiomqtt.MqttError("connection ended")

    async def _watch(self, client: aiomqtt.Client) -> None:
        """Announce again when Home Assistant says online; raise MqttError when the link drops."""
        async for message in client.messages:
            raw = message.payload
            text = (
                bytes(raw).decode(errors="replace") if isinstance(raw, bytes | bytearray) else raw
            )
            if text == ONLINE and message.topic.matches(self.config.discovery_status_topic):
                log.info(
                    "Home Assistant is online: announcing %d entities again", len(self._discovery)
                )
                for discovery in self._discovery.values():
                    self._put(discovery)

    async def _send_forever(self, client: aiomqtt.Client) -> None:
        """Send what is pending, then wait for more."""
        while True:
            self._wake.clear()
            await self._drain(client)
            await self._wake.wait()

    async def _drain(self, client: aiomqtt.Client) -> None:
        """Send the queued alerts in order, then the latest retained values."""
        while self._events:
            message = self._events[0]
            # leave it queued until the broker acknowledged it: a drop mid-send re-sends it
            await self._send(client, message)
            if self._events and self._events[0] is message:
                self._events.popleft()
            self.stats.queued_alerts = len(self._events)
        self._dropping = False
        batch, self._latest = self._latest, {}
        messages = list(batch.values())
        sent = 0
        try:
            for message in messages:
                await self._send(client, message)
                sent += 1
        finally:
            for message in messages[sent:]:
                # keep a newer value that arrived meanwhile
                self._latest.setdefault(message.topic, message)

    async def _send(self, client: aiomqtt.Client, message: _Message) -> None:
        """Publish one message; one the broker can never take is dropped with an error."""
        try:
            await client.publish(
                message.topic, message.payload, qos=message.qos, retain=message.retain
            )
        except (ValueError, TypeError) as exc:
            self.stats.dropped += 1
            log.error("MQTT message to %s dropped: %s", message.topic, exc)
            return
        self.stats.published += 1

    async def _goodbye(self, client: aiomqtt.Client) -> None:
        """Publish ``offline`` (best effort, briefly) before the context manager disconnects."""
        try:
            await client.publish(
                self.status_topic, OFFLINE, qos=1, retain=True, timeout=SHUTDOWN_TIMEOUT
            )
        except Exception as exc:
            log.warning("MQTT could not publish %s on shutdown: %s", OFFLINE, exc)
        # bounds the wait for the broker to acknowledge the disconnection in __aexit__
        client.timeout = SHUTDOWN_TIMEOUT
        log.info("MQTT disconnecting from %s:%d", self.config.host, self.config.port)

    def _client(self) -> aiomqtt.Client:
        """Return a new client for one connection attempt."""
        config = self.config
        assert config.host is not None, "run() returns at once without a host"
        tls_context = None
        if config.tls or config.ca_file is not None:
            tls_context = ssl.create_default_context(
                cafile=str(config.ca_file) if config.ca_file is not None else None
            )
        password = config.password.get_secret_value() if config.password is not None else None
        return aiomqtt.Client(
            config.host,
            config.port,
            username=config.username,
            password=password,
            identifier=config.client_id,
            will=aiomqtt.Will(self.status_topic, OFFLINE, qos=1, retain=True),
            keepalive=max(1, round(config.keepalive)),
            tls_context=tls_context,
            timeout=CLIENT_TIMEOUT,
        )

    # -- internals ------------------------------------------------------------------------

    def _put(self, message: _Message) -> None:
        """Hold a message for ``run()``: retained latest-wins per topic, others queued."""
        if message.retain:
            # re-inserted so that the dict keeps the order in which topics last changed
            self._latest.pop(message.topic, None)
            self._latest[message.topic] = message
            self._retained.pop(message.topic, None)
            if message.payload:  # an empty one deletes the topic's retained message
                self._retained[message.topic] = message
        else:
            maxlen = self.config.alert_queue
            if len(self._events) >= maxlen:
                dropped = self._events.popleft()
                self.stats.dropped += 1
                if not self._dropping:
                    self._dropping = True
                    log.warning(
                        "MQTT alert queue full (%d): dropping the oldest (%s) and any more "
                        "until the broker takes them",
                        maxlen,
                        dropped.topic,
                    )
            self._events.append(message)
            self.stats.queued_alerts = len(self._events)
        self._wake.set()

    def _put_metric(self, name: str, value: float, t_ms: int, *, closed: bool) -> None:
        """Hold a metric value for sending."""
        topic = self._metric_topics.get(name)
        if topic is None:
            topic = self._metric_topics[name] = f"{self.prefix}/metrics/{_level(name)}"
        self._put(_Message(topic, metric_payload(name, value, t_ms, closed=closed), 0, True))

    def _release(self, name: str) -> None:
        """Send the forming value held back for ``name`` once its interval has passed."""
        self._forming_timers.pop(name, None)
        held = self._forming_held.pop(name, None)
        if held is None:
            return
        try:
            self._forming_due[name] = time.monotonic() + self.config.forming_interval
            self._put_metric(name, held[0], held[1], closed=False)
        except Exception:
            self._failed("metric " + repr(name))

    def _state_topic(self, kind: str, name: str) -> str:
        """Return the topic of a metric, feed or rule (``kind``), or of the firing rules."""
        if kind == "firing":
            return f"{self.prefix}/firing"
        return f"{self.prefix}/{kind}/{_level(name)}"

    def _clear(self, topic: str) -> None:
        """Delete a topic's retained message (an entity's config: the entity goes too)."""
        self._put(_Message(topic, "", 1, True))

    def _failed(self, what: str) -> None:
        """Count and log a message that could not even be built (a bug, never the broker)."""
        self.stats.dropped += 1
        with contextlib.suppress(Exception):
            log.exception("MQTT %s dropped", what)
