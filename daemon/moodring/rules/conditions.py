"""Rule operators: levels that hold on a value, edges that fire on a change, composites."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

from moodring.settings import BandEdge, Condition, Item

# A level test of one value, or an edge test of the value history (oldest first, latest last).
Level = Callable[[float], bool]
Edge = Callable[[Sequence[float]], bool]
# A composite's test of each metric's latest value: None when an item's value is undefined.
Verdict = Callable[[Mapping[str, float]], bool | None]


def level_test(condition: Condition) -> Level:
    """Return the test of a level operator (above, below, inside, outside, equals)."""
    op, x = condition.operator, condition.operand
    match op:
        case "above":
            return lambda v: v > x
        case "below":
            return lambda v: v < x
        case "inside":
            lo, hi = x
            return lambda v: lo <= v <= hi
        case "outside":
            lo, hi = x
            return lambda v: v < lo or v > hi
        case "equals":
            return lambda v: v == x
    raise ValueError(f"{op} is not a level operator")


def edge_test(condition: Condition) -> tuple[Edge, int]:
    """Return the test of an edge operator and how many latest values it reads."""
    op, x = condition.operator, condition.operand
    match op:
        case "crosses_above":
            return _defined(lambda h: h[-2] <= x < h[-1]), 2
        case "crosses_below":
            return _defined(lambda h: h[-2] >= x > h[-1]), 2
        case "enters":
            inside, side = _band_sides(x)
            came = side.get(x.from_, lambda v: not inside(v))
            return _defined(lambda h: came(h[-2]) and inside(h[-1])), 2
        case "exits":
            inside, side = _band_sides(x)
            went = side.get(x.to, lambda v: not inside(v))
            return _defined(lambda h: inside(h[-2]) and went(h[-1])), 2
        case "moving_up_pct" | "moving_down_pct" | "moving_up" | "moving_down":
            moved = _move_test(op, x.bars, x.pct if op.endswith("_pct") else x.by)
            # fires when the move first reaches the size, not on every bar it stays there
            return (lambda h: moved(h, 0) and not moved(h, 1)), x.bars + 2
    raise ValueError(f"{op} is not an edge operator")


def _band_sides(edge: BandEdge) -> tuple[Level, dict[str | None, Level]]:
    """Return the test of being inside the closed band, and of being below or above it."""
    lo, hi = edge.band
    return (lambda v: lo <= v <= hi), {"below": lambda v: v < lo, "above": lambda v: v > hi}


def group_test(condition: Condition) -> Verdict:
    """Return the test of a composite (``all``/``any`` of items) on the latest values."""
    return _group(condition.operator, condition.operand)


def _group(kind: str, items: Sequence[Item]) -> Verdict:
    parts = [_item(item) for item in items]
    every = kind == "all"

    def verdict(values: Mapping[str, float]) -> bool | None:
        results = [part(values) for part in parts]
        if None in results:
            return None  # an undefined item leaves the whole condition undefined
        return all(results) if every else any(results)

    return verdict


def _item(item: Item) -> Verdict:
    if item.group is not None:
        return _group(item.group, item.items)
    column, level = str(item.metric), level_test(item.condition)

    def verdict(values: Mapping[str, float]) -> bool | None:
        value = values.get(column, math.nan)
        return None if value != value else level(value)

    return verdict


def _defined(test: Edge) -> Edge:
    """Return ``test`` guarded so that an undefined (NaN) value never makes an edge."""
    return lambda h: h[-2] == h[-2] and h[-1] == h[-1] and test(h)


def _move_test(op: str, bars: int, size: float) -> Callable[[Sequence[float], int], bool]:
    up = "_up" in op
    pct = op.endswith("_pct")

    def moved(h: Sequence[float], back: int) -> bool:
        now, then = h[-1 - back], h[-1 - back - bars]
        if math.isnan(now) or math.isnan(then) or (pct and then == 0.0):
            return False
        change = (now - then) / abs(then) * 100.0 if pct else now - then
        return change >= size if up else change <= -size

    return moved


def threshold_of(condition: Condition) -> object:
    """Return the operand as templates see it: a number, a [lo, hi] list or a dict."""
    x = condition.operand
    if isinstance(x, BandEdge) and x.side is None:
        return list(x.band)
    if isinstance(x, tuple):
        return list(x)
    if hasattr(x, "model_dump"):
        dumped = x.model_dump(by_alias=True, exclude_none=True)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dumped.items()}
    return x


def levels_of(condition: Condition) -> list[float]:
    """Return the levels a chart draws for an operator: its number or its band's ends."""
    x = condition.operand
    if isinstance(x, BandEdge):
        x = x.band
    values = x if isinstance(x, tuple) else (x,)
    return [float(v) for v in values if isinstance(v, int | float)]
