"""The digest's watchlist section, from `moodring digest` over a backtest of real coins."""

from __future__ import annotations

from pathlib import Path

import pytest

from moodring.cli import main
from tests.support.watchlists import ALTS, BTC, MEMBERS, RUT, backtest, templated

# no MOODRING_* variable, user or system config around
pytestmark = pytest.mark.usefixtures("isolated")


def test_the_digest_says_which_watched_members_fire(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = templated() + (
        "digest:\n  chart: false\n  watchlist:\n"
        '    "{base}-decoupling": are decoupling from the Russell 2000\n'
    )
    alerts, _ = backtest(tmp_path, config, "--universe", str(ALTS), "--to", "2025-03-31")
    state: dict[str, str] = {}
    for alert in alerts:
        if alert["rule"].endswith("-decoupling"):
            state[alert["rule"].removesuffix("-decoupling").upper()] = alert["state"]
    firing = [m for m in MEMBERS if state.get(m) == "firing"]
    assert firing == ["ADA", "XRP", "DOT"]  # the day chosen tells both kinds apart

    path = tmp_path / "config.yaml"
    argv = ["--log-level", "WARNING", "digest", "-c", str(path), "--data", BTC, "--data", RUT]
    assert main([*argv, "--universe", str(ALTS), "--at", "2025-04-01"]) == 0
    said = capsys.readouterr().out.splitlines()
    lines = [line for line in said if "watched alts" in line]
    assert lines == [  # digest.watchlist names the templates it tells of
        f"{len(firing)} of {len(MEMBERS)} watched alts are decoupling from the Russell 2000: "
        f"{', '.join(firing)}."
    ]
