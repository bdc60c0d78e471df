"""The engine: bar builders, derived series and metrics wired from the settings.

It knows nothing of sockets, files or HTTP, nor of rules: the daemon feeds it live trades
and candles, the backtest feeds it history; both read the same metric values. The pipeline
(``moodring.pipeline``) joins it to the rules.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from moodring.market.bar import Bar
from moodring.market.builder import DEDUPE_WINDOW, BarBuilder, BarListener
from moodring.market.calendar import calendar_named
from moodring.market.jumps import Jump, jumped
from moodring.market.ring import BarRing
from moodring.market.series import BarSource, Join, RatioSeries
from moodring.market.sessions import Cadence, round_the_clock_span
from moodring.market.timeframe import Timeframe
from moodring.metrics.base import Indicator, PairIndicator, indicator_for
from moodring.settings import MetricConfig, Settings, output_columns

MetricListener = Callable[["MetricNode", int], None]
# A closed value: (metric output, bar open time, value).
ClosedValue = tuple[str, int, float]
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
    names = sorted({name for feed in feeds if (name := feed.session_calendar) is not None})
    if not names:
        return Cadence(timeframe)
    if len(names) > 1:
        raise ValueError(f"a join across calendars {names} is not supported")
    return Cadence(timeframe, calendar_named(names[0]))


@dataclass(slots=True, eq=False)
class MetricNode:
    """One configured metric: its indicator, its outputs, and how to peek with the forming bars."""

    name: str
    config: MetricConfig
    indicator: Indicator | PairIndicator
    outputs: tuple[str, ...]
    feeds: frozenset[str]
    peek: Callable[[], tuple[float, ...]]
    time: int = -1
    dirty: bool = True

    @property
    def values(self) -> tuple[float, ...]:
        """Return the outputs after the latest closed bar."""
        return self.indicator.values


# an external column's closed value, latest value and tracked (bar time, value) history
External = tuple[float, float, list[tuple[int, float | None]]]


class Engine:
    """Turns trades and candles into bars and metric values, per the settings.

    ``bars`` asks for more closed bars of some (series, timeframe) than the metrics need.
    Each closed value (a metric's or an external one) is appended to ``closed``, if given,
    in the order it closed: its owner takes them from there.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        bars: Mapping[tuple[str, str], int] | None = None,
        closed: list[ClosedValue] | None = None,
    ) -> None:
        self.settings = settings
        self._closed = closed
        self._capacity = _history_by_input(settings)
        for key, kept in (bars or {}).items():
            self._capacity[key] = max(self._capacity.get(key, 0), kept)
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
        self._peeked: dict[str, float] = dict(self._flatten(lambda node: node.values))
        self._external: dict[str, float] = {}  # closed values of columns fed by ``set_external``
        # every output's latest closed value, kept as bars close (``values`` copies it)
        self._closed_values: dict[str, float] = dict(self._peeked)
        self.closed_view: Mapping[str, float] = MappingProxyType(self._closed_values)
        # every output's latest value with the forming bars, as of the last ``peek_values``
        self.peeked = MappingProxyType(self._peeked)
        self._history: dict[str, deque[tuple[int, float | None]]] = {}
        self._builders_of = {
            column: self._input_builders(node)
            for node in self.metrics.values()
            for column in node.outputs
        }

    def subscribe(self, listener: MetricListener) -> None:
        """Call ``listener(node, bar_time)`` each time a metric takes a closed bar."""
        self._listeners.append(listener)

    def subscribe_jumps(self, listener: JumpListener) -> None:
        """Call ``listener(jump)`` for each closed bar that moved more than its feed's max_jump."""
        self._jump_listeners.append(listener)

    def dependents(self, feed: str) -> tuple[MetricNode, ...]:
        """Return the metrics that read the feed (directly or through a ratio)."""
        return self._dependents[feed]

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
                Timeframe.parse(timeframe),
                fill_gaps=feed.round_the_clock,
                capacity=capacity,
                dedupe_window=0 if feed.repeats_dropped else DEDUPE_WINDOW,
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

    def on_history(self, feed: str, bar: Bar, length_ms: int) -> None:
        """Feed one closed history bar to the feed's bar builders of its length only.

        Each timeframe's history is fetched for it: an hour's bars folded from a month of
        five-minute history would cut short two years of hourly history.
        """
        for builder in self._builders[feed]:
            if builder.timeframe.ms == length_ms:
                builder.add_candle(
                    bar.time,
                    bar.open,
                    bar.high,
                    bar.low,
                    bar.close,
                    bar.volume,
                    closed=True,
                    length_ms=length_ms,
                )
        for node in self._dependents[feed]:
            node.dirty = True

    def advance(self, now_ms: int, feeds: Iterable[str] | None = None) -> None:
        """Close every bar (of ``feeds``, default all) whose interval has ended by ``now_ms``."""
        for feed in self._builders if feeds is None else feeds:
            for builder in self._builders[feed]:
                builder.advance(now_ms)
            for node in self._dependents[feed]:
                node.dirty = True

    def last_prices(self) -> dict[str, float]:
        """Return each feed's latest price (forming close, else last closed close)."""
        prices = {}
        for feed, builders in self._builders.items():
            if builders:
                b = builders[0]
                prices[feed] = b.close if b.time >= 0 else b.last_close
        return prices

    def track(self, columns: Iterable[str], bars: int) -> None:
        """Keep the last ``bars`` closed values of these metric outputs (see ``history``)."""
        for column in columns:
            kept = self._history.get(column)
            if kept is None or (kept.maxlen or 0) < bars:
                self._history[column] = deque(kept or (), maxlen=bars)

    def history(self, column: str) -> list[tuple[int, float | None]]:
        """Return the tracked closed values of an output as (bar time, value or None)."""
        return list(self._history.get(column, ()))

    def externals(self) -> dict[str, External]:
        """Return what ``set_external`` gave: per column its closed and latest values, history."""
        return {
            column: (value, self._peeked.get(column, value), self.history(column))
            for column, value in self._external.items()
        }

    def adopt_externals(self, externals: Mapping[str, External]) -> None:
        """Take external values from a replaced engine or a snapshot (no rule sees them)."""
        for column, (closed, latest, history) in externals.items():
            self._external[column] = closed
            self._closed_values[column] = closed
            self._peeked[column] = latest
            kept = self._history.get(column)
            if kept is not None:
                kept.extend(history)

    def set_external(self, column: str, t_ms: int, value: float, *, closed: bool) -> None:
        """Take a value computed outside the bar pipeline (e.g. the Altcoin Season Index).

        A closed value counts like a metric's closed bar (``values``, ``history``); any
        value is the column's latest value in ``peek_values``.
        """
        self._peeked[column] = value
        if closed:
            self._external[column] = value
            self._closed_values[column] = value
            if self._closed is not None:
                self._closed.append((column, t_ms, value))
            history = self._history.get(column)
            if history is not None:
                history.append((t_ms, None if value != value else value))

    def values(self) -> dict[str, float]:
        """Return every metric output after the latest closed bars (``closed_view``, copied)."""
        return dict(self._closed_values)

    def peek_values(self) -> Mapping[str, float]:
        """Return every metric output including the forming bars, as a live read-only view.

        Only metrics whose feeds changed since the last call are recomputed.
        """
        out = self._peeked
        for node in self.metrics.values():
            if node.dirty:
                node.dirty = False
                values = node.peek()
                if len(values) == 1:
                    out[node.name] = values[0]
                else:
                    for name, value in zip(node.outputs, values, strict=True):
                        out[name] = value
        return self.peeked

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
            first, second = config.inputs()
            key = (first, second, config.timeframe)
            join = self._joins.get(key)
            if join is None:
                cadence = join_cadence(self.settings, config)
                join = self._joins[key] = Join(inputs[0], inputs[1], cadence)
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
        closed = self._closed
        for column, value in zip(node.outputs, node.values, strict=True):
            if column not in self._external:
                self._closed_values[column] = value
            if closed is not None:
                closed.append((column, time, value))
            history = self._history.get(column)
            if history is not None:
                history.append((time, None if value != value else value))
        for listener in self._listeners:
            listener(node, time)

    def _input_builders(self, node: MetricNode) -> tuple[BarBuilder, ...]:
        """Return the feeds' bar builders under a metric (a ratio's two legs)."""
        feeds = self.settings.feeds_of(node.config.inputs())
        timeframe = node.config.timeframe
        return tuple(
            b for feed in feeds for b in self._builders[feed] if b.timeframe.name == timeframe
        )

    def awaits(self, column: str, moment: int) -> bool:
        """Return whether an input bar of the column's metric has ended by ``moment`` unclosed."""
        return any(
            b.time >= 0 and b.time + b.timeframe.ms <= moment
            for b in self._builders_of.get(column, ())
        )


def _history_by_input(settings: Settings) -> dict[tuple[str, str], int]:
    """Return, per (series, timeframe), the most closed bars any metric looks back over.

    A 24/7 series joined with an exchange's feed keeps as many bars as span the joined
    bars the metric looks back over (warm-up fetches them; snapshots keep them).
    """
    need: dict[tuple[str, str], int] = {}
    for config in settings.metrics.values():
        calendars = {settings.feeds[f].session_calendar for f in settings.feeds_of(config.inputs())}
        named = sorted(name for name in calendars if name is not None)
        for series in config.inputs():
            bars = config.history()
            if named and all(
                settings.feeds[f].round_the_clock for f in settings.feeds_of([series])
            ):
                calendar = calendar_named(named[0])
                bars = round_the_clock_span(bars, Timeframe.parse(config.timeframe), calendar)
            key = (series, config.timeframe)
            need[key] = max(need.get(key, 0), bars)
            ratio = settings.series.get(series)
            for leg in ratio.ratio if ratio else ():
                # the legs' windows are what warm-up fetches and snapshots keep for the ratio
                leg_key = (leg, config.timeframe)
                need[leg_key] = max(need.get(leg_key, 0), bars)
    return need
