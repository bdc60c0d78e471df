"""Threshold sweeps and the HTML report on the shipped config and the longest real daily history.

History: Binance ETH and BTC 2017-08-17 -> 2026-01-06 (3,065 daily bars, 8.4 years), Yahoo
^RUT and the altcoin universe of ../shared/data, as the README's shipped-rules backtest.
Measured in-process through the CLI (stdout discarded), best of RUNS:
(a) the backtest alone; (b) the same with a 100-value sweep of a level rule's threshold;
(c) with a 1,000-value sweep of an edge rule (values/s beyond the backtest); (d) a
100-value sweep of the composite rule; (e) the report alone and with the sweep of (b):
time and size. Last line: one JSON object.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import tempfile
import time
from pathlib import Path

from moodring.cli import main

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "daily"
ARGS = [
    f"--data=eth={DATA}/binance_yanniedog/ETHUSDT_1d.csv",
    f"--data=btc={DATA}/binance_yanniedog/BTCUSDT_1d.csv",
    f"--data=rut={DATA}/yahoo_alitalbi/RUT.csv",
    f"--universe={DATA}/binance_alts_gnguyenquant",
    f"--universe={DATA}/binance_alts/SHIBUSDT_1d.csv",
    f"--universe={DATA}/binance_yanniedog/ETHUSDT_1d.csv",
]
LEVEL = "eth-rut-decoupling.condition.below=0.1:0.4465:0.0035"  # 100 values
EDGE = "eth-mfi-enters-bullish-band.condition.enters.band.0=20:49.97:0.03"  # 1,000 values
COMPOSITE = "eth-decoupled-and-leading.all.0.below=0.3:0.5:0.00202"  # 100 values
RUNS = 3


def backtest(*extra: str) -> float:
    """Return the best wall time of the backtest with ``extra`` arguments."""
    best = float("inf")
    for _ in range(RUNS):
        start = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            assert main(["--log-level=WARNING", "backtest", *ARGS, *extra]) == 0
        best = min(best, time.perf_counter() - start)
    return best


def run() -> dict[str, float]:
    logging.disable(logging.WARNING)
    base = backtest()
    level = backtest("--sweep", LEVEL)
    edge = backtest("--sweep", EDGE)
    composite = backtest("--sweep", COMPOSITE)
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "report.html"
        report = backtest("--report", str(page))
        report_mb = page.stat().st_size / 1e6
        swept = backtest("--report", str(page), "--sweep", LEVEL)
        swept_mb = page.stat().st_size / 1e6
    figures = {
        "backtest_s": round(base, 3),
        "level_sweep_100_extra_s": round(level - base, 3),
        "edge_sweep_values_per_s": round(1000 / (edge - base)),
        "composite_sweep_100_extra_s": round(composite - base, 3),
        "report_extra_s": round(report - base, 3),
        "report_mb": round(report_mb, 2),
        "report_with_sweep_extra_s": round(swept - base, 3),
        "report_with_sweep_mb": round(swept_mb, 2),
    }
    print(f"backtest alone (3,065 daily bars, 13 rules): {base:.3f} s")
    print(f"100 values of {LEVEL.split('=')[0]}: +{level - base:.3f} s")
    print(f"1,000 values of {EDGE.split('=')[0]}: {1000 / (edge - base):.0f} values/s")
    print(f"100 values of {COMPOSITE.split('=')[0]}: +{composite - base:.3f} s")
    print(f"report: +{report - base:.3f} s, {report_mb:.2f} MB")
    print(f"report with the 100-value sweep: +{swept - base:.3f} s, {swept_mb:.2f} MB")
    return figures


if __name__ == "__main__":
    print(json.dumps(run()))
