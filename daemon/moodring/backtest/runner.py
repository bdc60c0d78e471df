"""Backtests: history through the engine, by the streaming path or the vectorised batch path."""

from __future__ import annotations

import heapq
from collections.abc import Callable, Container, Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass

import numpy as np

from moodring.backtest.table import MetricTable
from moodring.engine import MetricNode, join_cadence
from moodring.feedstate import FeedState
from moodring.market.bar import Bar
from moodring.market.frame import BarFrame, join_frames, ratio_frame
from moodring.market.jumps import Jump, jump_rows
from moodring.market.resample import infer_step, merge_rows, resample
from moodring.market.sessions import Sessions, meets_session
from moodring.market.timeframe import Timeframe
from moodring.metrics.altseason import DAY_MS
from moodring.metrics.base import PairIndicator, indicator_for
from moodring.pipeline import Pipeline
from moodring.rules.alert import Alert, AlertState
from moodring.rules.book import Rule, RuleBook
from moodring.settings import Settings, output_columns


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


@dataclass(frozen=True, slots=True)
class CleanHistory:
    """A feed's history on bar open times, and what cleaning it took out."""

    history: FeedHistory
    merged_rows: int  # rows folded into a bar another row of the file had opened
    merged_bars: np.ndarray  # open times of the bars that took several rows
    closed: np.ndarray  # open times of the bars dropped: no session of the feed's calendar


def clean_history(bars: BarFrame, calendar: Sessions | None = None) -> CleanHistory:
    """Put a file's rows on their bars (merging rows in one bar) and drop closed-market bars.

    The data's bar length is its most common gap. With a ``calendar``, bars that meet none
    of its sessions (a futures row on a holiday or a Sunday) are dropped.
    """
    step = infer_step(bars.time)
    on_bars, merged = merge_rows(bars, step)
    closed = on_bars.time[:0]
    if calendar is not None:
        open_ = meets_session(on_bars.time, step, calendar)
        closed = on_bars.time[~open_]
        if closed.shape[0]:
            on_bars = on_bars.take(np.flatnonzero(open_))
    merged_rows = len(bars) - len(on_bars) - closed.shape[0]
    return CleanHistory(FeedHistory(on_bars, step), merged_rows, merged, closed)


def runnable_metrics(settings: Settings, feeds: set[str]) -> tuple[list[str], list[str]]:
    """Split the configured metrics into those the given feeds can compute and the rest."""
    ok, missing = [], []
    for name, config in settings.metrics.items():
        (ok if set(settings.feeds_of(config.inputs())) <= feeds else missing).append(name)
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
        indicator = indicator_for(config)
        inputs = [frame(s, config.timeframe) for s in config.inputs()]
        if isinstance(indicator, PairIndicator):
            a, b = join_frames(inputs[0], inputs[1])
            cadence = join_cadence(settings, config)
            after_gap = None if cadence is None else cadence.after_gap(a.time)
            times, values = a.time, indicator.batch(a, b, after_gap)
        else:
            times, values = inputs[0].time, indicator.batch(inputs[0])
        for j, column in enumerate(output_columns(name, config)):
            series[column] = (times, values[:, j])
    return MetricTable.from_series(series)


def run_streaming(
    settings: Settings,
    history: Mapping[str, FeedHistory],
    metrics: list[str],
    alerts: list[Alert] | None = None,
    externals: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
    on_jump: Callable[[Jump], None] | None = None,
) -> MetricTable:
    """Feed every history bar, in time order across feeds, through the daemon's engine.

    Bars of the same time are one moment for the rules; with ``alerts`` given, the
    engine's rules run too and what they would have sent is appended to it. ``externals``
    daily values (the altseason columns: day open times, values) are set closed in
    the moment their day's last data bar is fed, as the daemon sets them once the
    day has closed. ``on_jump`` gets each bar the engine finds beyond its feed's
    ``max_jump``.
    """
    subset = _only(settings, metrics, with_rules=alerts is not None)
    engine = Pipeline(subset)
    if alerts is not None:
        engine.rules.subscribe(alerts.append)
    if on_jump is not None:
        engine.subscribe_jumps(on_jump)
    feed_events = stale_events(subset, history)
    recorded: dict[str, tuple[list[int], list[float]]] = {
        column: ([], []) for node in engine.metrics.values() for column in node.outputs
    }

    def record(node: MetricNode, time: int) -> None:
        for column, value in zip(node.outputs, node.values, strict=True):
            times, values = recorded[column]
            times.append(time)
            values.append(value)

    engine.subscribe(record)
    moment: int | None = None
    stack = ExitStack()
    for t, feed, item in _events(history, externals or {}):
        if t != moment:
            stack.close()
            while feed_events and feed_events[0][0] <= t:
                engine.rules.set_feed_state(*_feed_event(feed_events.pop(0)))
            stack.enter_context(engine.deferred())
            moment = t
        if isinstance(item, Bar):
            engine.on_candle(feed, t, item, closed=True, length_ms=history[feed].step_ms)
        else:
            engine.set_external(feed, item[0], item[1], closed=True)
    stack.close()
    for event in feed_events:
        engine.rules.set_feed_state(*_feed_event(event))
    return MetricTable.from_series(
        {
            column: (np.asarray(times, np.int64), np.asarray(values, np.float64))
            for column, (times, values) in recorded.items()
        }
    )


