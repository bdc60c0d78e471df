"""Ordinary command-line mistakes: one sentence naming the argument, a fitting exit code.

Exit codes: 2 an argument that cannot be used, 1 data that cannot give what was asked,
73 an unusable state directory or output file, 78 an invalid config.
"""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path

import pytest

from moodring.cli import main

SAMPLE_DATA = ["--sample"]


@pytest.fixture(autouse=True)
def work(isolated: Path) -> Path:
    """Run in an isolated directory holding a folder, a plain file and a config."""
    (isolated / "folder").mkdir()
    (isolated / "file.txt").write_text("not a folder\n")
    (isolated / "exists.yaml").write_text("extends: default\n")
    return isolated


def run(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own errors
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def closed_port() -> int:
    """Return a loopback port nothing listens on (bound once, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# (argv, exit code, what the last line of stderr names: the argument and the value)
MISTAKES: list[tuple[list[str], int, str]] = [
    (["nope"], 2, "invalid choice: 'nope'"),
    (["--log-level", "loud", "check-config"], 2, "--log-level: invalid choice: 'LOUD'"),
    (["check-config", "--log-format", "xml"], 2, "--log-format: invalid choice: 'xml'"),
    (["run", "-c", "missing.yaml"], 78, "missing.yaml: config file not found"),
    (["run", "--record", "file.txt"], 73, "--record directory file.txt: not a directory"),
    (["run", "--bogus"], 2, "unrecognized arguments: --bogus"),
    (["demo", "--speed", "fast"], 2, "--speed: invalid float value: 'fast'"),
    (["demo", "--record", "file.txt"], 73, "--record directory file.txt: not a directory"),
    (["backtest", "--data", "eth=missing.csv"], 2, "--data eth=missing.csv: no such file"),
    (["backtest", "--data", "eth=folder"], 2, "--data eth=folder: is a folder, not a file"),
    (["backtest", "--data", "eth"], 2, "--data takes FEED=PATH, got 'eth'"),
    (["backtest", "--data", "sol=x.csv"], 2, "--data names unknown feed(s) ['sol']"),
    (["backtest"], 2, "no history given"),
    (
        ["backtest", *SAMPLE_DATA, "--metrics-out", "nowhere/m.csv"],
        2,
        "--metrics-out nowhere/m.csv: no folder nowhere",
    ),
    (["backtest", *SAMPLE_DATA, "--metrics-out", "folder"], 2, "--metrics-out folder: is a folder"),
    (
        ["backtest", *SAMPLE_DATA, "--report", "nowhere/r.html"],
        2,
        "--report nowhere/r.html: no folder nowhere",
    ),
    (["backtest", *SAMPLE_DATA, "--sweep", "nope"], 2, "--sweep takes RULE.PATH=START:STOP:STEP"),
    (
        ["backtest", *SAMPLE_DATA, "--to", "2010-01-01"],
        1,
        "--to 2010-01-01 is before the data: the data runs from 2024-07-13 to 2026-01-05",
    ),
    (
        ["backtest", *SAMPLE_DATA, "--from", "2030-01-01"],
        1,
        "--from 2030-01-01 is after the data: the data runs from 2024-07-13 to 2026-01-05",
    ),
    (
        ["backtest", *SAMPLE_DATA, "--from", "2025-06-01", "--to", "2025-01-01"],
        2,
        "--from 2025-06-01 is later than --to 2025-01-01",
    ),
    (["backtest", *SAMPLE_DATA, "--from", "yesterday"], 2, "not an ISO date or datetime"),
    (["backtest", *SAMPLE_DATA, "--format", "xml"], 2, "--format: invalid choice: 'xml'"),
    (
        ["backtest", "--data", "btc=missing.csv", "--universe", "folder"],
        2,
        "--data btc=missing.csv: no such file",
    ),
    (["silence"], 2, "silence takes RULE --for DURATION"),
    (["silence", "nope", "--for", "1h"], 2, "no rule named 'nope'"),
    (["silence", "eth-mfi-oversold", "--for", "soon"], 2, "--for: invalid duration 'soon'"),
    (["outbox", "--retry", "abc"], 2, "--retry takes a delivery id"),
    (["outbox", "--retry", "1", "--drop", "1"], 2, "not allowed with argument --retry"),
    (["outbox", "--retry", "1"], 1, "--retry 1: there is no outbox at"),
    (["test-alert"], 1, "no notify.urls configured"),
    (["digest", "--data", "eth=missing.csv"], 2, "--data eth=missing.csv: no such file"),
    (["digest", *SAMPLE_DATA, "--at", "2010-01-01"], 1, "--at 2010-01-01 is before the data"),
    (["digest", *SAMPLE_DATA, "--at", "never"], 2, "--at: not an ISO date or datetime: 'never'"),
    (
        ["digest", *SAMPLE_DATA, "--chart", "nowhere/d.png"],
        2,
        "--chart nowhere/d.png: no folder nowhere",
    ),
    (["check-config", "-c", "missing.yaml"], 78, "missing.yaml: config file not found"),
    (["check-config", "-c", "folder"], 78, "folder: not a file"),
    (["show-config", "-c", "missing.yaml"], 78, "missing.yaml: config file not found"),
    (["init", "exists.yaml"], 1, "init exists.yaml: the file exists; --force replaces it"),
    (["init", "folder"], 2, "init folder: is a folder"),
    (["init", "x.yaml", "--system"], 2, "init takes PATH or --system, not both"),
    (["healthcheck", "--timeout", "soon"], 2, "--timeout: invalid float value: 'soon'"),
    (["completion", "fish"], 2, "invalid choice: 'fish'"),
    (["check-feeds", "--timeout", "soon"], 2, "--timeout: not a number of seconds: 'soon'"),
    (["check-feeds", "--timeout", "0"], 2, "--timeout: must be between 0 and 300 seconds"),
    (["check-feeds", "-c", "missing.yaml"], 78, "missing.yaml: config file not found"),
]


@pytest.mark.parametrize(
    ("argv", "code", "message"), MISTAKES, ids=[" ".join(m[0]) for m in MISTAKES]
)
def test_each_mistake_is_one_sentence_and_an_exit_code(
    capsys: pytest.CaptureFixture[str], argv: list[str], code: int, message: str
) -> None:
    got, out, err = run(capsys, argv)
    assert "Traceback" not in err and "Traceback" not in out
    assert got == code, err
    assert message in err.splitlines()[-1], err
    assert err.splitlines()[-1].startswith(("moodring: ", "moodring ", "usage:")), err


def test_every_subcommand_is_in_the_table() -> None:
    from moodring.cli import _parser

    commands = next(a for a in _parser()._actions if a.dest == "command").choices
    tried = {argv[0] for argv, _, _ in MISTAKES}
    assert set(commands) <= tried


def test_a_healthcheck_with_nothing_listening_says_so(
    capsys: pytest.CaptureFixture[str], isolated: Path
) -> None:
    config = isolated / "c.yaml"
    port = closed_port()
    config.write_text(f"extends: default\nhttp: {{port: {port}}}\n")
    code, out, err = run(capsys, ["healthcheck", "-c", str(config)])
    assert (code, err) == (1, "")
    assert out.startswith(f"unhealthy: nothing answers at http://127.0.0.1:{port}/healthz (")
    assert len(out.splitlines()) == 1


@pytest.mark.parametrize(
    ("http", "message"),
    [
        ("{enabled: false}", "http.enabled is false"),
        ("{port: 0}", "http.port is 0"),
    ],
)
def test_a_healthcheck_without_a_fixed_port_says_why(
    capsys: pytest.CaptureFixture[str], isolated: Path, http: str, message: str
) -> None:
    config = isolated / "c.yaml"
    config.write_text(f"extends: default\nhttp: {http}\n")
    code, out, _ = run(capsys, ["healthcheck", "-c", str(config)])
    assert code == 1 and message in out


def test_a_feed_without_bars_before_to_is_left_out(capsys: pytest.CaptureFixture[str]) -> None:
    # the sample has no ^RUT bar on 2024-07-13 and -14 (a weekend) but ETH and BTC have
    code, _, err = run(capsys, ["backtest", "--sample", "--to", "2024-07-14"])
    assert code == 0, err
    assert "rut: no bars before --to 2024-07-14 (its data starts 2024-07-15): left out" in err


def test_silence_digest_works_as_the_readme_says(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, ["silence", "digest", "--for", "1h30m", "--reason", "holiday"])
    assert code == 0, err
    assert out.startswith("silenced digest until ")
    code, out, _ = run(capsys, ["silence", "--list"])
    assert code == 0 and out.startswith("digest  until ") and "(1h 30m left)" in out


def test_silence_digest_needs_a_digest(capsys: pytest.CaptureFixture[str], isolated: Path) -> None:
    config = isolated / "c.yaml"
    config.write_text("extends: default\ndigest: null\n")
    code, _, err = run(capsys, ["silence", "-c", str(config), "digest", "--for", "1h"])
    assert code == 2 and "no rule named 'digest'" in err


@pytest.mark.parametrize("where", ["before", "after"])
def test_log_options_work_before_and_after_the_command(
    capsys: pytest.CaptureFixture[str], where: str
) -> None:
    flags = ["--log-level", "warning", "--log-format", "json"]
    argv = [*flags, "check-config"] if where == "before" else ["check-config", *flags]
    code, out, err = run(capsys, argv)
    assert code == 0 and out.endswith(": ok (3 feeds, 7 metrics, 13 rules)\n")
    assert err == ""  # the INFO line naming the config is below --log-level warning
    flags = ["--log-format", "json"]
    code, _, err = run(capsys, [*flags, "check-config"] if where == "before" else argv[:1] + flags)
    assert code == 0
    line = json.loads(err.splitlines()[0])
    assert line["level"] == "INFO" and line["message"].startswith("config: ")


def test_the_option_after_the_command_wins(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, ["--log-level", "error", "check-config", "--log-level", "info"])
    assert code == 0 and " INFO moodring: config: " in err


def test_log_settings_from_the_environment(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MOODRING_LOG_FORMAT", "json")
    code, _, err = run(capsys, ["check-config"])
    assert code == 0 and json.loads(err.splitlines()[0])["logger"] == "moodring"
    monkeypatch.setenv("MOODRING_LOG_LEVEL", "warning")
    assert run(capsys, ["check-config"])[2] == ""
    assert (
        " INFO " in run(capsys, ["check-config", "--log-level", "info", "--log-format", "text"])[2]
    )
    monkeypatch.setenv("MOODRING_LOG_LEVEL", "loud")
    code, _, err = run(capsys, ["check-config"])
    assert code == 2
    assert "$MOODRING_LOG_LEVEL='loud': expected one of DEBUG, INFO, WARNING, ERROR" in err


async def test_the_healthcheck_asks_the_configured_port(
    capsys: pytest.CaptureFixture[str], isolated: Path
) -> None:
    from moodring.service.telemetry import HttpEndpoint, Telemetry
    from moodring.settings import HttpConfig

    telemetry = Telemetry(feed_states={"eth": "ok", "rut": "closed"})
    # bound as in the Docker image; the healthcheck asks on the loopback address
    async with HttpEndpoint(HttpConfig(host="0.0.0.0", port=0), telemetry) as server:
        config = isolated / "c.yaml"
        config.write_text(f"extends: default\nhttp: {{host: 0.0.0.0, port: {server.port}}}\n")
        url = f"http://127.0.0.1:{server.port}/healthz"
        argv = ["healthcheck", "-c", str(config)]
        code, out, err = await asyncio.to_thread(run, capsys, argv)
        assert (code, out, err) == (
            1,
            f"unhealthy: {url} answered 503 (starting; eth ok, rut closed)\n",
            "",
        )
        telemetry.mark_ready()
        code, out, err = await asyncio.to_thread(run, capsys, argv)
        assert (code, out, err) == (
            0,
            f"healthy: {url} answered 200 (ok; eth ok, rut closed)\n",
            "",
        )
