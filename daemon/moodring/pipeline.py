"""The pipeline: the engine's bars and metrics joined to the rule book.

The engine turns trades and candles into bars and metric values and knows nothing of
rules; the rule book judges values and knows nothing of bars. The pipeline is an engine
that hands each closed value to the rules when its moment ends (the bars fed in one
``deferred`` block are one moment), the peeked values of the metrics whose feed ticked
to the tick rules, and each bar beyond its feed's ``max_jump`` to the rules reading it;
an alert's chart is drawn from the engine's histories.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from moodring.engine import ClosedValue, Engine
from moodring.market.bar import Bar
from moodring.market.jumps import Jump
from moodring.rules.book import RuleBook
from moodring.rules.conditions import levels_of
from moodring.settings import RuleConfig, Settings

# Closed bars a chart shows; sources and metrics of charted rules keep this many.
CHART_BARS = 120


class Pipeline(Engine):
    """An engine whose closed and peeked values go to the rules of the settings."""

    def __init__(self, settings: Settings) -> None:
        # the closed values of the moment, in the order they closed
        self._moment: list[ClosedValue] = []
        super().__init__(settings, bars=_charted_inputs(settings), closed=self._moment)
        self.track({c for r in settings.rules if r.chart for c in r.columns()}, CHART_BARS)
        self._deferred = False
        self.rules = RuleBook(
            settings, prices=self.last_prices, chart=self.chart_data, awaits=self.awaits
        )
        # the first listener: the rules hear of a jump before anyone else does
        self.subscribe_jumps(self._mute)
        tick_columns = self.rules.tick_columns
        self._tick_nodes = {
            feed: tuple(n for n in self.dependents(feed) if tick_columns & set(n.outputs))
            for feed in settings.feeds
        }

    def on_trade(
        self, feed: str, t_ms: int, price: float, amount: float, trade_id: object = None
    ) -> None:
        """Feed one trade to the feed's bar builders; rules see what it closed and moved."""
        # Engine.on_trade written out: every trade passes here, a call less is felt
        for builder in self._builders[feed]:
            builder.add_trade(t_ms, price, amount, trade_id)
        for node in self._dependents[feed]:
            node.dirty = True
        if not self._deferred and (self._moment or self.rules.waiting):
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
        """Feed one exchange candle (or a history bar); rules see the bars it closed."""
        Engine.on_candle(self, feed, t_ms, bar, closed=closed, length_ms=length_ms)
        if not self._deferred and (self._moment or self.rules.waiting):
            self._flush()

    def on_history(self, feed: str, bar: Bar, length_ms: int) -> None:
        """Feed one closed history bar to the builders of its length; rules see what closed."""
        Engine.on_history(self, feed, bar, length_ms)
        if not self._deferred and (self._moment or self.rules.waiting):
            self._flush()

    def advance(self, now_ms: int, feeds: Iterable[str] | None = None) -> None:
        """Close every bar (of ``feeds``, default all) ended by ``now_ms``; rules see them."""
        Engine.advance(self, now_ms, feeds)
        if not self._deferred and (self._moment or self.rules.waiting):
            self._flush()

    def set_external(self, column: str, t_ms: int, value: float, *, closed: bool) -> None:
        """Take a value computed outside the bar pipeline (e.g. the Altcoin Season Index).

        A closed value is evaluated by close rules like a metric's closed bar; any value is
        the column's latest value for tick rules and ``peek_values``.
        """
        Engine.set_external(self, column, t_ms, value, closed=closed)
        if closed and not self._deferred:
            self._flush()
        if column in self.rules.tick_columns:
            self.rules.evaluate_tick_rules(t_ms, self.peeked, (column,))

    @contextmanager
    def deferred(self) -> Iterator[None]:
        """Hold rule evaluation until the block ends: the bars fed in it count as one moment."""
        self._deferred = True
        try:
            yield
        finally:
            self._deferred = False
            if self._moment or self.rules.waiting:
                self._flush()

    def chart_data(self, rule: RuleConfig, time: int) -> dict[str, Any] | None:
        """Return plot data for a rule's alert: its metric's inputs and values, and thresholds.

        A composite's chart has one panel per metric it reads, with its items' thresholds.
        """
        if rule.is_composite:
            return self._composite_chart(rule, time)
        metric = str(rule.metric)
        history = self.history(metric)[-CHART_BARS:]
        if not history:
            return None
        times = [t for t, _ in history]
        node = self.metrics.get(self.settings.metric_columns().get(metric, ""))
        inputs: dict[str, list[float | None]] = {}
        if node is not None:
            for series in node.config.inputs():
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
        histories = {c: self.history(c) for c in rule.columns()}
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

    def _mute(self, jump: Jump) -> None:
        self.rules.mute_bar(jump.feed, jump.timeframe, jump.time)

    def _flush(self) -> None:
        if not self._moment:
            self.rules.settle()
            return
        updates = self._moment.copy()
        self._moment.clear()
        self.rules.evaluate_close_rules(updates, self.closed_view)

    def _tick(self, feed: str, t_ms: int) -> None:
        nodes = [node for node in self._tick_nodes[feed] if node.dirty]
        if nodes:
            peeked = self.peek_values()
            self.rules.evaluate_tick_rules(
                t_ms, peeked, (c for node in nodes for c in node.outputs)
            )


def _charted_inputs(settings: Settings) -> dict[tuple[str, str], int]:
    """Return the closed bars to keep of the inputs a charted single-metric rule draws.

    A composite's chart shows its metrics only. 24/7 inputs of a metric on trading days
    need more bars for the same span, hence twice the chart's bars.
    """
    kept: dict[tuple[str, str], int] = {}
    for column in {str(r.metric) for r in settings.rules if r.chart and not r.is_composite}:
        metric = settings.metrics.get(settings.metric_columns().get(column, ""))
        if metric is not None:
            for series in metric.inputs():
                kept[(series, metric.timeframe)] = 2 * CHART_BARS
    return kept
