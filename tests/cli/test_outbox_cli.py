"""``moodring outbox``: list pending and dead deliveries, requeue or drop them."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from moodring.configfile import load_settings
from moodring.delivery.dispatcher import Dispatcher
from moodring.delivery.outbox import Outbox
from moodring.delivery.sender import target_id
from moodring.rules.alert import Alert
from tests.support.cli import run
from tests.support.receiver import Receiver

# no user, system or environment config around
pytestmark = pytest.mark.usefixtures("isolated")


def alert(i: int) -> Alert:
    return Alert(
        "decoupling",
        "firing",
        1_714_521_600_000 + i * 60_000,
        "corr",
        0.1,
        "warning",
        f"title {i}",
        f"alert {i}",
    )


def setup(tmp_path: Path, receiver: Receiver) -> tuple[Path, Path, str]:
    """Return a config, its outbox (a dead row 1, pending rows 2 and 3) and the target's id."""
    url = f"json://user:secretpass@127.0.0.1:{receiver.port}/hook"
    state = tmp_path / "state"
    cfg = {
        "feeds": {"eth": {"symbol": "ETH/USDT"}},
        "notify": {"urls": [url]},
        "state_dir": str(state),
    }
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    path.chmod(0o600)
    tid = target_id(url)
    with Outbox(state / "outbox.sqlite") as box:
        for i in range(3):
            box.add(alert(i), [tid])
        box.mark_dead(1, "refused: apprise FAILURE: Bad Request, error=400.", time.time(), True)
        box.mark_failed(2, "apprise FAILURE: connection refused", time.time() + 60)
    return path, state / "outbox.sqlite", tid


def test_the_listing_masks_secrets_and_counts(capsys, tmp_path: Path, receiver: Receiver) -> None:
    config, _, _ = setup(tmp_path, receiver)
    code, out, err = run(capsys, "outbox", "-c", str(config))
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == [
        "id",
        "target",
        "rule",
        "state",
        "bar",
        "time",
        "attempts",
        "age",
        "last",
        "error",
    ]
    one, two, three = (line.split() for line in lines[1:4])
    masked = f"json://user:****@127.0.0.1:{receiver.port}/hook"
    assert one[:6] == ["1", masked, "decoupling", "dead", "2024-05-01T00:00:00Z", "1"]
    assert " ".join(one[7:]) == "refused: apprise FAILURE: Bad Request, error=400."
    assert two[3:6] == ["pending", "2024-05-01T00:01:00Z", "1"]
    assert three[3:6] == ["pending", "2024-05-01T00:02:00Z", "0"] and three[-1] == "-"
    assert lines[4:] == ["2 pending, 1 dead"]
    assert "secretpass" not in out + err


async def test_retry_requeues_a_dead_delivery_that_then_goes_out(
    capsys, tmp_path: Path, receiver: Receiver
) -> None:
    config, outbox_path, _ = setup(tmp_path, receiver)
    code, out, _ = run(capsys, "outbox", "-c", str(config), "--retry", "1")
    assert code == 0
    assert out.splitlines()[0] == (
        f"requeued delivery 1 (decoupling firing) to json://user:****@127.0.0.1:{receiver.port}/hook"
    )
    with Outbox(outbox_path) as box:
        row = box.get(1)
        assert row is not None and (row.state, row.attempts) == ("pending", 0)
        box.requeue(2)  # not due for a minute otherwise
        assert await Dispatcher(box, load_settings(config).notify).drain(20)
    assert receiver.messages == ["alert 0", "alert 1", "alert 2"]


def test_all_dead_and_drop(capsys, tmp_path: Path, receiver: Receiver) -> None:
    config, outbox_path, tid = setup(tmp_path, receiver)
    code, out, _ = run(capsys, "outbox", "-c", str(config), "--drop", "3")
    assert (code, out.split(" to ")[0]) == (0, "dropped delivery 3 (decoupling firing)")
    code, out, _ = run(capsys, "outbox", "-c", str(config), "--all-dead")
    assert (code, out.splitlines()[0]) == (0, "requeued 1 dead delivery(ies)")
    with Outbox(outbox_path) as box:
        assert [(d.id, d.state) for d in box.undelivered()] == [(1, "pending"), (2, "pending")]
        assert box.pending(tid)[0].queued > box.pending(tid)[0].added
    code, out, _ = run(capsys, "outbox", "-c", str(config), "--all-dead")
    assert (code, out) == (0, "requeued 0 dead delivery(ies)\n")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--retry", "abc"],
            "--retry takes a delivery id (a number from moodring outbox), not 'abc'",
        ),
        (["--drop", "-1"], "--drop takes a delivery id (a number from moodring outbox), not '-1'"),
        (["--retry", "99"], "--retry 99: no pending or dead delivery has this id"),
        (["--drop", "99"], "--drop 99: no pending or dead delivery has this id"),
    ],
)
def test_bad_ids_are_one_line(
    capsys, tmp_path: Path, receiver: Receiver, argv: list[str], message: str
) -> None:
    config, _, _ = setup(tmp_path, receiver)
    code, out, err = run(capsys, "outbox", "-c", str(config), *argv)
    assert (code, out) == (1, "")
    assert err.splitlines()[-1] == f"moodring: {message}"
    assert "Traceback" not in err


def test_without_an_outbox(capsys, tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        yaml.safe_dump(
            {"feeds": {"eth": {"symbol": "ETH/USDT"}}, "state_dir": str(tmp_path / "none")}
        )
    )
    code, out, _ = run(capsys, "outbox", "-c", str(path))
    assert (code, out) == (
        0,
        f"no outbox at {tmp_path / 'none' / 'outbox.sqlite'}: nothing pending or dead\n",
    )
    assert not (tmp_path / "none").exists()
    code, _, err = run(capsys, "outbox", "-c", str(path), "--retry", "1")
    assert code == 1 and "--retry 1: there is no outbox at" in err
