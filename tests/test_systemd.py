"""The systemd unit: it verifies cleanly, scores well on hardening, and wires the daemon."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.paths import ROOT

UNIT = ROOT / "systemd" / "moodring.service"
INSTALLED_BINARY = "/opt/moodring/bin/moodring"


def _tool() -> str:
    tool = shutil.which("systemd-analyze")
    assert tool, "systemd-analyze is needed (apt-get install systemd)"
    return tool


@pytest.fixture
def unit(tmp_path: Path) -> Path:
    binary = shutil.which("moodring")
    assert binary, "the moodring console script must be installed (pip install -e .)"
    text = UNIT.read_text()
    assert INSTALLED_BINARY in text
    copy = tmp_path / "moodring.service"
    copy.write_text(text.replace(INSTALLED_BINARY, binary))
    return copy


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    # no pager, no colours, and systemd's default log level whatever the caller's shell has
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYSTEMD_")}
    env |= {"SYSTEMD_PAGER": "cat", "SYSTEMD_COLORS": "0"}
    return subprocess.run(
        [_tool(), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )


def _settings(text: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key, []).append(value)
    return found


def test_verify_is_silent(unit: Path) -> None:
    # only our unit: no man page lookups, no generators, no errors from its dependencies
    result = _run(
        "verify", "--man=no", "--generators=no", "--recursive-errors=no", unit.name, cwd=unit.parent
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_verify_fails_on_what_it_should(unit: Path) -> None:
    unit.write_text(unit.read_text().replace("WatchdogSec=30", "WatchdogSec=30\nWatchDogSec=30"))
    result = _run(
        "verify", "--man=no", "--generators=no", "--recursive-errors=no", unit.name, cwd=unit.parent
    )
    assert "WatchDogSec" in result.stderr


def test_hardening_exposure_is_at_most_two(unit: Path) -> None:
    result = _run("security", "--offline=yes", "--no-pager", unit.name, cwd=unit.parent)
    assert result.returncode == 0, result.stderr
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d)", result.stdout)
    assert match, result.stdout
    exposure = float(match.group(1))
    print(f"systemd-analyze security exposure: {exposure}")
    assert exposure <= 2.0, result.stdout


def test_the_unit_is_a_notify_service_with_watchdog_reload_and_state() -> None:
    settings = _settings(UNIT.read_text())
    assert settings["Type"] == ["notify"]
    assert settings["NotifyAccess"] == ["main"]
    assert settings["WatchdogSec"] == ["30"]
    assert settings["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert settings["ExecStart"] == [
        f"{INSTALLED_BINARY} run -c ${{CONFIGURATION_DIRECTORY}}/moodring.yaml"
    ]
    assert settings["StateDirectory"] == ["moodring"]
    assert settings["ConfigurationDirectory"] == ["moodring"]
    assert settings["DynamicUser"] == ["yes"]
    assert settings["Restart"] == ["on-failure"]
    assert settings["RestartPreventExitStatus"] == ["78"], "a broken config does not loop"
    # a filtered syscall must fail with EPERM, not kill: numpy's OpenBLAS calls mbind()
    assert settings["SystemCallErrorNumber"] == ["EPERM"]
    # a bare credential name: a missing credential is skipped, not fatal
    for value in settings["LoadCredential"]:
        source = value.partition(":")[2] or value
        assert not source.startswith("/"), value
