"""The rule book: every rule's state machine, fed with closed and peeked metric values."""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

from moodring.feedstate import FeedState
from moodring.market.timeframe import Timeframe
from moodring.rules.alert import Alert, AlertState
from moodring.rules.conditions import (
    Edge,
    Level,
    Verdict,
    edge_test,
    group_test,
    level_test,
    threshold_of,
)
from moodring.rules.templates import metric_namespace, prepare, render
from moodring.settings import Condition, RuleConfig, Settings
from moodring.times import format_duration, iso_time

AlertListener = Callable[[Alert], None]
ChartSource = Callable[[RuleConfig, int], dict[str, Any] | None]
# Whether a metric output still has a bar to close by a moment (its inputs' bars have ended
# but not closed yet): a composite reading it waits for it.
Awaits = Callable[[str, int], bool]
_NAN = float("nan")
# suspect bars remembered for muting (the oldest are forgotten first)
_SUSPECT_KEPT = 1024


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
    """One configured rule: its tests, its status, and the timing fields in milliseconds.

    A composite (all/any of items) reads several metric outputs (``columns``; the first is
    the one its alerts name) and is judged on each one's latest closed value.
    """

    __slots__ = (
        "bars_for",
        "clear",
        "columns",
        "config",
        "edge",
        "feeds",
        "judged",
        "level",
        "reads",
        "status",
        "timeframe",
        "undo",
        "verdict",
    )

    def __init__(self, config: RuleConfig, settings: Settings) -> None:
        self.config = config
        self.status = RuleStatus()
        self.bars_for = settings.rule_bars(config)
        self.feeds = settings.stale_feeds_of(config)
        self.columns = config.columns()
        self.timeframe = settings.rule_timeframe(config)
        self.level: Level | None = None
        self.edge: Edge | None = None
        self.clear: Level | None = None
        self.verdict: Verdict | None = None
        self.undo: Verdict | None = None
        # a composite's last judgement: bar time, the status before and after it, what it told
        self.judged: tuple[int, RuleStatus, tuple[object, ...], AlertState | None] | None = None
        self.reads = 1
        if config.is_composite:
            self.verdict = group_test(config.when)
            self.undo = group_test(config.clear) if config.clear else None
        elif config.when.is_edge:
            self.edge, self.reads = edge_test(config.when)
        else:
            self.level = level_test(config.when)
            self.clear = level_test(config.clear) if config.clear else None

    def firing_at(self, now_ms: int) -> bool:
        """Return whether the rule fires at ``now_ms``.

        A level rule fires while in its firing state; an edge rule (a moment, not a state)
        from the bar it fired on until the bar after it has ended.
        """
        if self.edge is None:
            return self.status.state == "firing"
        fired = self.status.fired_at
        return fired is not None and now_ms < fired + 2 * self.timeframe.ms

    def step(self, time: int, history: deque[float] | list[float]) -> AlertState | None:
        """Advance on a value (the last of ``history``) at bar ``time``; return what to tell."""
        if self.edge is not None:
            if len(history) < self.reads or not self.edge(history) or not self._cooled(time):
                return None
            return self._fire(time)
        assert self.level is not None
        value = history[-1]
        if value != value:
            return None  # an undefined value tells nothing: the state stands
        holds = self.level(value)
        return self._advance(time, holds, self.clear(value) if self.clear else not holds)

    def judge(self, time: int, values: Mapping[str, float]) -> AlertState | None:
        """Advance a composite on its metrics' latest closed ``values`` at bar ``time``.

        Judged again at the same bar time (one of its metrics closed that bar later), the
        bar is judged afresh from the status before it, unless its alert has gone out (or
        the status was put back from a snapshot since).
        """
        judged = self.judged
        if judged is not None and judged[0] == time and judged[2] == _machine(self.status):
            _, before, _, told = judged
            if told is not None:
                return None
            _copy_status(before, self.status)
        else:
            before = dataclasses.replace(self.status)
        told = self._judge(time, values)
        self.judged = (time, before, _machine(self.status), told)
        return told

    def _judge(self, time: int, values: Mapping[str, float]) -> AlertState | None:
        assert self.verdict is not None
        holds = self.verdict(values)
        if self.status.state == "firing" and self.undo is not None:
            cleared = self.undo(values)
            if cleared is None:
                return None
            return self._advance(time, bool(holds), cleared)
        if holds is None:
            return None  # an undefined item leaves the whole condition undefined
        return self._advance(time, holds, not holds)

    def _advance(self, time: int, holds: bool, cleared: bool) -> AlertState | None:
        """Move the level state machine on whether the condition and the clear hold."""
        s = self.status
        if s.state == "firing":
            if cleared:
                s.state, s.pending = "inactive", 0
                return "resolved"
            repeat = self.config.repeat_interval
            if repeat and s.notified_at is not None and time - s.notified_at >= repeat * 1000:
                s.notified_at = time
                return "firing"
            return None
        if not holds:
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


