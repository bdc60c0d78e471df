"""docker-compose.yml, the Grafana dashboard and the Prometheus alert rules.

No Docker engine here: the compose file is validated against the Compose Specification's
JSON schema (vendored in tests/data/compose-spec), and every PromQL expression of the
dashboard and the rules may name only series a real moodring registry exports.
"""

from __future__ import annotations

import json
import re

import pytest
import yaml
from jsonschema import Draft7Validator
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from moodring.service.telemetry import Telemetry
from tests.support.paths import ROOT

COMPOSE = ROOT / "docker-compose.yml"
DEPLOY = ROOT / "deploy"
SCHEMA = ROOT / "tests" / "data" / "compose-spec" / "compose-spec.json"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "moodring.json"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
# series Prometheus makes itself for every target
PROMETHEUS_OWN = frozenset({"up"})
# PromQL words that are not series names
PROMQL_WORDS = frozenset(
    [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "bool",
        "and",
        "or",
        "unless",
        "offset",
        "inf",
        "nan",
    ]
)


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def exported(families: bool = False) -> set[str]:
    """Return every series name a scrape of a daemon's registry holds (all sources wired).

    With ``families``, the metric family names too (a histogram's, without ``_bucket``).
    """
    telemetry = Telemetry(
        bad_frames={("eth", "bad number"): 1},
        feed_states={"eth": "ok", "rut": "closed"},
        outbox_depth=lambda: 3,
        alerts_queued=lambda: 0,
        problems=dict,
        alert_counts=lambda: (
            {"moodring_alerts_unsaved": 0, "moodring_alerts_lost": 0}
            | {"moodring_alerts_late": 1, "moodring_alerts_too_late": 0}
        ),
    )
    telemetry.tick("eth")
    telemetry.observe_update(1e-5)
    telemetry.reconnect("eth")
    telemetry.suspect_bar("eth")
    telemetry.alert_sent("t1")
    telemetry.alert_failed("t1")
    telemetry.alert_dead("t1")
    telemetry.reload(True)
    telemetry.record_loop_lag(0.01)
    text = generate_latest(telemetry.registry).decode()
    parsed = list(text_string_to_metric_families(text))
    names = {sample.name for family in parsed for sample in family.samples}
    return names | {family.name for family in parsed} if families else names


def series_names(expr: str) -> set[str]:
    """Return the series names a PromQL expression reads."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges
    text = re.sub(r"(?<![\w:])\d[\w.+-]*", "", text)  # numbers and durations (offset 1h)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        rest = text[match.end() :].lstrip()
        if not rest.startswith("(") and match.group(0).lower() not in PROMQL_WORDS:
            names.add(match.group(0))
    return names


def test_the_parser_finds_series_names() -> None:
    expr = (
        'sum by (feed) (rate(moodring_ticks_total{feed="eth", x=~"a|b"}[5m])) > 0 '
        "and on (feed) up{job='x'} == bool 1e-3 unless moodring_up offset 1h"
    )
    assert series_names(expr) == {"moodring_ticks_total", "up", "moodring_up"}


def test_the_registry_exports_what_the_readme_lists() -> None:
    names = exported(families=True)
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Health and metrics") :]
    section = section[: section.index("\n## ", 3)]
    listed = set(re.findall(r"`(moodring_[a-z_]+)", section))
    assert listed, "the README lists the metrics"
    missing = sorted(name for name in listed if name not in names)
    assert not missing, f"README lists metrics no scrape has: {missing}"


def test_the_compose_file_is_valid_against_the_compose_spec() -> None:
    schema = json.loads(SCHEMA.read_text())
    errors = sorted(Draft7Validator(schema).iter_errors(compose()), key=lambda e: e.path)
    assert not errors, [f"{list(e.path)}: {e.message}" for e in errors]


def test_the_compose_file_wires_moodring_prometheus_grafana_and_mosquitto() -> None:
    services = compose()["services"]
    assert set(services) == {"moodring", "prometheus", "grafana", "mosquitto"}
    assert services["moodring"]["build"] == "."
    assert services["mosquitto"]["profiles"] == ["mqtt"]
    assert all("profiles" not in services[name] for name in ("moodring", "prometheus", "grafana"))
    assert "127.0.0.1:9701:9701" in services["moodring"]["ports"]
    for name, service in services.items():  # every file mounted from the repository exists
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name} mounts {source}, which is missing"
    scrape = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    (job,) = scrape["scrape_configs"]
    assert job["static_configs"][0]["targets"] == ["moodring:9701"]
    assert scrape["rule_files"] == ["/etc/prometheus/alerts.yml"]
    mounted = {v.split(":")[1] for v in services["prometheus"]["volumes"]}
    assert {"/etc/prometheus/alerts.yml", "/etc/prometheus/prometheus.yml"} <= mounted


def test_the_config_compose_mounts_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    from moodring.configfile import load_settings

    for name in ("MOODRING_CONFIG", "MOODRING_NOTIFY__URLS", "MOODRING_MQTT__HOST"):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings(DEPLOY / "moodring" / "moodring.yaml")
    assert settings.http.port == 9701 and len(settings.rules) == 13


def test_the_dashboard_names_only_exported_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    datasources = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )["datasources"]
    uids = {source["uid"] for source in datasources}
    names = exported()
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert dashboard["uid"] == "moodring" and len(panels) >= 10
    read = set()
    for panel in panels:
        assert panel["datasource"]["uid"] in uids, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            used = series_names(target["expr"])
            assert used, (panel["title"], target["expr"])
            assert used <= names, (panel["title"], sorted(used - names))
            read |= used
    for wanted in ("moodring_feed_state", "moodring_outbox_depth", "moodring_alerts_dead_total"):
        assert wanted in read
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    provider = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "dashboards" / "moodring.yml").read_text()
    )
    mounted = dict(v.split(":")[:2] for v in compose()["services"]["grafana"]["volumes"])
    assert mounted["./deploy/grafana/dashboards"] == provider["providers"][0]["options"]["path"]


def test_the_alert_rules_name_only_exported_metrics_and_cover_the_failures() -> None:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    names = exported() | PROMETHEUS_OWN
    rules = [rule for group in groups for rule in group["rules"]]
    seen: dict[str, set[str]] = {}
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
        assert re.fullmatch(r"[A-Z][A-Za-z]+", rule["alert"])
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
        if "for" in rule:
            assert re.fullmatch(r"\d+[smh]", rule["for"])
        used = series_names(rule["expr"])
        assert used and used <= names, (rule["alert"], sorted(used - names))
        seen[rule["alert"]] = used
    assert len(seen) == len(rules), "alert names are unique"
    covered = set().union(*seen.values())
    for failure in (
        "up",  # the daemon does not answer (its watchdog restarts it under systemd)
        "moodring_feed_state",  # a stale feed
        "moodring_outbox_depth",  # deliveries pile up
        "moodring_alerts_dead_total",  # deliveries given up
        "moodring_event_loop_lag_seconds",  # a stalled event loop
    ):
        assert failure in covered, failure