def find_jumps(
    settings: Settings, history: Mapping[str, FeedHistory], metrics: Sequence[str]
) -> list[Jump]:
    """Return, in time order, the bars of the metrics' timeframes beyond their feed's max_jump.

    These are the bars the engine flags on the streaming path: each feed with a
    ``max_jump`` at each timeframe a metric reads it in (directly or through a ratio).
    """
    wanted: set[tuple[str, str]] = set()
    for name in metrics:
        config = settings.metrics[name]
        for feed in settings.feeds_of(config.inputs()):
            if settings.feeds[feed].max_jump is not None and feed in history:
                wanted.add((feed, config.timeframe))
    jumps: list[Jump] = []
    for feed, timeframe in sorted(wanted):
        limit = settings.feeds[feed].max_jump or 0.0
        h = history[feed]
        bars = resample(h.bars, h.step_ms, Timeframe.parse(timeframe))
        close, times = bars.close.tolist(), bars.time.tolist()
        for i in jump_rows(bars.close, limit).tolist():
            jumps.append(Jump(feed, timeframe, times[i], close[i - 1], close[i], limit))
    return sorted(jumps, key=lambda jump: jump.time)


def evaluate_rules(
    settings: Settings,
    table: MetricTable,
    history: Mapping[str, FeedHistory],
    jumps: Sequence[Jump] = (),
) -> list[Alert]:
    """Run the rules over a metrics table, as the streaming engine would.

    The closed values are taken in the order their bars closed (open time + timeframe),
    those closing together as one moment; the streaming path sees that moment at the open
    time of the data's last bar in it (close - the shortest data step). ``jumps``
    (``find_jumps``) mute the rules reading each suspect bar for that bar.
    """
    return replay_rules(settings, RuleInputs.of(settings, table, history, jumps))


@dataclass(frozen=True, slots=True)
class RuleInputs:
    """What the rules are replayed on: closed values by moment, feed health, suspect bars."""

    moments: list[tuple[int, list[tuple[str, int, float]]]]
    columns: tuple[str, ...]
    history: Mapping[str, FeedHistory]
    feed_events: list[tuple[int, str, FeedState]]
    jumps: list[Jump]
    step: int  # the shortest data step: a moment is seen at its close minus this

    @classmethod
    def of(
        cls,
        settings: Settings,
        table: MetricTable,
        history: Mapping[str, FeedHistory],
        jumps: Sequence[Jump] = (),
    ) -> RuleInputs:
        """Collect the moments of every column of ``table``, in the order their bars closed."""
        return cls(
            list(closed_values(settings, table)),
            tuple(table.columns),
            history,
            stale_events(settings, history),
            sorted(jumps, key=lambda jump: jump.time),
            min((h.step_ms for h in history.values()), default=0),
        )


class UntoldBook(RuleBook):
    """A rule book whose alerts carry no rendered title or message: for counting them."""

    def _alert(self, rule: Rule, state: AlertState, time: int, value: float, note: str) -> Alert:
        config = rule.config
        return Alert(config.name, state, time, rule.columns[0], value, config.severity, "", "")


def replay_rules(
    settings: Settings,
    inputs: RuleInputs,
    moments: Iterable[int] | None = None,
    *,
    judged: Container[int] | None = None,
    render: bool = True,
) -> list[Alert]:
    """Run the rules of ``settings`` on ``inputs``; return every alert they would have sent.

    ``moments`` (indices into ``inputs.moments``, ascending) limits the replay to those
    moments; feed health and suspect bars still change in time order. With ``judged``,
    the other moments only fill the rules' value histories (a window an edge reads).
    Without ``render`` the alerts' texts are left empty.
    """
    alerts: list[Alert] = []
    now = [0]
    history = inputs.history

    def prices() -> dict[str, float]:
        """Return each feed's close of its latest bar at the row's time."""
        out = {}
        for feed, h in history.items():
            i = int(np.searchsorted(h.bars.time, now[0], "right")) - 1
            if i >= 0:
                out[feed] = float(h.bars.close[i])
        return out

    book = (RuleBook if render else UntoldBook)(
        _only(settings, None, with_rules=True), prices=prices
    )
    book.subscribe(alerts.append)
    feed_events = list(inputs.feed_events)
    suspect = inputs.jumps[::-1]
    latest = dict.fromkeys(inputs.columns, float("nan"))
    order = range(len(inputs.moments)) if moments is None else moments
    for i in order:
        moment, updates = inputs.moments[i]
        if judged is not None and i not in judged:
            through = max(time for _, time, _ in updates)
            for rule in book.rules:
                book.resume(rule.config.name, rule.status, through)
        now[0] = t = moment - inputs.step
        while feed_events and feed_events[0][0] <= t:
            book.set_feed_state(*_feed_event(feed_events.pop(0)))
        while suspect and suspect[-1].time <= t:
            jump = suspect.pop()
            book.mute_bar(jump.feed, jump.timeframe, jump.time)
        for name, _, value in updates:
            latest[name] = value
        book.evaluate_close_rules(updates, latest)
    for event in feed_events:
        book.set_feed_state(*_feed_event(event))
    return alerts


