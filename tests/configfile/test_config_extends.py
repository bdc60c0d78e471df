"""A config that builds on the shipped one (``extends: default``), ``moodring init``,
``show-config`` as written, and apprise's own config files and URLs (``notify.config``).
"""

from __future__ import annotations

import stat
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from moodring.configfile import ConfigError, load_config, load_settings, show_config
from moodring.settings import DEFAULT_CONFIG
from moodring.times import parse_duration, write_duration
from tests.support.cli import config as write
from tests.support.cli import run
from tests.support.receiver import Receiver

SHIPPED_RULES = [r["name"] for r in yaml.safe_load(DEFAULT_CONFIG.read_text())["rules"]]


@pytest.fixture(autouse=True)
def work(isolated: Path) -> Path:
    """Run every test isolated (see tests/conftest.py)."""
    return isolated


# --- extends: default ---------------------------------------------------------------------

NOTIFY_AND_A_THRESHOLD = """\
extends: default
notify:
  urls: ["json://127.0.0.1:9/hook"]
rules:
  - name: eth-rut-decoupling
    condition: {below: 0.25}
"""


def test_a_file_of_notify_and_one_threshold_builds_on_the_shipped_config(
    capsys: pytest.CaptureFixture[str], isolated: Path
) -> None:
    path = write(isolated, NOTIFY_AND_A_THRESHOLD)
    code, out, _ = run(capsys, "check-config", "-c", str(path))
    assert (code, out) == (0, f"{path}: ok (3 feeds, 7 metrics, 13 rules)\n")
    settings, shipped = load_settings(path), load_settings()
    assert [r.name for r in settings.rules] == SHIPPED_RULES  # changed in place
    rule = settings.rules[0]
    assert rule.condition is not None and rule.condition.below == 0.25
    assert rule == shipped.rules[0].model_copy(update={"condition": rule.condition})
    assert settings.rules[1:] == shipped.rules[1:]
    assert settings.model_copy(update={"notify": shipped.notify, "rules": shipped.rules}) == shipped
    shown = yaml.safe_load(run(capsys, "show-config", "-c", str(path))[1])
    assert list(shown["feeds"]) == ["eth", "btc", "rut"]
    assert shown["rules"][0]["condition"] == {"below": 0.25}
    assert shown["rules"][0]["clear"] == {"above": 0.45} and shown["rules"][0]["for"] == 2
    assert [target["url"] for target in shown["notify"]["urls"]] == ["***"]


def test_without_extends_a_partial_file_says_how_to_build_on_the_defaults(
    capsys: pytest.CaptureFixture[str], isolated: Path
) -> None:
    path = write(isolated, NOTIFY_AND_A_THRESHOLD.replace("extends: default\n", ""))
    code, _, err = run(capsys, "check-config", "-c", str(path))
    assert code == 78
    assert "  feeds: Field required (a file holding only changes starts with `extends: " in err


def test_rules_are_added_changed_and_removed_by_name(isolated: Path) -> None:
    path = write(
        isolated,
        """\
extends: default
rules:
  - name: mine
    metric: eth_mfi
    condition: {above: 90}
    for: 1h30m
  - name: eth-mfi-oversold
    remove: true
  - name: eth-mfi-overbought
    all:
      - {metric: eth_mfi, above: 85}
      - {metric: ethbtc_chg_30, above: 0}
    clear: null
  - name: eth-rut-recoupling
    cooldown: null
""",
    )
    settings, shipped = load_settings(path), load_settings()
    names = [r.name for r in settings.rules]
    assert names == [n for n in SHIPPED_RULES if n != "eth-mfi-oversold"] + ["mine"]
    rules = {r.name: r for r in settings.rules}
    assert rules["mine"].for_ == "1h30m" and settings.rule_bars(rules["mine"]) == 1
    overbought = rules["eth-mfi-overbought"]
    assert overbought.metric is None and overbought.condition is None
    assert overbought.all is not None and len(overbought.all) == 2 and overbought.clear is None
    assert overbought.cooldown == 30 * 86400  # kept from the shipped rule
    assert rules["eth-rut-recoupling"].cooldown is None
    shipped_rule = next(r for r in shipped.rules if r.name == "eth-rut-recoupling")
    assert shipped_rule.cooldown == 30 * 86400


