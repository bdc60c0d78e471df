"""Threshold sweeps: one rule re-run over a range of values of one or two of its numbers.

The metrics are computed once; each value makes a copy of the rule (validated like the
config) that the daemon's rule book replays on the same closed values (``replay_rules``).
An edge rule is replayed only around the bars where its operator can fire at that value.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

import numpy as np
from pydantic import ValidationError

from moodring.backtest.runner import RuleInputs, replay_rules
from moodring.backtest.stats import RuleStats, is_edge, rule_stats
from moodring.backtest.table import MetricTable
from moodring.operators import BandEdge, Moving
from moodring.rules.alert import Alert
from moodring.rules.conditions import group_test, level_test, levels_of
from moodring.settings import Condition, RuleConfig, Settings
from moodring.times import format_duration, iso_time, parse_duration

MAX_SWEEPS = 2
MAX_POINTS = 10_000
# keys whose values are durations: a sweep of them takes 1d, 6h … (or seconds)
DURATION_KEYS = ("cooldown", "repeat_interval")
# representative points tried per metric when looking for a clear that contradicts the rule
_MAX_PROBES = 200_000

Value = int | float


class SweepError(ValueError):
    """A ``--sweep`` that cannot be run; the message names the argument and the value."""


@dataclass(frozen=True, slots=True)
class Sweep:
    """One swept number: the rule, the key path inside it and the values to try."""

    spec: str  # the argument as given
    rule: str
    path: str  # e.g. condition.below, all.0.below, for
    values: tuple[Value, ...]

    @property
    def label(self) -> str:
        """Return ``RULE.PATH``."""
        return f"{self.rule}.{self.path}"

    def show(self, value: Value) -> str:
        """Return a value as people read it (a duration for cooldown and repeat_interval)."""
        if self.path in DURATION_KEYS:
            return format_duration(float(value))
        return f"{value:g}" if isinstance(value, float) else str(value)


@dataclass(frozen=True, slots=True)
class SweepPoint:
    """The rule at one value of each swept path, and what it did."""

    values: tuple[Value, ...]  # one per sweep, in the sweeps' order
    rule: RuleConfig  # the rule with these values (as configured otherwise)
    stats: RuleStats
    alerts: tuple[Alert, ...]  # firings and every resolution, sent or not


def parse_sweep(spec: str, settings: Settings) -> Sweep:
    """Parse ``RULE.PATH=START:STOP:STEP`` against the configured rules."""
    target, sep, span = spec.partition("=")
    if not sep or not target or not span:
        raise SweepError(f"--sweep takes RULE.PATH=START:STOP:STEP, got {spec!r}")
    names = sorted((r.name for r in settings.rules), key=len, reverse=True)
    rule_name = next((n for n in names if target.startswith(n + ".")), None)
    if rule_name is None:
        if target in names:
            raise SweepError(
                f"--sweep {spec}: name one of {target}'s numbers after its name: "
                f"{_numbers_hint(_rule(settings, target))}"
            )
        raise SweepError(
            f"--sweep {spec}: no rule named like {target!r}; rules: {', '.join(sorted(names))}"
        )
    rule = _rule(settings, rule_name)
    path = target[len(rule_name) + 1 :]
    current = _leaf(rule, path, spec)
    values = _values(spec, span, path)
    whole = path == "for" or (isinstance(current, int) and not isinstance(current, bool))
    if whole:
        fractional = [v for v in values if v != int(v)]
        if fractional:
            raise SweepError(f"--sweep {spec}: {path} takes whole numbers, not {fractional[0]:g}")
        values = tuple(int(v) for v in values)
    return Sweep(spec, rule_name, path, values)


def check_sweeps(sweeps: Sequence[Sweep]) -> None:
    """Raise SweepError unless the sweeps make a line or a grid of one rule."""
    if len(sweeps) > MAX_SWEEPS:
        raise SweepError(f"--sweep: at most {MAX_SWEEPS} (a grid), got {len(sweeps)}")
    if len({s.rule for s in sweeps}) > 1:
        raise SweepError(
            f"--sweep {sweeps[1].spec}: a grid sweeps two numbers of one rule, "
            f"not of {sweeps[0].rule} and {sweeps[1].rule}"
        )
    if len(sweeps) == 2 and sweeps[0].path == sweeps[1].path:
        raise SweepError(f"--sweep {sweeps[1].spec}: {sweeps[0].label} is swept twice")
    points = math.prod(len(s.values) for s in sweeps)
    if points > MAX_POINTS:
        raise SweepError(f"--sweep: {points} values to try; at most {MAX_POINTS}")


def swept_rule(settings: Settings, sweeps: Sequence[Sweep], values: Sequence[Value]) -> RuleConfig:
    """Return the rule with each sweep's path set to its value, validated like the config.

    SweepError names the sweep and value that make the rule invalid, including a ``clear``
    that now holds where the condition does (the rule would resolve as soon as it fired).
    """
    rule = _rule(settings, sweeps[0].rule)
    data = rule.model_dump(by_alias=True, exclude_none=True)
    # the texts do not change and were checked with the config: spare re-parsing them
    data["title"] = data["message"] = ""
    for sweep, value in zip(sweeps, values, strict=True):
        _set(data, sweep.path, value)
    where = ", ".join(f"{s.path}={s.show(v)}" for s, v in zip(sweeps, values, strict=True))
    culprit = sweeps[-1].spec
    try:
        changed = RuleConfig.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        loc = ".".join(str(part) for part in error["loc"])
        reason = str(error["msg"]).removeprefix("Value error, ")
        named = not loc or reason.startswith(f"{loc}:") or reason.startswith(f"{loc}.")
        raise SweepError(
            f"--sweep {culprit}: at {where} the rule is invalid: {'' if named else loc + ': '}"
            f"{reason}"
        ) from None
    changed = changed.model_copy(update={"title": rule.title, "message": rule.message})
    both = contradiction(changed)
    if both is not None and contradiction(rule) is None:
        raise SweepError(
            f"--sweep {culprit}: at {where} the rule contradicts itself: its condition and "
            f"its clear both hold at {both}, so it would resolve as soon as it fired"
        )
    return changed


def contradiction(rule: RuleConfig) -> str | None:
    """Return metric values at which the rule's condition and its clear both hold, if any."""
    if rule.clear is None or (not rule.is_composite and rule.when.is_edge):
        return None
    if not rule.is_composite:
        holds, clears = level_test(rule.when), level_test(rule.clear)
        for x in _probes(levels_of(rule.when) + levels_of(rule.clear)):
            if holds(x) and clears(x):
                return f"{rule.metric} = {x:g}"
        return None
    levels: dict[str, list[float]] = {}
    for _, item in rule.metric_items():
        levels.setdefault(str(item.metric), []).extend(levels_of(item.condition))
    columns = list(levels)
    probes = [_probes(levels[c]) for c in columns]
    if math.prod(len(p) for p in probes) > _MAX_PROBES:
        return None
    holds_all, clears_any = group_test(rule.when), group_test(rule.clear)
    for point in itertools.product(*probes):
        values = dict(zip(columns, point, strict=True))
        if holds_all(values) and clears_any(values):
            return ", ".join(f"{c} = {x:g}" for c, x in values.items())
    return None