def closed_values(
    settings: Settings, table: MetricTable
) -> Iterator[tuple[int, list[tuple[str, int, float]]]]:
    """Yield (close time, [(column, bar open time, value)]) for every bar in the table."""
    names = list(table.columns)
    rank = {name: i for i, name in enumerate(names)}
    times, ends, ranks, values = [], [], [], []
    for name in names:
        rows = table.had_bar(name)
        opened = table.time[rows]
        bar_ms = Timeframe.parse(settings.column_timeframe(name)).ms
        times.append(opened)
        ends.append(opened + bar_ms)
        ranks.append(np.full(opened.shape[0], rank[name]))
        values.append(table.columns[name][rows])
    if not names:
        return
    opened, end = np.concatenate(times), np.concatenate(ends)
    ranked, value = np.concatenate(ranks), np.concatenate(values)
    order = np.lexsort((ranked, end))
    moment: int | None = None
    updates: list[tuple[str, int, float]] = []
    rows = (end[order].tolist(), ranked[order].tolist(), opened[order].tolist())
    for close, r, t, v in zip(*rows, value[order].tolist(), strict=True):
        if close != moment:
            if updates:
                yield int(moment or 0), updates
            moment, updates = close, []
        updates.append((names[r], t, v))
    if updates:
        yield int(moment or 0), updates


def stale_events(
    settings: Settings, history: Mapping[str, FeedHistory]
) -> list[tuple[int, str, FeedState]]:
    """Return (time, feed, state) where a history gap outlasts the feed's ``stale_after``."""
    events: list[tuple[int, str, FeedState]] = []
    for feed, feed_history in history.items():
        limit = settings.feeds[feed].stale_after
        if limit is None:
            continue
        t = feed_history.bars.time
        ends = t[:-1] + feed_history.step_ms
        stale = (t[1:] - ends) > limit * 1000
        for end, back in zip(ends[stale].tolist(), t[1:][stale].tolist(), strict=True):
            events.append((end + int(limit * 1000), feed, "stale"))
            events.append((back, feed, "ok"))
    return sorted(events)


def _feed_event(event: tuple[int, str, FeedState]) -> tuple[str, FeedState, int]:
    time, feed, state = event
    return feed, state, time


def _only(settings: Settings, metrics: list[str] | None, *, with_rules: bool) -> Settings:
    """Return the settings with only ``metrics`` (all if None) and their rules, or no rules."""
    kept = settings.metrics if metrics is None else {m: settings.metrics[m] for m in metrics}
    columns = {column for column, metric in settings.metric_columns().items() if metric in kept}
    columns |= set(settings.altseason_columns())
    rules = tuple(r for r in settings.rules if set(r.columns()) <= columns) if with_rules else ()
    return settings.model_copy(update={"metrics": kept, "rules": rules})


def _events(
    history: Mapping[str, FeedHistory], externals: Mapping[str, tuple[np.ndarray, np.ndarray]]
) -> Iterator[tuple[int, str, Bar | tuple[int, float]]]:
    """Yield (moment, feed or column, bar or (day, value)): bars, then external values."""
    step = min((h.step_ms for h in history.values()), default=DAY_MS)
    values = sorted(
        (t + DAY_MS - step, rank, column, (t, v))
        for rank, (column, (times, column_values)) in enumerate(externals.items())
        for t, v in zip(times.tolist(), column_values.tolist(), strict=True)
    )
    bars = ((t, -1, feed, bar) for feed, t, bar in merged_bars(history))
    for moment, _, name, item in heapq.merge(bars, values, key=lambda e: (e[0], e[1])):
        yield moment, name, item


def merged_bars(history: Mapping[str, FeedHistory]) -> Iterator[tuple[str, int, Bar]]:
    """Yield (feed, time, bar) for every history bar in time order, feeds in config order."""

    def rows(rank: int, feed: str) -> Iterator[tuple[int, int, str, Bar]]:
        b = history[feed].bars
        for row in zip(
            b.time.tolist(),
            b.open.tolist(),
            b.high.tolist(),
            b.low.tolist(),
            b.close.tolist(),
            b.volume.tolist(),
            strict=True,
        ):
            yield row[0], rank, feed, Bar(*row)

    streams = [rows(rank, feed) for rank, feed in enumerate(history)]
    for t, _, feed, bar in heapq.merge(*streams):
        yield feed, t, bar
