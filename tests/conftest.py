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
    """Run in an empty directory with no user, system or environment config around."""
    for name in list(os.environ):
        if name.upper().startswith("MOODRING_"):
            monkeypatch.delenv(name)
    for name in ("CREDENTIALS_DIRECTORY", "JOURNAL_STREAM"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
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