def swept_rules(
    settings: Settings, sweeps: Sequence[Sweep]
) -> list[tuple[tuple[Value, ...], RuleConfig]]:
    """Return every value (pair of values for a grid) with its rule; SweepError if one is bad."""
    grid = list(itertools.product(*(s.values for s in sweeps)))
    return [(values, swept_rule(settings, sweeps, values)) for values in grid]


def run_sweep(
    settings: Settings,
    rules: Sequence[tuple[tuple[Value, ...], RuleConfig]],
    table: MetricTable,
    inputs: RuleInputs,
    span: tuple[int, int],
) -> list[SweepPoint]:
    """Replay the swept rule at every value of ``rules`` (``swept_rules``).

    ``table`` holds the metrics computed once; ``inputs`` its rule inputs (``sweep_inputs``),
    ``span`` the (start, end) the figures count over.
    """
    first = rules[0][1] if rules else None
    edges = EdgeCandidates(table, inputs, first) if first is not None else None
    bar_ms = settings.rule_timeframe(first).ms if first is not None else 0
    points = []
    for values, rule in rules:
        alerts = replay_rule(settings, rule, inputs, edges)
        stats = rule_stats(rule, alerts, bar_ms=bar_ms, span=span)
        points.append(SweepPoint(values, rule, stats, tuple(alerts)))
    return points


