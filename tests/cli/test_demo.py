"""``moodring demo`` as a new user runs it: the story, then live alerts, then Ctrl-C."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

from tests.support.paths import ROOT

LIVE_ALERT = re.compile(r"^2024-08-\d\d \d\d:\d\d  ")


def test_demo_tells_the_story_then_alerts_live_until_ctrl_c(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "daemon")}
    env.pop("MOODRING_CONFIG", None)
    command = [sys.executable, "-m", "moodring.cli", "demo", "--speed", "60"]
    with (tmp_path / "stderr").open("w") as stderr:
        demo = subprocess.Popen(
            [*command, "--charts", str(tmp_path / "charts")],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env=env,
            cwd=tmp_path,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
    watchdog = threading.Timer(180, demo.kill)
    watchdog.start()
    lines: list[str] = []
    interrupted = False
    try:
        assert demo.stdout is not None
        for line in iter(demo.stdout.readline, ""):
            lines.append(line.rstrip("\n"))
            if LIVE_ALERT.match(line) and not interrupted:
                demo.send_signal(signal.SIGINT)  # the first live alert: Ctrl-C
                interrupted = True
        demo.wait()
    finally:
        watchdog.cancel()
        if demo.stdout is not None:
            demo.stdout.close()
    text = "\n".join(lines)
    # a machine too busy to stop the feeds within their bound says so (CI runs 4 workers)
    errors = "".join(
        line
        for line in (tmp_path / "stderr").read_text().splitlines(keepends=True)
        if "did not stop within" not in line
    )
    assert any(LIVE_ALERT.match(x) for x in lines), text
    # the fakes, ccxt and the daemon's info lines stay quiet: nothing but warnings may log
    assert errors == "", errors
    assert "warmed up" not in text
    shown = [x for x in lines if re.match(r"^20\d\d-\d\d-\d\d[ \d:]*  ", x)]
    story = [x for x in shown if not LIVE_ALERT.match(x)]
    titles = {x.split("  ", 2)[2].strip() for x in story}
    # the project's headline, the ETH/BTC break and the MFI band from the bundled history
    assert {"ETH decoupling from the Russell 2000", "ETH/BTC breaks out up"} <= titles
    assert "ETH money flow turns bullish" in titles
    assert len(shown) == len(set(shown)), "each alert is printed once"
    charts = [Path(x.split("chart: ", 1)[1]) for x in lines if "chart: " in x]
    assert charts and all(p.is_file() and p.read_bytes()[:4] == b"\x89PNG" for p in charts)
    assert lines[-1] == (
        f"moodring demo stopped by Ctrl-C: {len(shown)} alert(s) shown, {len(charts)} "
        f"chart(s) saved in {tmp_path / 'charts'}"
    ), text
    assert demo.returncode == 0


def test_demo_logs_json_lines_with_the_alerts_fields(capsys) -> None:
    from moodring.cli import main

    argv = ["--log-format", "json", "demo", "--verbose", "--for", "20", "--speed", "30"]
    assert main(argv) == 0
    # --log-format json: every line of stderr is an object; alerts carry their rule and key
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    logged = [line for line in lines if line["message"].startswith("ALERT ")]
    assert logged, "the daemon logs each alert with its rendered message"
    assert all(
        line["level"] == "INFO" and line["alert_key"].startswith(line["rule"] + "|")
        for line in logged
    )
    queued = [line for line in lines if line["message"].startswith("alert ")]
    assert queued and all(line["alert_key"].startswith(line["rule"] + "|") for line in queued)
