"""check-config renders templates with samples; the world-readable warning sees every secret."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import yaml

from moodring.configfile import load_settings
from moodring.rules.preview import render_problems
from tests.support.cli import GOOD, config, run
from tests.support.paths import ROOT

# no user, system or environment config around
pytestmark = pytest.mark.usefixtures("isolated")


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{{ feeds.doge }}", "'dict object' has no attribute 'doge'"),
        ("{{ value + ' points' }}", "TypeError: unsupported operand"),
        ("{{ corr.lower() }}", "'float object' has no attribute 'lower'"),
        ("{{ '%d' % rule }}", "TypeError: %d format"),
    ],
)
def test_a_template_that_can_never_render_is_a_config_error(
    capsys, tmp_path: Path, template: str, message: str
) -> None:
    text = GOOD + f"    message: {json.dumps(template)}\n"
    path = config(tmp_path, text)
    code, out, err = run(capsys, "check-config", "-c", str(path))
    assert (code, out) == (78, "")
    assert f"moodring: {path}: invalid configuration (1 error(s))" in err
    [line] = [x for x in err.splitlines() if x.startswith("  rules.0.message ")]
    assert line.startswith("  rules.0.message (line 14): fails to render with sample values: ")
    assert message in line
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "template",
    [
        "{% if state == 'resolved' %}{{ 1 / 0 }}{% endif %}{{ value | round(2) }}",
        "{{ (value / previous) | round(2) }} {{ feeds.eth }} {{ metrics['mfi'] }} {{ note }}",
        "{{ threshold }} {{ time }} {{ severity }} {{ mfi | round(1) }} {{ corr * 100 }}",
    ],
)
def test_templates_that_can_render_pass(capsys, tmp_path: Path, template: str) -> None:
    text = GOOD + f"    message: {json.dumps(template)}\n"
    code, out, err = run(capsys, "check-config", "-c", str(config(tmp_path, text)))
    assert (code, out.split(": ")[-1]) == (0, "ok (2 feeds, 2 metrics, 1 rules)\n"), err


def test_the_shipped_configs_render() -> None:
    shipped = ROOT / "daemon" / "moodring" / "defaults"
    for path in shipped.glob("*.yaml"):
        assert render_problems(load_settings(path)) == [], path


API_KEY = {"symbol": "IWM", "source": "finnhub", "market": "equity", "api_key": "k"}


@pytest.mark.parametrize(
    ("section", "held"),
    [
        ({"notify": {"urls": ["gotify://push.example.com/AQf5kZJ0E8tZ3Xy"]}}, "notify.urls.0"),
        ({"notify": {"urls": [{"url": "bark://push.example.com/devicekey12"}]}}, "notify.urls.0"),
        ({"notify": {"urls": ["json://127.0.0.1:9/a", "ifttt://Hook/event"]}}, "notify.urls.1"),
        ({"feeds": {"eth": {"ws_url": "wss://x.test/ws?apikey=k1"}}}, "feeds.eth.ws_url"),
        ({"feeds": {"eth": {"rest_url": "https://me:pw@x.test"}}}, "feeds.eth.rest_url"),
        ({"mqtt": {"host": "h", "password": "hunter2"}}, "mqtt.password"),
        ({"feeds": {"rut": API_KEY}}, "feeds.rut.api_key"),
    ],
)
def test_the_world_readable_warning_names_every_secret(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, section: dict, held: str
) -> None:
    cfg = yaml.safe_load(GOOD)
    for key, value in section.items():
        cfg.setdefault(key, {})
        for name, part in value.items():
            cfg[key][name] = {**cfg[key].get(name, {}), **part} if isinstance(part, dict) else part
    path = config(tmp_path, yaml.safe_dump(cfg), mode=0o644)
    with caplog.at_level(logging.WARNING, logger="moodring.config"):
        load_settings(path)
    [warning] = [r.getMessage() for r in caplog.records if "readable by group" in r.getMessage()]
    assert f"holds secrets ({held})" in warning


def test_no_warning_for_urls_without_secrets(tmp_path: Path, caplog) -> None:
    cfg = yaml.safe_load(GOOD)
    cfg["notify"] = {"urls": ["json://127.0.0.1:9/hook", "ntfy://alerts"]}
    path = config(tmp_path, yaml.safe_dump(cfg), mode=0o644)
    with caplog.at_level(logging.WARNING, logger="moodring.config"):
        load_settings(path)
    assert not [r for r in caplog.records if "readable by group" in r.getMessage()]