def sweep_inputs(
    settings: Settings, rule: RuleConfig, table: MetricTable, inputs: RuleInputs
) -> RuleInputs:
    """Return ``inputs`` cut down to the moments of the metric outputs ``rule`` reads."""
    columns = rule.columns()
    own = MetricTable(
        table.time,
        {c: table.columns[c] for c in columns},
        {c: table.bars[c] for c in columns if c in table.bars},
    )
    return RuleInputs.of(settings, own, inputs.history, inputs.jumps)


def replay_rule(
    settings: Settings,
    rule: RuleConfig,
    inputs: RuleInputs,
    edges: EdgeCandidates | None = None,
) -> list[Alert]:
    """Replay one rule alone; return its alerts with every resolution, sent or not.

    Its texts are not rendered. With ``edges``, an edge rule is replayed only on the
    windows of values that end where its operator fires.
    """
    update: dict[str, Any] = {"chart": False}
    if not is_edge(rule):
        update["send_resolved"] = True
    alone = settings.model_copy(update={"rules": (rule.model_copy(update=update),)})
    found = edges.moments(rule) if edges is not None else None
    moments, judged = found if found is not None else (None, None)
    alerts = replay_rules(alone, inputs, moments, judged=judged, render=False)
    return [a for a in alerts if a.rule == rule.name]


class EdgeCandidates:
    """The bars where an edge rule's operator fires, found with numpy over the whole column.

    The rule book still judges each of them (cooldown, muting, the operator itself), fed
    the values its operator reads before it (values it is not judged on); other bars cannot
    fire, so they are skipped.
    Operators it does not know, and histories with suspect bars, are replayed whole.
    """

    def __init__(self, table: MetricTable, inputs: RuleInputs, rule: RuleConfig) -> None:
        self.usable = False
        if rule.is_composite or not rule.when.is_edge or inputs.jumps:
            return
        column = rule.columns()[0]
        index, values = [], []
        for i, (_, updates) in enumerate(inputs.moments):
            for name, _, value in updates:
                if name == column:
                    index.append(i)
                    values.append(value)
        self.index = np.asarray(index, np.int64)
        self.values = np.asarray(values, np.float64)
        self.usable = len(inputs.moments) == len(index)

    def moments(self, rule: RuleConfig) -> tuple[list[int], set[int]] | None:
        """Return the moments to replay for ``rule`` and those to judge (None: all of them).

        The others only fill the window of values its operator reads before a judged one.
        """
        if not self.usable:
            return None
        found = _fires(rule.when, self.values)
        if found is None:
            return None
        fires, reads = found
        ends = np.flatnonzero(fires)
        if not ends.size:
            return [], set()
        window = (ends[:, None] - np.arange(reads - 1, -1, -1)[None, :]).ravel()
        rows = np.unique(window[window >= 0])
        return self.index[rows].tolist(), set(self.index[ends].tolist())


