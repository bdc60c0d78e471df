"""Shared fixtures: where the real market data lives."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """Return ../shared/data, failing (not skipping) when it is missing."""
    assert SHARED_DATA.is_dir(), f"real market data expected at {SHARED_DATA}"
    return SHARED_DATA
