"""The rule book: every rule's state machine, fed with closed and forming metric values."""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

from moodring.feeds.base import FeedState
from moodring.market.timeframe import Timeframe
from moodring.rules.alert import Alert, AlertState
from moodring.rules.conditions import Edge, Level, edge_test, level_test, threshold_of
from moodring.rules.templates import metric_namespace, prepare, render
from moodring.settings import RuleConfig, Settings
from moodring.times import format_duration, iso_time

AlertListener = Callable[[Alert], None]
ChartSource = Callable[[RuleConfig, int], dict[str, Any] | None]
_NAN = float("nan")


@dataclass(slots=True)
class RuleStatus:
    """Where a rule stands; all times are bar open times in epoch ms."""

    state: Literal["inactive", "pending", "firing"] = "inactive"
    pending: int = 0
    fired_at: int | None = None
    notified_at: int | None = None
    tick_bar: int | None = None
    # the state last sent to people, and whether a change was held back while muted
    told: AlertState = "resolved"
    muted_since: int | None = None


class Rule:
    """One configured rule: its tests, its status, and the timing fields in milliseconds."""

    __slots__ = ("bars_for", "clear", "config", "edge", "feeds", "level", "reads", "status",
                 "timeframe")  # fmt: skip

    def __init__(self, config: RuleConfig, settings: Settings) -> None:
        self.config = config
        self.status = RuleStatus()
        self.bars_for = settings.rule_bars(config)
        self.feeds = settings.stale_feeds_of(config)
        self.timeframe = Timeframe.parse(settings.column_timeframe(config.metric))
        self.level: Level | None = None
        self.edge: Edge | None = None
        self.clear: Level | None = None
        if config.condition.is_edge:
            self.edge, self.reads = edge_test(config.condition)
        else:
            self.level, self.reads = level_test(config.condition), 1
            self.clear = level_test(config.clear) if config.clear else None

    def step(self, time: int, history: deque[float] | list[float]) -> AlertState | None:
        """Advance on a value (the last of ``history``) at bar ``time``; return what to tell."""
        if self.edge is not None:
            if len(history) < self.reads or not self.edge(history) or not self._cooled(time):
                return None
            return self._fire(time)
        value = history[-1]
        if value != value:
            return None  # an undefined value tells nothing: the state stands
        s = self.status
        if s.state == "firing":
            cleared = self.clear(value) if self.clear else not self.level(value)
            if cleared:
                s.state, s.pending = "inactive", 0
                return "resolved"
            repeat = self.config.repeat_interval
            if repeat and s.notified_at is not None and time - s.notified_at >= repeat * 1000:
                s.notified_at = time
                return "firing"
            return None
        if not self.level(value):
            s.state, s.pending = "inactive", 0
            return None
        s.pending += 1
        if s.pending < self.bars_for or not self._cooled(time):
            s.state = "pending"
            return None
        s.state = "firing"
        return self._fire(time)

    def _fire(self, time: int) -> AlertState:
        self.status.fired_at = self.status.notified_at = time
        return "firing"

    def _cooled(self, time: int) -> bool:
        cooldown = self.config.cooldown
        fired = self.status.fired_at
        return not cooldown or fired is None or time - fired >= cooldown * 1000


