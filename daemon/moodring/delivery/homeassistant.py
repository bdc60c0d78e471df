"""Home Assistant MQTT discovery: a config for each entity moodring's topics feed.

One device per ``mqtt.prefix`` holds: a sensor per metric output (its value), a
``connectivity`` binary_sensor per feed (off while the feed is stale), a ``problem``
binary_sensor per rule (on while it fires) and a sensor counting the rules firing (their
names as attributes). Each config goes to ``<discovery_prefix>/<component>/<object_id>/config``
(retained) with ``device`` and ``origin``; an empty retained payload there removes the
entity. Entities are unavailable while ``<prefix>/status`` says ``offline``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from importlib import metadata
from typing import Any, Literal

import moodring
from moodring.settings import MqttConfig

Component = Literal["sensor", "binary_sensor"]
# the state topic of an entity: ("metrics" | "feeds" | "rules", name), or ("firing", "")
StateTopic = Callable[[str, str], str]

NAME = "moodring"
METRIC_TEMPLATE = "{{ value_json.value }}"
FEED_TEMPLATE = "{{ 'OFF' if value_json.state == 'stale' else 'ON' }}"
RULE_TEMPLATE = "{{ 'ON' if value_json.firing else 'OFF' }}"


def object_id(*parts: str) -> str:
    """Return an id Home Assistant accepts in a discovery topic: ``[a-zA-Z0-9_-]`` only."""
    text = "_".join(parts)
    return "".join(c if (c.isascii() and c.isalnum()) or c in "_-" else "_" for c in text)


@functools.cache
def _support_url() -> str | None:
    """Return the project's URL from the installed package's metadata, if it has one."""
    try:
        urls = metadata.metadata(NAME).get_all("Project-URL") or []
    except metadata.PackageNotFoundError:
        return None
    found = dict(url.split(", ", 1) for url in urls if ", " in url)
    return found.get("Homepage") or found.get("Source")


def origin() -> dict[str, str]:
    """Return the ``origin`` of every discovery payload: the application that sends it."""
    found = {"name": NAME, "sw_version": moodring.__version__}
    if url := _support_url():
        found["support_url"] = url
    return found


def device(config: MqttConfig) -> dict[str, Any]:
    """Return the device every entity belongs to: one per topic prefix."""
    prefix = config.prefix.rstrip("/")
    return {
        "identifiers": [prefix],
        "name": NAME if prefix == NAME else f"{NAME} {prefix}",
        "manufacturer": NAME,
        "model": "moodring alert daemon",
        "sw_version": moodring.__version__,
    }


def discovery_configs(
    config: MqttConfig,
    state_topic: StateTopic,
    status_topic: str,
    *,
    metrics: Iterable[str] = (),
    feeds: Iterable[str] = (),
    rules: Iterable[str] = (),
) -> dict[str, dict[str, Any]]:
    """Return every entity's discovery config by its discovery topic."""
    base = object_id(config.prefix.rstrip("/"))
    common = {
        "availability_topic": status_topic,
        "payload_available": "online",
        "payload_not_available": "offline",
        "device": device(config),
        "origin": origin(),
    }
    configs: dict[str, dict[str, Any]] = {}

    def add(component: Component, oid: str, topic: str, entity: dict[str, Any]) -> None:
        prefix = config.discovery_prefix.rstrip("/")
        configs[f"{prefix}/{component}/{oid}/config"] = {
            **entity,
            "unique_id": oid,
            "state_topic": topic,
            "json_attributes_topic": topic,
            **common,
        }

    for name in metrics:
        add(
            "sensor",
            object_id(base, name),
            state_topic("metrics", name),
            {"name": name, "value_template": METRIC_TEMPLATE, "state_class": "measurement"},
        )
    for feed in feeds:
        add(
            "binary_sensor",
            object_id(base, "feed", feed),
            state_topic("feeds", feed),
            {
                "name": f"{feed} feed",
                "device_class": "connectivity",
                "entity_category": "diagnostic",
                "value_template": FEED_TEMPLATE,
                "payload_on": "ON",
                "payload_off": "OFF",
            },
        )
    for rule in rules:
        add(
            "binary_sensor",
            object_id(base, "rule", rule),
            state_topic("rules", rule),
            {
                "name": rule,
                "device_class": "problem",
                "value_template": RULE_TEMPLATE,
                "payload_on": "ON",
                "payload_off": "OFF",
            },
        )
    add(
        "sensor",
        object_id(base, "firing_rules"),
        state_topic("firing", ""),
        {
            "name": "firing rules",
            "value_template": "{{ value_json.count }}",
            "state_class": "measurement",
            "icon": "mdi:bell-ring",
        },
    )
    return configs