def test_a_null_drops_a_shipped_section_and_a_new_type_replaces_a_metric(isolated: Path) -> None:
    path = write(
        isolated,
        """\
extends: default
digest: null
altseason: null
metrics:
  eth_mfi: {type: sma, series: eth, period: 5}
rules:
  - {name: altseason-starts, remove: true}
  - {name: bitcoin-season-starts, remove: true}
  - {name: eth-decoupled-and-leading, remove: true}
  - {name: eth-mfi-enters-bullish-band, remove: true}
  - {name: eth-mfi-leaves-bullish-band, remove: true}
  - {name: eth-mfi-overbought, remove: true}
  - {name: eth-mfi-oversold, remove: true}
""",
    )
    settings = load_settings(path)
    assert settings.digest is None and settings.altseason is None
    mfi = settings.metrics["eth_mfi"]
    assert (mfi.type, mfi.period, mfi.timeframe) == ("sma", 5, "1d")  # type: ignore[union-attr]
    assert len(settings.rules) == 6


@pytest.mark.parametrize(
    ("text", "error"),
    [
        (  # the file's own key: its own line
            "extends: default\nrules:\n  - name: eth-rut-decoupling\n    for: 0\n",
            "  rules.0.for (line 4): for: at least 1 bar",
        ),
        (  # a rule added after the shipped 13: the file's index 1 is the merged index 13
            "extends: default\nrules:\n  - name: eth-mfi-oversold\n    for: 3\n"
            "  - name: mine\n    metric: eth_mfi\n    condition: {abov: 1}\n",
            "  rules.13.condition.abov (line 7): unknown key (typo?)",
        ),
        (
            "extends: default\nrules:\n  - name: nope\n    remove: true\n",
            "  rules.0.remove (line 4): no shipped rule is named 'nope' to remove",
        ),
        (
            "extends: default\nrules:\n  - {name: eth-mfi-oversold, for: 3}\n"
            "  - {name: eth-mfi-oversold, for: 4}\n",
            "  rules.1.name (line 4): 'eth-mfi-oversold' is given twice",
        ),
        ("extends: mine.yaml\n", "  extends (line 1): only the shipped config can be extended"),
    ],
)
def test_errors_name_the_files_line(isolated: Path, text: str, error: str) -> None:
    path = write(isolated, text)
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    lines = str(caught.value).splitlines()
    assert lines[0] == f"{path}: invalid configuration (1 error(s))"
    assert lines[1].startswith(error), lines


