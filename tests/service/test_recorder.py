"""``--record DIR`` across a restart: the file goes on after the bars the run before wrote."""

from __future__ import annotations

from pathlib import Path

from moodring.backtest.csvfile import load_csv
from moodring.market.builder import BarBuilder
from moodring.market.timeframe import Timeframe
from moodring.service.recorder import BarRecorder

MINUTE = 60_000


def run(record: Path, minutes: range) -> None:
    """Record the 1m bars of one trade a minute, as a run warmed up from history would."""
    recorder = BarRecorder(record)
    builder = BarBuilder(Timeframe.parse("1m"))
    recorder.attach("eth", builder)
    for minute in minutes:
        builder.add_trade(minute * MINUTE, 100.0 + minute, 1.0)
    recorder.close()


def test_a_restart_appends_only_the_bars_after_the_last_recorded(tmp_path: Path) -> None:
    run(tmp_path, range(10))
    # the second run's warm-up replays minutes 3 to 8 before its new bars
    run(tmp_path, range(3, 15))
    bars = load_csv(tmp_path / "eth_1m.csv").bars
    assert bars.time.tolist() == [m * MINUTE for m in range(14)]
    assert bars.close.tolist() == [100.0 + m for m in range(14)]