def _fires(condition: Condition, v: np.ndarray) -> tuple[np.ndarray, int] | None:
    """Return where an edge operator fires on values ``v`` and how many values it reads."""
    op, x = condition.operator, condition.operand
    prev = np.concatenate(([np.nan], v[:-1]))
    defined = ~np.isnan(prev) & ~np.isnan(v)
    with np.errstate(invalid="ignore", divide="ignore"):
        if op == "crosses_above":
            return (prev <= x) & (x < v), 2
        if op == "crosses_below":
            return (prev >= x) & (x > v), 2
        if op in ("enters", "exits") and isinstance(x, BandEdge):
            lo, hi = x.band
            inside_now, inside_before = (lo <= v) & (v <= hi), (lo <= prev) & (prev <= hi)
            if op == "enters":
                side = {None: ~inside_before, "below": prev < lo, "above": prev > hi}[x.from_]
                return defined & side & inside_now, 2
            went = {None: ~inside_now, "below": v < lo, "above": v > hi}[x.to]
            return defined & inside_before & went, 2
        if isinstance(x, Moving) and op.startswith("moving_"):
            pct = op.endswith("_pct")
            size = float((x.pct if pct else x.by) or 0.0)
            then = np.concatenate((np.full(x.bars, np.nan), v[: -x.bars]))
            change = (v - then) / np.abs(then) * 100.0 if pct else v - then
            moved = change >= size if "_up" in op else change <= -size
            if pct:
                moved &= then != 0.0
            before = np.concatenate(([False], moved[:-1]))
            return moved & ~before, x.bars + 2
    return None


def _probes(levels: list[float]) -> list[float]:
    """Return points on each side of and between the levels, and the levels themselves."""
    points = sorted(set(levels))
    if not points:
        return [0.0]
    probes = [points[0] - 1.0, *points, points[-1] + 1.0]
    probes += [(a + b) / 2 for a, b in itertools.pairwise(points)]
    return sorted(probes)


def _rule(settings: Settings, name: str) -> RuleConfig:
    return next(r for r in settings.rules if r.name == name)


def _leaf(rule: RuleConfig, path: str, spec: str) -> Any:
    """Return the number at ``path`` in the rule (as the config writes it), or SweepError."""
    if path in DURATION_KEYS:
        return getattr(rule, path) or 0.0
    node: Any = rule.model_dump(by_alias=True, exclude_none=True)
    for key in path.split("."):
        node = _child(node, key)
        if node is None:
            raise SweepError(
                f"--sweep {spec}: {rule.name} has no {path}; its numbers: {_numbers_hint(rule)}"
            )
    if path == "for":
        return node
    if isinstance(node, bool) or not isinstance(node, int | float):
        raise SweepError(
            f"--sweep {spec}: {rule.name}.{path} is {node!r}, not a number; "
            f"its numbers: {_numbers_hint(rule)}"
        )
    return node


def _child(node: Any, key: str) -> Any:
    if isinstance(node, Mapping):
        return node.get(key)
    if isinstance(node, list | tuple) and key.isdigit() and int(key) < len(node):
        return node[int(key)]
    return None


def _set(data: dict[str, Any], path: str, value: Value) -> None:
    """Set ``path`` in a rule's dumped config (tuples become lists on the way)."""
    keys = path.split(".")
    node: Any = data
    for key in keys[:-1]:
        child = _child(node, key)
        if isinstance(child, tuple):
            child = list(child)
        node[int(key) if isinstance(node, list) else key] = child
        node = child
    last = keys[-1]
    node[int(last) if isinstance(node, list) else last] = value


def _numbers(node: Any, prefix: str = "") -> Iterator[str]:
    if isinstance(node, Mapping):
        for key, child in node.items():
            yield from _numbers(child, f"{prefix}{key}.")
    elif isinstance(node, list | tuple):
        for i, child in enumerate(node):
            yield from _numbers(child, f"{prefix}{i}.")
    elif isinstance(node, int | float) and not isinstance(node, bool):
        yield prefix.rstrip(".")


def _numbers_hint(rule: RuleConfig) -> str:
    """Return the paths of a rule's numbers, e.g. ``condition.below, clear.above, for``."""
    data = rule.model_dump(by_alias=True, exclude_none=True)
    paths = [p for p in _numbers(data) if p not in DURATION_KEYS]
    return ", ".join([*paths, *DURATION_KEYS])


