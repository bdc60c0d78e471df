"""Shared fixtures: the real market data, a local HTTP receiver, an isolated CLI run."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import moodring.configfile
from moodring.logs import HANDLER_NAME
from tests.support.paths import DATA
from tests.support.receiver import Receiver

# pytest-xdist workers `-n auto` (pyproject addopts) starts per core: tests mostly wait on
# replays and subprocesses (the suite keeps 2 cores about half busy with one per core); two
# per core overloaded 2 cores (daemons' timings stretched past what the tests allow)
WORKERS_PER_CORE = 1.5
# the most it starts: each runs daemons and fake exchanges of its own, and more than this
# only makes them compete for the cores
MAX_WORKERS = 4


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """Start 1.5 workers per core (three on CI), at most ``MAX_WORKERS``."""
    return max(1, min(int(len(os.sched_getaffinity(0)) * WORKERS_PER_CORE), MAX_WORKERS))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """Return ../shared/data, failing (not skipping) when it is missing."""
    assert DATA.is_dir(), f"real market data expected at {DATA}"
    return DATA


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A local HTTP endpoint for apprise's json:// (see ``tests.support.receiver``)."""
    r = Receiver()
    yield r
    r.down()


@pytest.fixture
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """Run in an empty directory with no user, system or environment config; state in tmp."""
    for name in list(os.environ):
        if name.upper().startswith("MOODRING_"):
            monkeypatch.delenv(name)
    for name in ("CREDENTIALS_DIRECTORY", "JOURNAL_STREAM", "STATE_DIRECTORY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setattr(moodring.configfile, "SYSTEM_CONFIG", tmp_path / "etc" / "moodring.yaml")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    root = logging.getLogger()
    level = root.level
    yield work
    for handler in list(root.handlers):
        if handler.get_name() == HANDLER_NAME:
            root.removeHandler(handler)
    root.setLevel(level)
