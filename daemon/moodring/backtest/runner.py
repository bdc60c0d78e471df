"""Backtests: history through the engine, by the streaming path or the vectorised batch path."""

from __future__ import annotations

import heapq
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np

from moodring.backtest.table import MetricTable
from moodring.engine import Engine, MetricNode, make_indicator, output_names
from moodring.market.bar import Bar
from moodring.market.frame import BarFrame, join_frames, ratio_frame
from moodring.market.resample import infer_step, resample
from moodring.market.timeframe import Timeframe
from moodring.metrics.base import PairIndicator
from moodring.settings import Settings


@dataclass(frozen=True, slots=True)
class FeedHistory:
    """A feed's history bars and their length in milliseconds."""

    bars: BarFrame
    step_ms: int

    @classmethod
    def of(cls, bars: BarFrame) -> FeedHistory:
        """Wrap bars, inferring their length from the most common gap."""
        return cls(bars, infer_step(bars.time))

    def until(self, end_ms: int | None) -> FeedHistory:
        """Return the bars that open before ``end_ms``."""
        return FeedHistory(self.bars.between(None, end_ms), self.step_ms)


def runnable_metrics(settings: Settings, feeds: set[str]) -> tuple[list[str], list[str]]:
    """Split the configured metrics into those the given feeds can compute and the rest."""
    ok, missing = [], []
    for name, config in settings.metrics.items():
        legs: list[str] = []
        for series in config.inputs():
            ratio = settings.series.get(series)
            legs.extend(ratio.ratio if ratio else (series,))
        (ok if set(legs) <= feeds else missing).append(name)
    return ok, missing


def run_batch(
    settings: Settings, history: Mapping[str, FeedHistory], metrics: list[str]
) -> MetricTable:
    """Compute the metrics over whole histories at once with the indicators' batch methods."""
    frames: dict[tuple[str, str], BarFrame] = {}

    def frame(series: str, timeframe: str) -> BarFrame:
        key = (series, timeframe)
        if key not in frames:
            ratio = settings.series.get(series)
            if ratio is not None:
                frames[key] = ratio_frame(*(frame(leg, timeframe) for leg in ratio.ratio))
            else:
                feed = history[series]
                frames[key] = resample(feed.bars, feed.step_ms, Timeframe.parse(timeframe))
        return frames[key]

    series: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name in metrics:
        config = settings.metrics[name]
        indicator = make_indicator(config)
        inputs = [frame(s, config.timeframe) for s in config.inputs()]
        if isinstance(indicator, PairIndicator):
            a, b = join_frames(inputs[0], inputs[1])
            times, values = a.time, indicator.batch(a, b)
        else:
            times, values = inputs[0].time, indicator.batch(inputs[0])
        for j, column in enumerate(output_names(name, indicator)):
            series[column] = (times, values[:, j])
    return MetricTable.from_series(series)


def run_streaming(
    settings: Settings, history: Mapping[str, FeedHistory], metrics: list[str]
) -> MetricTable:
    """Feed every history bar, in time order across feeds, through the daemon's engine."""
    subset = settings.model_copy(
        update={"metrics": {name: settings.metrics[name] for name in metrics}}
    )
    engine = Engine(subset)
    recorded: dict[str, tuple[list[int], list[float]]] = {
        column: ([], []) for node in engine.metrics.values() for column in node.outputs
    }

    def record(node: MetricNode, time: int) -> None:
        for column, value in zip(node.outputs, node.values, strict=True):
            times, values = recorded[column]
            times.append(time)
            values.append(value)

    engine.subscribe(record)
    for feed, t, bar in merged_bars(history):
        engine.on_candle(feed, t, bar, closed=True, length_ms=history[feed].step_ms)
    return MetricTable.from_series(
        {
            column: (np.asarray(times, np.int64), np.asarray(values, np.float64))
            for column, (times, values) in recorded.items()
        }
    )


def merged_bars(history: Mapping[str, FeedHistory]) -> Iterator[tuple[str, int, Bar]]:
    """Yield (feed, time, bar) for every history bar in time order, feeds in config order."""

    def rows(rank: int, feed: str) -> Iterator[tuple[int, int, str, Bar]]:
        b = history[feed].bars
        for row in zip(
            b.time.tolist(), b.open.tolist(), b.high.tolist(), b.low.tolist(),
            b.close.tolist(), b.volume.tolist(), strict=True,
        ):  # fmt: skip
            yield row[0], rank, feed, Bar(*row)

    streams = [rows(rank, feed) for rank, feed in enumerate(history)]
    for t, _, feed, bar in heapq.merge(*streams):
        yield feed, t, bar