def test_an_error_in_the_shipped_part_names_the_shipped_file_and_line(isolated: Path) -> None:
    path = write(isolated, "extends: default\nfeeds:\n  rut: null\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    shipped = DEFAULT_CONFIG.read_text().splitlines()
    line = next(i for i, text in enumerate(shipped, 1) if text.startswith("  eth_rut_corr:"))
    text = str(caught.value)
    assert text.startswith(f"{path}: invalid configuration")
    assert f"  metrics.eth_rut_corr.b (line {line} of {DEFAULT_CONFIG}): unknown series 'rut'" in (
        text
    )


def test_the_environment_still_overrides_an_extending_file(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(isolated, "extends: default\nmqtt: {host: file.lan, prefix: home}\n")
    monkeypatch.setenv("MOODRING_MQTT__HOST", "env.lan")
    mqtt = load_settings(path).mqtt
    assert (mqtt.host, mqtt.prefix) == ("env.lan", "home")


# --- moodring init -------------------------------------------------------------------------


def test_init_writes_a_starter_config_that_extends_the_shipped_one(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out, err = run(capsys, "init")
    target = tmp_path / "xdg" / "moodring" / "moodring.yaml"
    assert (code, err) == (0, "")
    assert out.splitlines()[0].startswith(f"wrote {target}: it extends the shipped config")
    assert "`moodring check-config`, `moodring test-alert` and `moodring run`" in out
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert target.read_text().count("\nextends: default\n") == 1
    assert load_settings(target) == load_settings()  # found by discovery, changes nothing
    code, out, _ = run(capsys, "check-config")
    assert (code, out) == (0, f"{target}: ok (3 feeds, 7 metrics, 13 rules)\n")


def test_init_never_overwrites_without_force(
    capsys: pytest.CaptureFixture[str], isolated: Path
) -> None:
    path = write(isolated, "mine\n", "m.yaml")
    code, _, err = run(capsys, "init", str(path))
    assert code == 1 and "the file exists; --force replaces it" in err
    assert path.read_text() == "mine\n"
    code, out, _ = run(capsys, "init", str(path), "--force")
    assert code == 0 and f"moodring check-config -c {path}" in out  # not a discovered place
    assert "extends: default" in path.read_text()


def test_init_system_writes_the_system_config(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out, _ = run(capsys, "init", "--system")
    assert code == 0 and (tmp_path / "etc" / "moodring.yaml").is_file()
    assert out.startswith(f"wrote {tmp_path / 'etc' / 'moodring.yaml'}")


# --- show-config --------------------------------------------------------------------------


def test_show_config_prints_durations_as_written_and_the_state_dir(
    capsys: pytest.CaptureFixture[str], isolated: Path, tmp_path: Path, monkeypatch
) -> None:
    path = write(
        isolated,
        "extends: default\n"
        "feeds:\n  eth: {stale_after: 90}\n  btc: {stale_after: 1m30s}\n"
        "rules:\n  - name: eth-rut-recoupling\n    cooldown: 1h30m\n",
    )
    monkeypatch.setenv("MOODRING_NOTIFY__TIMEOUT", "45s")
    code, out, _ = run(capsys, "show-config", "-c", str(path))
    assert code == 0
    shown = yaml.safe_load(out)
    assert shown["feeds"]["eth"]["stale_after"] == "1m30s"  # a number: its exact form
    assert shown["feeds"]["btc"]["stale_after"] == "1m30s"
    assert shown["feeds"]["rut"].get("stale_after") is None
    assert shown["rules"][1]["cooldown"] == "1h30m"
    assert shown["rules"][4]["cooldown"] == "90d"  # ethbtc-breakout-down, as shipped
    notify = shown["notify"]
    assert (notify["timeout"], notify["max_age"], notify["retry_initial"]) == ("45s", "1d", "2s")
    assert notify["late_max_age"] == "6h" and shown["mqtt"]["keepalive"] == "1m"
    assert "state_dir" not in shown  # not set: a comment says which directory is used
    assert out.endswith(f"\n# state_dir is not set: {tmp_path / 'state' / 'moodring'} is used\n")
    assert "604800" not in out and "5400.0" not in out


def test_durations_parse_in_parts_and_write_back() -> None:
    cases = {"1h30m": 5400.0, "500ms": 0.5, "1d 2h": 93600.0, "2w": 1209600.0, "1.5h": 5400.0}
    for text, seconds in cases.items():
        assert parse_duration(text) == seconds
        assert parse_duration(write_duration(seconds)) == seconds
    assert [write_duration(s) for s in (604800, 5400, 0.5, 90, 0)] == [
        "7d",
        "1h30m",
        "500ms",
        "1m30s",
        "0s",
    ]
    for bad in ("90", "1x", "h", "", "1h-30m"):
        with pytest.raises(ValueError, match="invalid duration"):
            parse_duration(bad)


# --- notify.config: apprise's config files and URLs ----------------------------------------


def test_an_apprise_config_file_adds_its_urls_with_their_tags(
    capsys: pytest.CaptureFixture[str], isolated: Path, receiver: Receiver
) -> None:
    (isolated / "apprise.yml").write_text(
        f"urls:\n  - {receiver.url('a')}:\n      - tag: critical\n  - {receiver.url('b')}\n"
    )
    path = write(isolated, "extends: default\nnotify:\n  config: [apprise.yml]\n")
    loaded = load_config(path)
    targets = [(t.url.get_secret_value(), t.tags) for t in loaded.settings.notify.urls]
    assert [(url.split("?")[0], tags) for url, tags in targets] == [
        (receiver.url("a"), ("critical",)),
        (receiver.url("b"), ()),
    ]
    shown = yaml.safe_load(show_config(loaded.settings, loaded.written))
    assert shown["notify"]["config"] == ["apprise.yml"] and shown["notify"]["urls"] == []
    code, out, _ = run(capsys, "test-alert", "-c", str(path))
    assert code == 0 and [line.split()[0] for line in out.splitlines()] == ["OK", "OK"]
    assert sorted(receiver.paths) == ["/a", "/b"]


class _ConfigServer:
    """Serves one apprise TEXT config to apprise's config URL (it POSTs for it)."""

    def __init__(self, text: str) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = text.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_an_apprise_config_url_adds_its_urls(isolated: Path, receiver: Receiver) -> None:
    served = _ConfigServer(f"ops={receiver.url('ops')}\n")
    try:
        path = write(
            isolated,
            f"extends: default\nnotify:\n  config: [http://127.0.0.1:{served.port}/cfg]\n",
        )
        (target,) = load_settings(path).notify.urls
    finally:
        served.close()
    assert target.url.get_secret_value().startswith(receiver.url("ops"))
    assert target.tags == ("ops",)


@pytest.mark.parametrize(
    ("content", "entry", "message"),
    [
        (None, "missing.yml", "no apprise config file at "),
        ("# nothing here\n", "empty.txt", "apprise found no notification URL in empty.txt"),
    ],
)
def test_an_unusable_apprise_config_names_its_key_and_line(
    isolated: Path, content: str | None, entry: str, message: str
) -> None:
    if content is not None:
        (isolated / entry).write_text(content)
    path = write(isolated, f"extends: default\nnotify:\n  urls: []\n  config:\n    - {entry}\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert f"  notify.config.0 (line 5): {message}" in str(caught.value)
