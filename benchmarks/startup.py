"""Start-up time of the ``moodring`` command: ``--help`` and ``--version``.

Each command runs RUNS times as a fresh process (``python -m moodring …``, and the
installed ``moodring`` script when there is one); the figures are the median and the
fastest wall time, beside a bare ``python -c pass`` for the interpreter's own share. The
modules ``moodring --version`` imports are listed by ``-X importtime`` so a heavy import
that creeps back into the command line shows up by name. Last line: one JSON object.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

RUNS = 15
ROOT = Path(__file__).resolve().parents[1]
GOAL_S = 0.25


def timed(argv: list[str]) -> dict[str, float]:
    """Return the median and fastest wall time of RUNS runs of ``argv``."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "daemon")}
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - start)
    return {"median_s": round(statistics.median(times), 4), "min_s": round(min(times), 4)}


def heaviest_imports(count: int = 8) -> list[tuple[str, float]]:
    """Return the modules ``--version`` imports that take longest (cumulative seconds)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "daemon")}
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "moodring", "--version"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    found = []
    for line in done.stderr.splitlines():
        parts = line.removeprefix("import time:").split("|")
        if len(parts) == 3 and parts[1].strip().isdigit():
            found.append((parts[2].strip(), int(parts[1]) / 1e6))
    return sorted(found, key=lambda item: -item[1])[:count]


def main() -> None:
    """Print one line per command, the heaviest imports, then a JSON summary."""
    results = {"python -c pass": timed([sys.executable, "-c", "pass"])}
    for flag in ("--version", "--help"):
        results[f"python -m moodring {flag}"] = timed([sys.executable, "-m", "moodring", flag])
    script = shutil.which("moodring")
    if script is not None:
        for flag in ("--version", "--help"):
            results[f"moodring {flag}"] = timed([script, flag])
    for name, figures in results.items():
        print(f"{name:32} median {figures['median_s']:.3f} s  min {figures['min_s']:.3f} s")
    print("heaviest imports of --version (cumulative):")
    for module, seconds in heaviest_imports():
        print(f"  {module:40} {seconds:.3f} s")
    worst = max(v["median_s"] for k, v in results.items() if "moodring" in k)
    print(json.dumps({"runs": RUNS, "goal_s": GOAL_S, "worst_median_s": worst, **results}))


if __name__ == "__main__":
    main()
