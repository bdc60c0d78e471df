"""`moodring silence` of expanded names, patterns and watchlist templates (--template)."""

from __future__ import annotations

from pathlib import Path

import pytest

from moodring.cli import main
from tests.support.watchlists import CONFIG, write

# no MOODRING_* variable, user or system config around
pytestmark = pytest.mark.usefixtures("isolated")


def test_moodring_silence_takes_patterns_and_templates(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, CONFIG + f"state_dir: {tmp_path / 'state'}\n")

    def silence(*argv: str) -> tuple[int, str]:
        code = main(["--log-level", "WARNING", "silence", "-c", str(path), *argv])
        out = capsys.readouterr()
        return code, out.out + out.err

    assert silence("sol-decoupling", "--for", "1h")[0] == 0
    code, out = silence("*-decoupling", "--for", "1h")
    assert code == 0 and "(sol-decoupling, bnb-decoupling, xrp-decoupling)" in out
    code, out = silence("--template", "bnb-decoupling", "--for", "2h")
    assert code == 0 and out.startswith("silenced {base}-decoupling (sol-decoupling, bnb-")
    code, out = silence("{base}-hot", "--for", "2h")  # a template of a watchlist not ranked yet
    assert code == 0 and "{base}-hot (no rule yet)" in out
    code, out = silence("--list")
    assert "{base}-decoupling (3 rule(s) now)" in out and "*-decoupling (3 rule(s) now)" in out
    assert silence("nope-*", "--for", "1h") == (
        1,
        "moodring: 'nope-*' matches no rule; rules: bnb-decoupling, sol-and-btc, "
        "sol-decoupling, stale.bnb, stale.btc, stale.rut, stale.sol, stale.xrp, "
        "xrp-decoupling\n",
    )
    code, out = silence("--template", "sol-and-btc", "--for", "1h")
    assert code == 1 and "'sol-and-btc' is not a rule of a watchlist's template" in out
    code, out = silence("--clear", "--template", "xrp-decoupling")
    assert out == "cleared 1 silence(s)\n"