def _values(spec: str, span: str, path: str) -> tuple[Value, ...]:
    """Return START, START+STEP, … up to STOP (included when it falls on a step)."""
    parts = span.split(":")
    if len(parts) != 3:
        raise SweepError(f"--sweep {spec}: the values are START:STOP:STEP, got {span!r}")
    duration = path in DURATION_KEYS
    try:
        start, stop, step = (_number(p, duration) for p in parts)
    except (InvalidOperation, ValueError):
        kind = "durations (e.g. 1d:30d:1d) or numbers" if duration else "numbers"
        raise SweepError(f"--sweep {spec}: START:STOP:STEP must be {kind}") from None
    if not all(d.is_finite() for d in (start, stop, step)):
        raise SweepError(f"--sweep {spec}: START:STOP:STEP must be finite numbers")
    if step <= 0:
        raise SweepError(f"--sweep {spec}: STEP must be above 0, got {parts[2]}")
    if stop < start:
        raise SweepError(f"--sweep {spec}: STOP ({parts[1]}) is below START ({parts[0]})")
    count = int((stop - start) / step) + 1
    if count > MAX_POINTS:
        raise SweepError(f"--sweep {spec}: {count} values; at most {MAX_POINTS}")
    return tuple(float(start + i * step) for i in range(count))


def _number(text: str, duration: bool) -> Decimal:
    text = text.strip()
    if duration and text and not text[-1].isdigit():
        return Decimal(repr(parse_duration(text)))
    return Decimal(text)


def configured(settings: Settings, sweep: Sweep) -> Value:
    """Return the value the config gives the swept path (0 for an unset duration)."""
    value = _leaf(_rule(settings, sweep.rule), sweep.path, sweep.spec)
    return value if isinstance(value, int | float) else 0


def sweep_rows(
    settings: Settings, sweeps: Sequence[Sweep], points: Sequence[SweepPoint]
) -> list[dict[str, Any]]:
    """Return one JSON-ready row per point: rule, path, value, the figures and every value."""
    given = tuple(configured(settings, s) for s in sweeps)
    rows = []
    for point in points:
        row: dict[str, Any] = {
            "rule": sweeps[0].rule,
            "path": sweeps[0].path,
            "value": point.values[0],
            "values": {s.path: v for s, v in zip(sweeps, point.values, strict=True)},
            "configured": point.values == given,
        }
        row |= point.stats.as_dict()
        rows.append(row)
    return rows


def format_table(
    settings: Settings, sweeps: Sequence[Sweep], points: Sequence[SweepPoint]
) -> list[str]:
    """Return the sweep as aligned lines for people, the configured values marked with *."""
    given = tuple(configured(settings, s) for s in sweeps)
    header = (
        *(s.path for s in sweeps),
        "alerts",
        "firing",
        "per month",
        "flip-flops",
        "median firing",
        "time firing",
        "first",
        "last",
    )
    cells = [header]
    for point in points:
        stats = point.stats
        median = stats.median_firing_ms
        mark = " *" if point.values == given else ""
        shown = [s.show(v) for s, v in zip(sweeps, point.values, strict=True)]
        shown[-1] += mark
        cells.append(
            (
                *shown,
                str(stats.alerts),
                str(stats.firing),
                f"{stats.per_month:.2f}",
                str(stats.flip_flops),
                "-" if median is None else format_duration(median / 1000),
                f"{stats.firing_share:.1%}",
                _day(stats.first),
                _day(stats.last),
            )
        )
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    ranges = ", ".join(
        f"{s.path} from {s.show(s.values[0])} to {s.show(s.values[-1])} (configured {s.show(v)})"
        for s, v in zip(sweeps, given, strict=True)
    )
    lines = [f"{sweeps[0].rule}: {ranges}; * marks the configured value"]
    for row in cells:
        lines.append(
            "  ".join(
                c.rjust(w) if i >= len(sweeps) else c.ljust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            ).rstrip()
        )
    return lines


def _day(t: int | None) -> str:
    return "-" if t is None else iso_time(t)[:10]
