"""Packaging: ``python -m moodring``, a light command line, completion, metadata, CI."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.support.paths import ROOT

ENV = {**os.environ, "PYTHONPATH": str(ROOT / "daemon")}
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def moodring(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "moodring", *argv],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_python_dash_m_moodring_is_the_command() -> None:
    from moodring import __version__

    done = moodring("--version")
    assert (done.returncode, done.stdout) == (0, f"moodring {__version__}\n")
    assert __version__ == PROJECT["project"]["version"]
    done = moodring("--help")
    assert done.returncode == 0 and done.stdout.startswith("usage: moodring ")


def test_help_and_version_import_nothing_heavy() -> None:
    """The command line imports its commands' modules only when a command runs."""
    probe = (
        "import sys; sys.argv = ['moodring', '--version']\n"
        "from moodring.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "heavy = ('numpy', 'pydantic', 'pydantic_settings', 'ccxt', 'yaml', 'apprise', "
        "'matplotlib', 'asyncio', 'moodring.engine', 'moodring.settings', 'shtab')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    assert last_line(probe) == "[]"


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_completion_scripts_cover_every_command(shell: str) -> None:
    done = moodring("completion", shell)
    assert done.returncode == 0, done.stderr
    script = done.stdout
    for command in ("run", "backtest", "show-config", "init", "healthcheck", "completion"):
        assert command in script
    assert "--metrics-out" in script and "--log-format" in script
    if shell == "zsh":
        assert script.startswith("#compdef moodring")
    checker = shutil.which(shell)
    if checker is not None:  # the shell itself reads it without a syntax error
        syntax = subprocess.run(
            [checker, "-n"], input=script, capture_output=True, text=True, timeout=60
        )
        assert syntax.returncode == 0, syntax.stderr


def test_the_license_is_mit_everywhere() -> None:
    project = PROJECT["project"]
    assert project["license"] == "MIT" and project["license-files"] == ["LICENSE"]
    assert (ROOT / "LICENSE").read_text().startswith("MIT License\n")
    assert not any(c.startswith("License ::") for c in project["classifiers"])  # SPDX instead
    requires = PROJECT["build-system"]["requires"]
    floor = next(r for r in requires if r.startswith("setuptools>="))
    assert int(floor.removeprefix("setuptools>=").split(".")[0]) >= 77  # SPDX license support


def test_the_project_has_urls_classifiers_and_a_changelog() -> None:
    project = PROJECT["project"]
    assert {"Homepage", "Source", "Issues", "Changelog"} <= set(project["urls"])
    assert all(url.startswith("https://") for url in project["urls"].values())
    python = re.search(r">=3\.(\d+)", project["requires-python"])
    assert (
        python
        and f"Programming Language :: Python :: 3.{python.group(1)}" in (project["classifiers"])
    )
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert "keepachangelog.com" in changelog
    unreleased = changelog.split("## [Unreleased]", 1)[1]
    assert "### Added" in unreleased and "### Changed" in unreleased


def test_ci_runs_the_readme_test_command_then_the_lowest_versions() -> None:
    readme = (ROOT / "README.md").read_text()
    commands = re.search(r"```sh\n(.*?)\n```", readme, re.DOTALL)
    assert commands
    test_command = commands.group(1).splitlines()[1]
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()
    assert ci[-1] == test_command
    assert test_command.endswith("&& .ci/lowest-versions")
    lowest = ROOT / ".ci" / "lowest-versions"
    assert os.access(lowest, os.X_OK)
    script = lowest.read_text()
    assert "--resolution lowest-direct" in script and "--extra test" in script
    assert re.search(r'pip" install [^\n]*\buv\n', script)


def test_the_daemon_imports_only_what_its_config_uses(tmp_path: Path) -> None:
    """No templates, charts or digest configured: jinja2, charts and the digest stay unloaded."""
    probe = (
        "import sys\n"
        "from moodring.service.daemon import Daemon\n"
        "from moodring.settings import Settings\n"
        "feed = {'exchange': 'binance', 'symbol': 'ETH/USDT'}\n"
        "metric = {'type': 'mfi', 'series': 'eth', 'timeframe': '1m', 'period': 3}\n"
        f"settings = Settings(feeds={{'eth': feed}}, metrics={{'mfi': metric}}, "
        f"state_dir={str(tmp_path)!r})\n"
        "Daemon(settings)\n"
        "unused = ('jinja2', 'moodring.charts.render', 'moodring.charts.model', "
        "'moodring.digest.content')\n"
        "print(sorted(m for m in unused if m in sys.modules))\n"
    )
    assert last_line(probe) == "[]"


def last_line(probe: str) -> str:
    """Run a Python probe in a fresh interpreter; return the last line it printed."""
    done = subprocess.run(
        [sys.executable, "-c", probe], env=ENV, capture_output=True, text=True, timeout=60
    )
    lines = done.stdout.splitlines()
    assert lines, done.stderr
    return lines[-1]
