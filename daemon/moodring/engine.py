"""The engine: bar builders, derived series, metrics and rules wired from the settings.

It knows nothing of sockets, files or HTTP: the daemon feeds it live trades and candles,
the backtest feeds it history; both read the same metric values and get the same alerts.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from moodring.market.bar import Bar
from moodring.market.builder import BarBuilder, BarListener
from moodring.market.calendar import calendar_named
from moodring.market.jumps import Jump, jumped
from moodring.market.ring import BarRing
from moodring.market.series import BarSource, Join, RatioSeries
from moodring.market.sessions import Cadence
from moodring.market.timeframe import Timeframe
from moodring.metrics.base import Indicator, PairIndicator, indicator_for
from moodring.rules.book import RuleBook
from moodring.rules.conditions import levels_of
from moodring.settings import MetricConfig, RuleConfig, Settings, output_columns

# Closed bars a chart shows; sources and metrics of charted rules keep this many.
CHART_BARS = 120

MetricListener = Callable[["MetricNode", int], None]
JumpListener = Callable[[Jump], None]


def join_cadence(settings: Settings, config: MetricConfig) -> Cadence | None:
    """Return when a pair metric's joined bars are due (None: a feed's calendar is unknown).

    Crypto feeds have a bar every interval; equity feeds only bars that meet a session of
    their calendar. An equity feed with ``calendar: none`` may have bars at any time, so no
    gap can be told on its joins.
    """
    feeds = [settings.feeds[name] for name in settings.feeds_of(config.inputs())]
    if any(feed.market == "equity" and feed.session_calendar is None for feed in feeds):
        return None
    timeframe = Timeframe.parse(config.timeframe)
    names = sorted({feed.session_calendar for feed in feeds} - {None})
    if not names:
        return Cadence(timeframe)
    if len(names) > 1:
        raise ValueError(f"a join across calendars {names} is not supported")
    return Cadence(timeframe, calendar_named(names[0]))


@dataclass(slots=True, eq=False)
class MetricNode:
    """One configured metric: its indicator and where its closed and forming bars come from."""

    name: str
    config: MetricConfig
    indicator: Indicator | PairIndicator
    outputs: tuple[str, ...]
    feeds: frozenset[str]
    forming: Callable[[], tuple[float, ...]]
    time: int = -1
    dirty: bool = True

    @property
    def values(self) -> tuple[float, ...]:
        """Return the outputs after the latest closed bar."""
        return self.indicator.values


# a published column's closed value, forming value and tracked (bar time, value) history
Published = tuple[float, float, list[tuple[int, float | None]]]


class Engine:
    """Turns trades and candles into bars and metric values, per the settings."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._capacity = _history_by_input(settings)
        self._charted = {c for r in settings.rules if r.chart for c in r.columns()}
        # a single metric's chart shows its inputs too (a composite's shows its metrics only)
        for column in {str(r.metric) for r in settings.rules if r.chart and not r.is_composite}:
            metric = settings.metrics.get(settings.metric_columns().get(column, ""))
            for series in metric.inputs() if metric is not None else ():
                key = (series, metric.timeframe)
                # 24/7 inputs of a metric on trading days need more bars for the same span
                self._capacity[key] = max(self._capacity.get(key, 0), 2 * CHART_BARS)
        self._sources: dict[tuple[str, str], BarSource] = {}
        self._joins: dict[tuple[str, str, str], Join] = {}
        self._builders: dict[str, list[BarBuilder]] = {name: [] for name in settings.feeds}
        self._listeners: list[MetricListener] = []
        self._jump_listeners: list[JumpListener] = []
        self.metrics: dict[str, MetricNode] = {}
        for name, config in settings.metrics.items():
            self.metrics[name] = self._wire(name, config)
        self._dependents: dict[str, tuple[MetricNode, ...]] = {
            feed: tuple(n for n in self.metrics.values() if feed in n.feeds)
            for feed in settings.feeds
        }
        self._forming: dict[str, float] = dict(self._flatten(lambda node: node.values))
        self._external: dict[str, float] = {}  # columns fed by ``publish``
        self._forming_view = MappingProxyType(self._forming)
        self._closed: list[tuple[str, int, float]] = []
        self._deferred = False
        self._history = {c: deque(maxlen=CHART_BARS) for c in self._charted}
        self.rules = RuleBook(
            settings, prices=self.last_prices, chart=self.chart_data, awaits=self._awaits
        )
        self._builders_of = {
            column: self._input_builders(node)
            for node in self.metrics.values()
            for column in node.outputs
        }
        tick_columns = self.rules.tick_columns
        self._tick_nodes = {
            feed: tuple(n for n in nodes if tick_columns & set(n.outputs))
            for feed, nodes in self._dependents.items()
        }

    def subscribe(self, listener: MetricListener) -> None:
        """Call ``listener(node, bar_time)`` each time a metric takes a closed bar."""
        self._listeners.append(listener)

    def subscribe_jumps(self, listener: JumpListener) -> None:
        """Call ``listener(jump)`` for each closed bar that moved more than its feed's max_jump."""
        self._jump_listeners.append(listener)

    def builders(self, feed: str) -> list[BarBuilder]:
        """Return the feed's bar builders, one per timeframe in use."""
        return self._builders[feed]

    def source(self, series: str, timeframe: str) -> BarSource:
        """Return the bar source of a feed or derived series at a timeframe, creating it."""
        key = (series, timeframe)
        found = self._sources.get(key)
        if found is not None:
            return found
        capacity = max(2, self._capacity.get(key, 2))
        ratio = self.settings.series.get(series)
        if ratio is None:
            feed = self.settings.feeds[series]
            builder = BarBuilder(
                Timeframe.parse(timeframe), fill_gaps=feed.round_the_clock, capacity=capacity
            )
            self._builders[series].append(builder)
            if feed.max_jump is not None:
                watch = self._jump_watch(series, timeframe, builder.bars, feed.max_jump)
                builder.subscribe(watch)
            source: BarSource = builder
        else:
            a, b = (self.source(leg, timeframe) for leg in ratio.ratio)
            source = RatioSeries(a, b, capacity)
        self._sources[key] = source
        return source

    def _jump_watch(self, feed: str, timeframe: str, ring: BarRing, limit: float) -> BarListener:
        """Return a listener flagging a feed's closed bars whose close jumped beyond ``limit``."""

        def watch(bar: Bar) -> None:
            if len(ring) < 2:
                return
            previous = ring.close.last(1)
            if jumped(previous, bar.close, limit):
                self.rules.mute_bar(feed, timeframe, bar.time)
                jump = Jump(feed, timeframe, bar.time, previous, bar.close, limit)
                for listener in self._jump_listeners:
                    listener(jump)

        return watch

    def on_trade(
        self, feed: str, t_ms: int, price: float, amount: float, trade_id: object = None
    ) -> None:
        """Feed one trade to every bar builder of the feed."""
        for builder in self._builders[feed]:
            builder.add_trade(t_ms, price, amount, trade_id)
        for node in self._dependents[feed]:
            node.dirty = True
        if not self._deferred and (self._closed or self.rules.waiting):
            self._flush()
        if self._tick_nodes[feed]:
            self._tick(feed, t_ms)

    def on_candle(
        self,
        feed: str,
        t_ms: int,
        bar: Bar,
        *,
        closed: bool = False,
        length_ms: int | None = None,
    ) -> None:
        """Feed one exchange candle (or a history bar) to every bar builder of the feed."""
        for builder in self._builders[feed]:
            builder.add_candle(
                t_ms,
                bar.open,
                bar.high,
                bar.low,
                bar.close,
                bar.volume,
                closed=closed,
                length_ms=length_ms,
            )
        for node in self._dependents[feed]:
            node.dirty = True
        if not self._deferred and (self._closed or self.rules.waiting):
            self._flush()

    def advance(self, now_ms: int, feeds: Iterable[str] | None = None) -> None:
        """Close every bar (of ``feeds``, default all) whose interval has ended by ``now_ms``."""
        for feed in self._builders if feeds is None else feeds:
            for builder in self._builders[feed]:
                builder.advance(now_ms)
            for node in self._dependents[feed]:
                node.dirty = True
        if not self._deferred and (self._closed or self.rules.waiting):
            self._flush()

    @contextmanager
    def deferred(self) -> Iterator[None]:
        """Hold rule evaluation until the block ends: the bars fed in it count as one moment."""
        self._deferred = True
        try:
            yield
        finally:
            self._deferred = False
            if self._closed or self.rules.waiting:
                self._flush()

    def last_prices(self) -> dict[str, float]:
        """Return each feed's latest price (forming close, else last closed close)."""
        prices = {}
        for feed, builders in self._builders.items():
            if builders:
                b = builders[0]
                prices[feed] = b.close if b.time >= 0 else b.last_close
        return prices

    def chart_data(self, rule: RuleConfig, time: int) -> dict[str, Any] | None:
        """Return plot data for a rule's alert: its metric's inputs and values, and thresholds.

        A composite's chart has one panel per metric it reads, with its items' thresholds.
        """
        if rule.is_composite:
            return self._composite_chart(rule, time)
        metric = str(rule.metric)
        history = list(self._history.get(metric, ()))[-CHART_BARS:]
        if not history:
            return None
        times = [t for t, _ in history]
        node = self.metrics.get(self.settings.metric_columns().get(metric, ""))
        inputs = {}
        for series in node.config.inputs() if node is not None else ():
            ring = self.source(series, node.config.timeframe).bars
            by_time = dict(
                zip(ring.time.window().tolist(), ring.close.window().tolist(), strict=True)
            )
            inputs[series.upper()] = [by_time.get(t) for t in times]
        inputs_panel = (
            [{"label": " vs ".join(inputs), "series": inputs, "normalise": True}] if inputs else []
        )
        thresholds = [
            x for c in (rule.condition, rule.clear) if c is not None for x in levels_of(c)
        ]
        return {
            "title": rule.name,
            "time": times,
            "panels": [
                *inputs_panel,
                {
                    "label": metric,
                    "series": {metric: [v for _, v in history]},
                    "thresholds": thresholds,
                },
            ],
            "marker": time,
        }

    def _composite_chart(self, rule: RuleConfig, time: int) -> dict[str, Any] | None:
        """Return a composite's plot data: each metric's latest value on every bar time."""
        histories = {c: list(self._history.get(c, ())) for c in rule.columns()}
        times = sorted({t for history in histories.values() for t, _ in history})[-CHART_BARS:]
        if not times:
            return None
        levels: dict[str, list[float]] = {column: [] for column in histories}
        for _, item in rule.metric_items():
            levels[str(item.metric)] += levels_of(item.condition)
        panels = []
        for column, history in histories.items():
            # the rule reads each metric's latest closed value: carry it to the other bars
            values: list[float | None] = []
            i, latest = 0, None
            for t in times:
                while i < len(history) and history[i][0] <= t:
                    latest = history[i][1]
                    i += 1
                values.append(latest)
            thresholds = sorted(set(levels[column]))
            panels.append({"label": column, "series": {column: values}, "thresholds": thresholds})
        return {"title": rule.name, "time": times, "panels": panels, "marker": time}

    def track(self, columns: Iterable[str], bars: int) -> None:
        """Keep the last ``bars`` closed values of these metric outputs (see ``history``)."""
        for column in columns:
            kept = self._history.get(column)
            if kept is None or (kept.maxlen or 0) < bars:
                self._history[column] = deque(kept or (), maxlen=bars)

    def history(self, column: str) -> list[tuple[int, float | None]]:
        """Return the tracked closed values of an output as (bar time, value or None)."""
        return list(self._history.get(column, ()))

    def published(self) -> dict[str, Published]:
        """Return what ``publish`` gave: per column its closed and forming values, history."""
        return {
            column: (value, self._forming.get(column, value), self.history(column))
            for column, value in self._external.items()
        }

    def adopt(self, published: Mapping[str, Published]) -> None:
        """Take published values from a replaced engine or a snapshot (no rule sees them)."""
        for column, (closed, forming, history) in published.items():
            self._external[column] = closed
            self._forming[column] = forming
            kept = self._history.get(column)
            if kept is not None:
                kept.extend(history)

    def publish(self, column: str, t_ms: int, value: float, *, closed: bool) -> None:
        """Take a value computed outside the bar pipeline (e.g. the Altcoin Season Index).

        A closed value is evaluated by close rules like a metric's closed bar; any value is
        the column's forming value for tick rules and ``forming_values``.
        """
        self._forming[column] = value
        if closed:
            self._external[column] = value
            self._closed.append((column, t_ms, value))
            history = self._history.get(column)
            if history is not None:
                history.append((t_ms, None if value != value else value))
            if not self._deferred:
                self._flush()
        if column in self.rules.tick_columns:
            self.rules.tick(t_ms, self._forming_view, (column,))

    def values(self) -> dict[str, float]:
        """Return every metric output after the latest closed bars."""
        return {**dict(self._flatten(lambda node: node.values)), **self._external}

    def forming_values(self) -> Mapping[str, float]:
        """Return every metric output including the forming bars, as a live read-only view.

        Only metrics whose feeds changed since the last call are recomputed.
        """
        out = self._forming
        for node in self.metrics.values():
            if node.dirty:
                node.dirty = False
                values = node.forming()
                if len(values) == 1:
                    out[node.name] = values[0]
                else:
                    for name, value in zip(node.outputs, values, strict=True):
                        out[name] = value
        return self._forming_view

    def _flatten(
        self, read: Callable[[MetricNode], tuple[float, ...]]
    ) -> Iterator[tuple[str, float]]:
        for node in self.metrics.values():
            yield from zip(node.outputs, read(node), strict=True)

    def _wire(self, name: str, config: MetricConfig) -> MetricNode:
        indicator = indicator_for(config)
        inputs = [self.source(series, config.timeframe) for series in config.inputs()]
        feeds = frozenset(self.settings.feeds_of(config.inputs()))
        outputs = output_columns(name, config)
        if isinstance(indicator, PairIndicator):
            key = (*config.inputs(), config.timeframe)
            join = self._joins.get(key)
            if join is None:
                join = self._joins[key] = Join(*inputs, join_cadence(self.settings, config))
            pair_indicator = indicator

            def peek_pair() -> tuple[float, ...]:
                pair = join.forming()
                if pair is None:
                    return pair_indicator.values
                return pair_indicator.peek_bars(*pair, pair[0].time > join.due)

            node = MetricNode(name, config, indicator, outputs, feeds, peek_pair)

            def on_pair(a: Bar, b: Bar) -> None:
                pair_indicator.update_bars(a, b, join.after_gap)
                self._notify(node, a.time)

            join.subscribe(on_pair)
            return node
        source, single = inputs[0], indicator

        def peek() -> tuple[float, ...]:
            bar = source.forming()
            return single.values if bar is None else single.peek_bar(bar)

        node = MetricNode(name, config, indicator, outputs, feeds, peek)

        def on_bar(bar: Bar) -> None:
            single.update_bar(bar)
            self._notify(node, bar.time)

        source.subscribe(on_bar)
        return node

    def _notify(self, node: MetricNode, time: int) -> None:
        node.time = time
        for column, value in zip(node.outputs, node.values, strict=True):
            self._closed.append((column, time, value))
            history = self._history.get(column)
            if history is not None:
                history.append((time, None if value != value else value))
        for listener in self._listeners:
            listener(node, time)

    def _flush(self) -> None:
        if not self._closed:
            self.rules.settle()
            return
        updates, self._closed = self._closed, []
        self.rules.close(updates, self.values())

    def _input_builders(self, node: MetricNode) -> tuple[BarBuilder, ...]:
        """Return the feeds' bar builders under a metric (a ratio's two legs)."""
        feeds = self.settings.feeds_of(node.config.inputs())
        timeframe = node.config.timeframe
        return tuple(
            b for feed in feeds for b in self._builders[feed] if b.timeframe.name == timeframe
        )

    def _awaits(self, column: str, moment: int) -> bool:
        """Return whether an input bar of the column's metric has ended by ``moment`` unclosed."""
        return any(
            b.time >= 0 and b.time + b.timeframe.ms <= moment
            for b in self._builders_of.get(column, ())
        )

    def _tick(self, feed: str, t_ms: int) -> None:
        nodes = [node for node in self._tick_nodes[feed] if node.dirty]
        if nodes:
            forming = self.forming_values()
            self.rules.tick(t_ms, forming, (c for node in nodes for c in node.outputs))


def _history_by_input(settings: Settings) -> dict[tuple[str, str], int]:
    """Return, per (series, timeframe), the most closed bars any metric looks back over."""
    need: dict[tuple[str, str], int] = {}
    for config in settings.metrics.values():
        for series in config.inputs():
            key = (series, config.timeframe)
            need[key] = max(need.get(key, 0), config.history())
            ratio = settings.series.get(series)
            for leg in ratio.ratio if ratio else ():
                # the legs' windows are what warm-up fetches and snapshots keep for the ratio
                leg_key = (leg, config.timeframe)
                need[leg_key] = max(need.get(leg_key, 0), config.history())
    return need