# The fields of a status that a rule's judgement moves (what was told and muting are the book's).
_MACHINE = ("state", "pending", "fired_at", "notified_at")


def _machine(status: RuleStatus) -> tuple[object, ...]:
    return tuple(getattr(status, name) for name in _MACHINE)


def _copy_status(source: RuleStatus, target: RuleStatus) -> None:
    for name in _MACHINE:
        setattr(target, name, getattr(source, name))


class RuleBook:
    """Evaluates every rule on metric values and turns its transitions into alerts.

    Close rules see each closed bar's value; tick rules see values with the forming bar
    and change state at most once per bar. Rules reading a stale feed are muted: their changes are
    held back and told, with a note, when the feed is back; the feed itself alerts instead.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        prices: Callable[[], Mapping[str, float]] = dict,
        chart: ChartSource | None = None,
        awaits: Awaits | None = None,
    ) -> None:
        self.settings = settings
        self.rules = [Rule(config, settings) for config in settings.rules]
        self._order = {rule: i for i, rule in enumerate(self.rules)}
        self._by_name = {rule.config.name: rule for rule in self.rules}
        # rules resumed from a state saved at a bar: closed bars up to it are judged already
        self._judged: dict[Rule, int] = {}
        prepare(text for rule in settings.rules for text in (rule.title, rule.message))
        self._prices = prices
        self._chart = chart
        self._awaits = awaits
        # composites whose metrics closed bars: the moment (close time) and bar time to judge
        self._due: dict[Rule, tuple[int, int]] = {}
        self._listeners: list[AlertListener] = []
        self._close: dict[str, list[Rule]] = {}
        self._tick: dict[str, list[Rule]] = {}
        self._composite: dict[str, list[Rule]] = {}
        depth: dict[str, int] = {}
        for rule in self.rules:
            if rule.verdict is not None:
                for column in rule.columns:
                    self._composite.setdefault(column, []).append(rule)
                    depth[column] = max(depth.get(column, 2), 2)
                continue
            column = rule.columns[0]
            target = self._tick if rule.config.on == "tick" else self._close
            target.setdefault(column, []).append(rule)
            depth[column] = max(depth.get(column, 2), rule.reads)
        self._history = {column: deque([_NAN] * n, maxlen=n) for column, n in depth.items()}
        self._latest = {column: history[-1] for column, history in self._history.items()}
        self._values: Mapping[str, float] = {}
        columns = [*settings.metric_columns(), *settings.altseason_columns()]
        self._rank = {column: i for i, column in enumerate(columns)}
        self._bar_ms = {c: Timeframe.parse(settings.column_timeframe(c)).ms for c in columns}
        self.feed_states: dict[str, FeedState] = {feed: "ok" for feed in settings.feeds}
        self._quiet = False
        self._stale_since: dict[str, int] = {}
        self._suspect: dict[tuple[str, str, int], None] = {}
        self._reads: dict[str, tuple[tuple[str, ...], str]] = {}
        for column, metric in settings.metric_columns().items():
            config = settings.metrics[metric]
            self._reads[column] = (settings.feeds_of(config.inputs()), config.timeframe)

    @property
    def tick_columns(self) -> frozenset[str]:
        """Return the metric outputs that tick rules watch."""
        return frozenset(self._tick)

    def rule(self, name: str) -> Rule | None:
        """Return the rule named ``name`` (None for other alerts: stale feeds, the digest)."""
        return self._by_name.get(name)

    def status(self, name: str) -> RuleStatus:
        """Return where rule ``name`` stands (a copy)."""
        return dataclasses.replace(self._by_name[name].status)

    def statuses(self) -> dict[str, RuleStatus]:
        """Return where every rule stands, by name in config order (copies)."""
        return {rule.config.name: dataclasses.replace(rule.status) for rule in self.rules}

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

    def evaluate_close_rules(
        self, updates: Iterable[tuple[str, int, float]], values: Mapping[str, float]
    ) -> None:
        """Evaluate close rules on closed values ``(column, bar time, value)``.

        ``values`` holds every metric output's latest closed value, for templates. Updates
        are taken in the order their bars closed, then config order, whatever order they
        arrived in. A composite is judged once per moment (bars closing together) in which
        one of its metrics closed a bar, at the latest open time among those bars, once
        every metric it reads has closed its bar of that moment (see ``settle``).
        """
        self._values = values
        rank, bar_ms = self._rank, self._bar_ms
        for column, time, value in sorted(
            updates, key=lambda u: (u[1] + bar_ms.get(u[0], 0), rank.get(u[0], 0))
        ):
            end = time + bar_ms.get(column, 0)
            if self._due:
                self._judge_due(before=end)
            history = self._history.get(column)
            if history is None:
                continue
            if self._suspect and self._reads_suspect(column, time):
                value = _NAN  # rules take a suspect bar's value as undefined
            history.append(value)
            self._latest[column] = value
            for rule in self._close.get(column, ()):
                if self._judged and time <= self._judged.get(rule, -1):
                    continue
                told = rule.step(time, history)
                if told is not None:
                    self._tell(rule, told, time, value)
            for rule in self._composite.get(column, ()):
                # a late bar (its moment already past) joins the judgement that is due
                moment, at = self._due.get(rule, (end, time))
                self._due[rule] = (moment, max(at, time))
        self.settle()

    @property
    def waiting(self) -> bool:
        """Return whether a composite waits for a bar of its moment to close."""
        return bool(self._due)

    def settle(self) -> None:
        """Judge the composites whose metrics have all closed their bars of the moment."""
        if self._due:
            self._judge_due(before=None)

    def _judge_due(self, *, before: int | None) -> None:
        """Judge due composites: of moments before ``before``, else those with nothing to wait for.

        A later moment's values must not reach an earlier judgement, so a composite still
        waiting when one comes is judged at once on what it has.
        """
        awaits = self._awaits

        def ready(rule: Rule, moment: int) -> bool:
            if before is not None:
                return moment < before
            return not (awaits and any(awaits(column, moment) for column in rule.columns))

        due = [(rule, at) for rule, (moment, at) in self._due.items() if ready(rule, moment)]
        for rule, at in sorted(due, key=lambda r: self._order[r[0]]):
            del self._due[rule]
            told = rule.judge(at, self._latest)
            if told is not None:
                self._tell(rule, told, at, self._latest[rule.columns[0]])

    def evaluate_tick_rules(
        self, now_ms: int, values: Mapping[str, float], columns: Iterable[str]
    ) -> None:
        """Evaluate tick rules of ``columns`` on their values with the forming bar."""
        for column in columns:
            rules = self._tick.get(column)
            if not rules:
                continue
            value = values[column]
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

    def mute_bar(self, feed: str, timeframe: str, time: int) -> None:
        """Mute, for that bar only, the close rules on metrics reading a feed's suspect bar."""
        self._suspect[(feed, timeframe, time)] = None
        if len(self._suspect) > _SUSPECT_KEPT:
            del self._suspect[next(iter(self._suspect))]

    def _reads_suspect(self, column: str, time: int) -> bool:
        feeds, timeframe = self._reads.get(column, ((), ""))
        return any((feed, timeframe, time) in self._suspect for feed in feeds)

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
        self._tell(rule, now, time, self._history[rule.columns[0]][-1], note=note)

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
        metric = rule.columns[0]
        history = self._history[metric]
        previous = history[-2] if len(history) >= 2 else _NAN
        values = self._values
        items = self._items(rule, value, previous)
        context = {
            **metric_namespace(values),
            "rule": config.name,
            "metric": metric,
            "value": value,
            "previous": previous,
            "threshold": items[0]["threshold"],
            "items": items,
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
            config.name,
            state,
            time,
            metric,
            value,
            config.severity,
            title,
            message,
            chart,
        )

    def _items(self, rule: Rule, value: float, previous: float) -> list[dict[str, Any]]:
        """Return what templates see of each item: metric, value, previous, operator, threshold.

        A single-metric rule is one item (its condition); a composite's items are those of
        its condition, then those of its clear, as judged (each metric's latest value).
        """
        config = rule.config
        if not config.is_composite:
            holds = rule.level(value) if rule.level is not None and value == value else None
            return [_item(rule.columns[0], config.when, value, previous, holds, clear=False)]
        out = []
        for path, entry in config.metric_items():
            condition = entry.condition
            history = self._history[str(entry.metric)]
            now = history[-1]
            holds = None if now != now else level_test(condition)(now)
            clear = path.startswith("clear.")
            out.append(_item(str(entry.metric), condition, now, history[-2], holds, clear=clear))
        return out

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


def _item(
    metric: str,
    condition: Condition,
    value: float,
    previous: float,
    holds: bool | None,
    *,
    clear: bool,
) -> dict[str, Any]:
    """Return one item as templates see it."""
    return {
        "metric": metric,
        "value": value,
        "previous": previous,
        "operator": condition.operator,
        "threshold": threshold_of(condition),
        "holds": holds,
        "clear": clear,
    }


def _feed_alert(feed: str, state: AlertState, time: int, title: str, message: str) -> Alert:
    """Return the alert of a feed going stale (firing) or coming back (resolved)."""
    name = f"stale.{feed}"
    return Alert(name, state, time, name, _NAN, "warning", title, message)
