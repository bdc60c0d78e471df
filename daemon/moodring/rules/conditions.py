"""Rule operators: levels that hold on a value, edges that fire on a change."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from moodring.settings import Condition

# A level test of one value, or an edge test of the value history (oldest first, latest last).
Level = Callable[[float], bool]
Edge = Callable[[Sequence[float]], bool]


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
            lo, hi = x
            return _defined(lambda h: not lo <= h[-2] <= hi and lo <= h[-1] <= hi), 2
        case "exits":
            lo, hi = x
            return _defined(lambda h: lo <= h[-2] <= hi and not lo <= h[-1] <= hi), 2
        case "moving_up_pct" | "moving_down_pct" | "moving_up" | "moving_down":
            moved = _move_test(op, x.bars, x.pct if op.endswith("_pct") else x.by)
            # fires when the move first reaches the size, not on every bar it stays there
            return (lambda h: moved(h, 0) and not moved(h, 1)), x.bars + 2
    raise ValueError(f"{op} is not an edge operator")


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
    if isinstance(x, tuple):
        return list(x)
    if hasattr(x, "model_dump"):
        return {k: v for k, v in x.model_dump().items() if v is not None}
    return x