class RuleBook:
    """Evaluates every rule on metric values and turns its transitions into alerts.

    Close rules see each closed bar's value; tick rules see forming values and change
    state at most once per bar. Rules reading a stale feed are muted: their changes are
    held back and told, with a note, when the feed is back; the feed itself alerts instead.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        prices: Callable[[], Mapping[str, float]] = dict,
        chart: ChartSource | None = None,
    ) -> None:
        self.settings = settings
        self.rules = [Rule(config, settings) for config in settings.rules]
        self._by_name = {rule.config.name: rule for rule in self.rules}
        # rules resumed from a state saved at a bar: closed bars up to it are judged already
        self._judged: dict[Rule, int] = {}
        prepare(text for rule in settings.rules for text in (rule.title, rule.message))
        self._prices = prices
        self._chart = chart
        self._listeners: list[AlertListener] = []
        self._close: dict[str, list[Rule]] = {}
        self._tick: dict[str, list[Rule]] = {}
        depth: dict[str, int] = {}
        for rule in self.rules:
            column = rule.config.metric
            target = self._tick if rule.config.on == "tick" else self._close
            target.setdefault(column, []).append(rule)
            depth[column] = max(depth.get(column, 2), rule.reads)
        self._history = {column: deque([_NAN] * n, maxlen=n) for column, n in depth.items()}
        self._values: Mapping[str, float] = {}
        self._rank = {column: i for i, column in enumerate(settings.metric_columns())}
        self.feed_states: dict[str, FeedState] = {feed: "ok" for feed in settings.feeds}
        self._quiet = False
        self._stale_since: dict[str, int] = {}

    @property
    def tick_columns(self) -> frozenset[str]:
        """Return the metric outputs that tick rules watch."""
        return frozenset(self._tick)

    def rule(self, name: str) -> Rule | None:
        """Return the rule named ``name`` (None for other alerts: stale feeds, the digest)."""
        return self._by_name.get(name)

    def resume(self, name: str, status: RuleStatus, through: int) -> None:
        """Continue rule ``name`` from ``status``, which judged the closed bars up to ``through``.

        Closed values of bars up to ``through`` still fill the histories but no longer step
        the rule: a state saved with an alert after the last snapshot takes over from it.
        """
        rule = self._by_name[name]
        rule.status = dataclasses.replace(status)
        self._judged[rule] = through

    def subscribe(self, listener: AlertListener) -> None:
        """Call ``listener`` with every alert to tell."""
        self._listeners.append(listener)

    def close(self, updates: Iterable[tuple[str, int, float]], values: Mapping[str, float]) -> None:
        """Evaluate close rules on closed values ``(column, bar time, value)``.

        ``values`` holds every metric output's latest closed value, for templates. Updates
        are taken in time, then config order, whatever order they arrived in.
        """
        self._values = values
        rank = self._rank
        for column, time, value in sorted(updates, key=lambda u: (u[1], rank.get(u[0], 0))):
            history = self._history.get(column)
            if history is None:
                continue
            history.append(value)
            for rule in self._close.get(column, ()):
                if self._judged and time <= self._judged.get(rule, -1):
                    continue
                told = rule.step(time, history)
                if told is not None:
                    self._tell(rule, told, time, value)

    def tick(self, now_ms: int, forming: Mapping[str, float], columns: Iterable[str]) -> None:
        """Evaluate tick rules of ``columns`` on their forming values."""
        for column in columns:
            rules = self._tick.get(column)
            if not rules:
                continue
            value = forming[column]
            closed = self._history[column]
            history = [*list(closed)[1:], value]
            for rule in rules:
                bar = rule.timeframe.floor(now_ms)
                if rule.status.tick_bar == bar:
                    continue
                before = rule.status.state
                told = rule.step(bar, history)
                if told is not None or rule.status.state != before:
                    rule.status.tick_bar = bar
                if told is not None:
                    self._tell(rule, told, bar, value)

    def set_feed_state(self, feed: str, state: FeedState, time: int) -> None:
        """Record a feed's health; stale feeds alert and mute the rules that read them."""
        before = self.feed_states.get(feed, "ok")
        self.feed_states[feed] = state
        if (before == "stale") == (state == "stale"):
            return
        if state == "stale":
            self._stale_since[feed] = time
            for rule in self.rules:
                if feed in rule.feeds and rule.status.muted_since is None:
                    rule.status.muted_since = time
            text = f"No data from {feed}: rules reading it are muted until it is back."
            self._emit(_feed_alert(feed, "firing", time, f"{feed} feed is stale", text))
            return
        gone = format_duration((time - self._stale_since.pop(feed, time)) / 1000)
        text = f"{feed} was stale for {gone}."
        self._emit(_feed_alert(feed, "resolved", time, f"{feed} feed is back", text))
        for rule in self.rules:
            if rule.status.muted_since is not None and not self._muted(rule):
                self._resume(rule, time)

    def _muted(self, rule: Rule) -> bool:
        return any(self.feed_states.get(feed) == "stale" for feed in rule.feeds)

    def _resume(self, rule: Rule, time: int) -> None:
        status = rule.status
        since, status.muted_since = status.muted_since, None
        now: AlertState = "firing" if status.state == "firing" else "resolved"
        if now == status.told or (now == "resolved" and not rule.config.send_resolved):
            status.told = now
            return
        note = (
            f"(muted for {format_duration((time - (since or time)) / 1000)} while a feed was stale)"
        )
        self._tell(rule, now, time, self._history[rule.config.metric][-1], note=note)

    def _tell(self, rule: Rule, state: AlertState, time: int, value: float, note: str = "") -> None:
        status = rule.status
        if self._muted(rule):
            return  # held back; _resume tells the state that stands when the feed is back
        status.told = state
        if state == "resolved" and not rule.config.send_resolved:
            return
        self._emit(self._alert(rule, state, time, value, note))

    def _alert(self, rule: Rule, state: AlertState, time: int, value: float, note: str) -> Alert:
        config = rule.config
        history = self._history[config.metric]
        previous = history[-2] if len(history) >= 2 else _NAN
        values = self._values
        context = {
            **metric_namespace(values),
            "rule": config.name,
            "metric": config.metric,
            "value": value,
            "previous": previous,
            "threshold": threshold_of(config.condition),
            "severity": config.severity,
            "state": state,
            "time": iso_time(time),
            "feeds": dict(self._prices()),
            "metrics": dict(values),
            "note": note,
        }
        title = render(config.title, context)
        message = render(config.message, context)
        if state == "resolved":
            title = f"Resolved: {title}"
        if note:
            message = f"{message} {note}"
        chart = self._chart(config, time) if (config.chart and self._chart) else None
        if chart is not None:
            chart["title"] = title
        return Alert(
            config.name, state, time, config.metric, value, config.severity,
            title, message, chart,
        )  # fmt: skip

    @contextmanager
    def quiet(self) -> Iterator[None]:
        """Evaluate without telling anyone (warm-up history: its alerts are in the past)."""
        self._quiet = True
        try:
            yield
        finally:
            self._quiet = False

    def _emit(self, alert: Alert) -> None:
        if self._quiet:
            return
        for listener in self._listeners:
            listener(alert)


def _feed_alert(feed: str, state: AlertState, time: int, title: str, message: str) -> Alert:
    """Return the alert of a feed going stale (firing) or coming back (resolved)."""
    name = f"stale.{feed}"
    return Alert(name, state, time, name, _NAN, "warning", title, message)
