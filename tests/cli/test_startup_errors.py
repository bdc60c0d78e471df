"""Start-up errors: an unusable state directory is one line and exit 73, a bad config 78."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.support.paths import ROOT

EX_CANTCREAT, EX_CONFIG = 73, 78
COMMANDS = {
    "run": ["run"],
    "silence": ["silence", "decoupling", "--for", "1h"],
    "outbox": ["outbox", "--all-dead"],
}


def moodring(*argv: str, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "daemon")}
    for name in ("MOODRING_CONFIG", "STATE_DIRECTORY", "NOTIFY_SOCKET"):
        env.pop(name, None)
    command = [*prefix, sys.executable, "-m", "moodring.cli", "--log-level", "WARNING", *argv]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)


@pytest.fixture
def world() -> Iterator[Path]:
    """A folder anyone may read (pytest's tmp_path is private to root): config and state."""
    folder = Path(tempfile.mkdtemp(prefix="moodring-startup-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def write_config(folder: Path, state: Path) -> Path:
    cfg = {
        "feeds": {
            "eth": {
                "symbol": "ETH/USDT",
                "ws_url": "ws://127.0.0.1:9",
                "rest_url": "http://127.0.0.1:9",
            }
        },
        "rules": [{"name": "decoupling", "metric": "eth_mfi", "condition": {"above": 80}}],
        "metrics": {"eth_mfi": {"type": "mfi", "series": "eth"}},
        "http": {"enabled": False},
        "state_dir": str(state),
    }
    path = folder / "moodring.yaml"
    path.write_text(yaml.safe_dump(cfg))
    path.chmod(0o644)
    return path


def assert_one_line(result: subprocess.CompletedProcess[str], *wanted: str) -> None:
    assert result.returncode == EX_CANTCREAT, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("moodring: ")]
    assert len(errors) == 1, result.stderr
    for text in wanted:
        assert text in errors[0], errors[0]


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_state_directory_that_is_a_file(world: Path, command: str) -> None:
    state = world / "state"
    state.write_text("not a directory")
    result = moodring(*COMMANDS[command], "-c", str(write_config(world, state)))
    assert_one_line(result, f"{state}: not a directory")


@pytest.mark.parametrize("command", ["run", "silence"])
def test_a_state_directory_under_a_file(world: Path, command: str) -> None:
    (world / "file").write_text("")
    state = world / "file" / "state"
    result = moodring(*COMMANDS[command], "-c", str(write_config(world, state)))
    assert_one_line(result, f"state directory {state}: cannot create it: not a directory")


def can_drop_root_powers() -> bool:
    return os.geteuid() == 0 and shutil.which("setpriv") is not None


@pytest.mark.skipif(not can_drop_root_powers(), reason="needs root and setpriv")
@pytest.mark.parametrize("command", ["run", "silence"])
def test_an_unwritable_state_directory(world: Path, command: str) -> None:
    state = world / "state"
    state.mkdir()
    state.chmod(0o555)
    config = write_config(world, state)
    # root without CAP_DAC_OVERRIDE obeys the mode bits like any user
    powerless = ("setpriv", "--bounding-set=-dac_override,-dac_read_search")
    result = moodring(*COMMANDS[command], "-c", str(config), prefix=powerless)
    assert_one_line(result, f"state directory {state}: cannot write in it: permission denied")


def can_unshare() -> bool:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True)
    return probe.returncode == 0


@pytest.mark.skipif(not can_unshare(), reason="needs root and unshare -m")
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_state_directory_on_a_read_only_filesystem(world: Path, command: str) -> None:
    """A tmpfs seen only by this process tree: an outbox is written, then it turns read-only."""
    state = world / "state"
    state.mkdir()
    config = write_config(world, state)
    make_outbox = (
        f"{sys.executable} -c 'from moodring.delivery.outbox import Outbox; "
        f'Outbox(__import__("pathlib").Path("{state}/outbox.sqlite")).close()\''
    )
    script = (
        f"mount -t tmpfs -o size=1m tmpfs {state} && {make_outbox} && "
        f'mount -o remount,ro {state} && exec "$@"'
    )
    unshare = ("unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh")
    result = moodring(*COMMANDS[command], "-c", str(config), prefix=unshare)
    if command == "outbox":  # the folder is not written to: the database is
        assert_one_line(result, f"outbox {state}/outbox.sqlite: cannot use it: ")
    else:
        assert_one_line(result, f"state directory {state}: cannot write in it: read-only")


def test_an_unusable_record_directory(world: Path) -> None:
    record = world / "bars.csv"
    record.write_text("")
    config = write_config(world, world / "state")
    result = moodring("run", "-c", str(config), "--record", str(record))
    assert_one_line(result, f"--record directory {record}: not a directory")


def test_a_broken_config_exits_78_in_every_command(world: Path) -> None:
    config = world / "broken.yaml"
    config.write_text("feeds: {eth: {symbol: ETH/USDT, stale_afer: 5m}}\n")
    for argv in (["run"], ["check-config"], ["outbox"], ["silence", "--list"], ["test-alert"]):
        result = moodring(*argv, "-c", str(config))
        assert result.returncode == EX_CONFIG, (argv, result.stderr)
        assert "feeds.eth.stale_afer (line 1): unknown key" in result.stderr, argv
        assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["backtest", "--sample", "--metrics-out"], "--metrics-out"),
        (["digest", "--sample", "--chart"], "--chart"),
    ],
    ids=["metrics-out", "digest-chart"],
)
def test_an_output_file_that_cannot_be_written(world: Path, argv: list[str], flag: str) -> None:
    target = world / "missing" / "out"
    result = moodring(*argv, str(target))
    assert_one_line(result, f"{flag} {target}: cannot use it: no such file or directory")


def test_a_history_file_that_cannot_be_read(world: Path) -> None:
    result = moodring("backtest", "--data", f"eth={world / 'missing.csv'}")
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    wanted = f"moodring: {world / 'missing.csv'}: cannot read it: no such file or directory"
    assert wanted in result.stderr.splitlines(), result.stderr
