"""``moodring check-config`` / ``show-config``, config discovery, secrets and log output."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from moodring.logs import redact, setup_logging
from moodring.settings import DEFAULT_CONFIG
from tests.support.cli import GOOD, config, run
from tests.support.paths import ROOT

TG_TOKEN = "AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"
TG_URL = f"tgram://123456789:{TG_TOKEN}/12345"
ISO = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d"

# no user, system or environment config around
pytestmark = pytest.mark.usefixtures("isolated")

# --- check-config ------------------------------------------------------------------------


def test_check_config_without_any_file_uses_the_built_in_default(capsys) -> None:
    code, out, err = run(capsys, "check-config")
    assert code == 0
    assert out == f"{DEFAULT_CONFIG}: ok (3 feeds, 7 metrics, 13 rules)\n"
    assert f"INFO moodring: config: {DEFAULT_CONFIG} (built-in default)" in err


def test_check_config_finds_the_file_in_the_working_directory(capsys, isolated: Path) -> None:
    path = config(isolated, name="moodring.yaml")
    code, out, err = run(capsys, "check-config")
    assert (code, out) == (0, f"{path}: ok (2 feeds, 2 metrics, 1 rules)\n")
    assert f"config: {path}\n" in err


def test_check_config_follows_moodring_config(capsys, tmp_path: Path, monkeypatch) -> None:
    config(tmp_path / "work", name="moodring.yaml")
    chosen = config(tmp_path, GOOD.replace("  mfi: {type: mfi, series: eth}\n", ""))
    monkeypatch.setenv("MOODRING_CONFIG", str(chosen))
    assert run(capsys, "check-config")[:2] == (0, f"{chosen}: ok (2 feeds, 1 metrics, 1 rules)\n")


@pytest.mark.parametrize("how", ["-c", "env"])
def test_an_explicit_missing_file_is_an_error(capsys, tmp_path: Path, monkeypatch, how) -> None:
    config(tmp_path / "work", name="moodring.yaml")  # present, but not what was asked for
    missing = tmp_path / "nope.yaml"
    if how == "env":
        monkeypatch.setenv("MOODRING_CONFIG", str(missing))
    code, out, err = run(capsys, "check-config", *(["-c", str(missing)] if how == "-c" else []))
    assert (code, out) == (78, "")
    assert f"moodring: {missing}: config file not found" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("old", "new", "key", "line", "message"),
    [
        (
            "  btc: {symbol: BTC/USDT}",
            "  btc: {symbol: BTC/USDT, exchnage: kraken}",
            "feeds.btc.exchnage",
            3,
            "unknown key (typo?)",
        ),
        ("window: 30", "window: thirty", "metrics.corr.window", 5, "valid integer"),
        ("for: 2", "for: 0", "rules.0.for", 12, "at least 1 bar"),
        ("{{ value | round(2) }}", "{{ valu }}", "rules.0.title", 13, "unknown name(s) valu"),
        ("{{ value | round(2) }}", "{{ value | round(2) ", "rules.0.title", 13, "template"),
        ("metric: corr", "metric: cor", "rules.0.metric", 9, "unknown metric output 'cor'"),
        ("series: eth}", "series: sol}", "metrics.mfi.series", 6, "unknown series 'sol'"),
        (
            "condition: {below: 0.3}",
            "condition: {below: 0.3, above: 1}",
            "rules.0.condition",
            10,
            "give exactly one operator",
        ),
    ],
    ids=[
        "typo",
        "type",
        "range",
        "template-name",
        "template-syntax",
        "unknown-metric",
        "unknown-series",
        "two-operators",
    ],
)
def test_check_config_errors_name_file_key_and_line(
    capsys, tmp_path: Path, old: str, new: str, key: str, line: int, message: str
) -> None:
    assert old in GOOD
    path = config(tmp_path, GOOD.replace(old, new, 1))
    code, out, err = run(capsys, "check-config", "-c", str(path))
    assert (code, out) == (78, "")
    lines = err.splitlines()
    assert f"moodring: {path}: invalid configuration (1 error(s))" in lines
    (error,) = [x for x in lines if x.startswith(f"  {key} ")]
    assert error.startswith(f"  {key} (line {line}): ")
    assert message in error
    assert "Traceback" not in err


def test_check_config_reports_every_error_at_once(capsys, tmp_path: Path) -> None:
    text = GOOD.replace("window: 30", "window: x").replace("for: 2", "for: 0")
    code, _, err = run(capsys, "check-config", "-c", str(config(tmp_path, text)))
    assert code == 78
    assert "(2 error(s))" in err
    assert "  metrics.corr.window (line 5): " in err and "  rules.0.for (line 12): " in err


def test_check_config_yaml_syntax_error(capsys, tmp_path: Path) -> None:
    path = config(tmp_path, GOOD.replace("condition: {below: 0.3}", "condition: {below: 0.3"))
    code, out, err = run(capsys, "check-config", "-c", str(path))
    assert (code, out) == (78, "")
    assert re.search(rf"moodring: {re.escape(str(path))}: invalid YAML at line 1\d, column", err)
    assert "Traceback" not in err


def test_environment_errors_name_the_variable(capsys, monkeypatch) -> None:
    monkeypatch.setenv("MOODRING_MQTT__PORT", "eighteen")
    code, _, err = run(capsys, "check-config")
    assert code == 78
    assert (
        "  mqtt.port (MOODRING_MQTT__PORT from environment): Input should be a valid integer"
        in (err)
    )


# --- show-config and secrets -------------------------------------------------------------


@pytest.fixture
def secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, list[str]]:
    """Return a config drawing secrets from the file, a *_file, a credential and a variable."""
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "alpaca-secret").write_text("alpaca-secret-S4")
    (tmp_path / "alpaca.key").write_text("alpaca-key-S3\n")
    text = GOOD + (
        "  - name: up\n"
        "    metric: mfi\n"
        "    condition: {crosses_above: 80}\n"
        "mqtt:\n"
        "  host: broker.lan\n"
        "  prefix: home/moodring\n"
        "  password: hunter2-S1\n"
    )
    text = text.replace(
        "  btc: {symbol: BTC/USDT}",
        "  btc: {symbol: BTC/USDT}\n"
        "  spy: {symbol: SPY, source: alpaca, market: equity, api_key_file: alpaca.key,\n"
        "        api_secret_credential: alpaca-secret}",
    )
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    monkeypatch.setenv("MOODRING_NOTIFY__URLS", f'["{TG_URL}", "json://bob:Pa55-S5@127.0.0.1/x"]')
    monkeypatch.setenv("MOODRING_MQTT__PORT", "1884")
    return config(tmp_path, text), ["S1", "S3", "S4", "S5", TG_TOKEN]


def test_show_config_prints_the_merged_config_without_secrets(capsys, secrets) -> None:
    path, hidden = secrets
    code, out, err = run(capsys, "show-config", "-c", str(path))
    assert code == 0
    for secret in hidden:
        assert secret not in out and secret not in err
    shown = yaml.safe_load(out)
    assert shown["mqtt"]["host"] == "broker.lan" and shown["mqtt"]["port"] == 1884
    assert shown["mqtt"]["prefix"] == "home/moodring" and shown["mqtt"]["password"] == "***"
    assert shown["feeds"]["spy"]["api_key"] == shown["feeds"]["spy"]["api_secret"] == "***"
    assert [u["url"] for u in shown["notify"]["urls"]] == ["***", "***"]
    assert list(shown["feeds"]) == ["eth", "btc", "spy"]
    assert shown["rules"][0]["for"] == 2
    assert "for_" not in out


def test_secrets_never_reach_the_log(capsys, secrets) -> None:
    path, hidden = secrets
    assert run(capsys, "check-config", "-c", str(path))[0] == 0
    log = logging.getLogger("moodring.test")
    log.warning("connecting with %s and %s", "hunter2-S1", "alpaca-key-S3")
    log.error("send to %s failed", TG_URL)
    log.error("token alone: %s", TG_TOKEN)
    log.error("unregistered: tgram://987654321:%s/1 and json://u:pw-S6@h/x", TG_TOKEN[::-1])
    try:
        raise RuntimeError("broker said no to password hunter2-S1")
    except RuntimeError:
        log.exception("mqtt failed")
    err = capsys.readouterr().err
    for secret in [*hidden, TG_TOKEN[::-1], "pw-S6"]:
        assert secret not in err
    assert "connecting with *** and ***" in err
    assert "send to *** failed" in err or "send to tgram://123456789:***/12345 failed" in err
    assert "RuntimeError: broker said no to password ***" in err
    assert "json://u:***@h/x" in err


def test_plain_urls_stay_readable_in_the_log() -> None:
    text = "fake exchange on ws://127.0.0.1:8765/stream/ws replays at 10x"
    assert redact(text) == text


@pytest.mark.parametrize("mode", [0o644, 0o600])
def test_world_readable_secrets_warning(capsys, tmp_path: Path, mode: int) -> None:
    text = GOOD + "mqtt: {host: h, password: hunter2-S7}\n"
    path = config(tmp_path, text, mode=mode)
    code, _, err = run(capsys, "check-config", "-c", str(path))
    assert code == 0
    warned = [line for line in err.splitlines() if "readable by group or others" in line]
    assert len(warned) == (1 if mode == 0o644 else 0)
    if warned:
        assert " WARNING moodring.config: " in warned[0]
        assert "mqtt.password" in warned[0] and "chmod 600" in warned[0]
    assert "hunter2-S7" not in err


def test_run_and_other_commands_find_the_config_too(capsys, tmp_path: Path) -> None:
    missing = str(tmp_path / "missing.yaml")
    for command in ("run", "backtest", "silence", "test-alert", "show-config"):
        code, _, err = run(capsys, command, "-c", missing)
        assert code == 78 and f"{missing}: config file not found" in err, command


# --- log format --------------------------------------------------------------------------


def read_pipe_logs(monkeypatch: pytest.MonkeyPatch, journal: bool) -> str:
    read_fd, write_fd = os.pipe()
    with os.fdopen(read_fd) as reader, os.fdopen(write_fd, "w") as writer:
        st = os.fstat(writer.fileno())
        stream = f"{st.st_dev}:{st.st_ino}" if journal else f"{st.st_dev}:{st.st_ino + 1}"
        monkeypatch.setenv("JOURNAL_STREAM", stream)
        setup_logging("INFO", stream=writer)
        logging.getLogger("moodring.x").info("hello")
        logging.getLogger("moodring.x").debug("hidden")
        writer.close()
        return reader.read()


def test_journald_lines_have_no_timestamp(monkeypatch) -> None:
    assert read_pipe_logs(monkeypatch, journal=True) == "INFO moodring.x: hello\n"


def test_other_lines_start_with_an_iso_timestamp(monkeypatch) -> None:
    assert re.fullmatch(rf"{ISO} INFO moodring.x: hello\n", read_pipe_logs(monkeypatch, False))


def test_log_level_option(capsys) -> None:
    assert run(capsys, "--log-level", "warning", "check-config")[2] == ""
    assert "DEBUG" not in run(capsys, "check-config")[2]


def test_cli_process_under_journald_hides_secrets(secrets, tmp_path: Path) -> None:
    path, hidden = secrets
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'daemon'}{os.pathsep}{ROOT}"}
    read_fd, write_fd = os.pipe()
    st = os.fstat(write_fd)
    env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
    cmd = [sys.executable, "-m", "moodring.cli", "show-config", "-c", str(path)]
    with os.fdopen(read_fd) as reader:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=write_fd, text=True)
        os.close(write_fd)
        out, _ = proc.communicate(timeout=60)
        err = reader.read()
    assert proc.returncode == 0, err
    assert err.splitlines()[0] == f"INFO moodring: config: {path}"
    assert yaml.safe_load(out)["mqtt"]["password"] == "***"
    for secret in hidden:
        assert secret not in out and secret not in err
