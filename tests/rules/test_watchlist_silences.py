"""Silences of an expanded rule, a pattern of names and a watchlist's rule template."""

from __future__ import annotations

from pathlib import Path

import pytest

from moodring.configfile import load_settings
from moodring.rules.silences import Silences
from tests.support.watchlists import write

# no MOODRING_* variable, user or system config around
pytestmark = pytest.mark.usefixtures("isolated")


def test_silences_of_a_name_a_pattern_and_a_template(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path))
    silences = Silences(tmp_path / "silences.json", settings.template_of)
    silences.add("{base}-decoupling", 60, now=1000.0)
    assert silences.silenced("xrp-decoupling", now=1001.0) is not None
    assert silences.silenced("sol-and-btc", now=1001.0) is None
    silences.clear()
    silences.add("sol-*", 60, now=1000.0)
    assert silences.silenced("sol-and-btc", now=1001.0) is not None
    assert silences.silenced("sol-decoupling", now=1001.0) is not None
    assert silences.silenced("xrp-decoupling", now=1001.0) is None
    assert silences.silenced("sol-decoupling", now=1061.0) is None  # expired
