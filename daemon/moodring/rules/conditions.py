"""Rule tests from the operator table: levels, edges, composites, and thresholds as shown."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

from moodring.operators import OPERATORS, BandEdge, Edge, Level
from moodring.settings import Condition, Item

__all__ = ["Edge", "Level", "Verdict", "edge_test", "group_test", "level_test", "levels_of"]

# A composite's test of each metric's latest value: None when an item's value is undefined.
Verdict = Callable[[Mapping[str, float]], bool | None]


def level_test(condition: Condition) -> Level:
    """Return the test of a level operator (above, below, inside, outside, equals)."""
    op = OPERATORS.get(condition.operator)
    if op is None or op.is_edge:
        raise ValueError(f"{condition.operator} is not a level operator")
    test: Level = op.test(condition.operand)
    return test


def edge_test(condition: Condition) -> tuple[Edge, int]:
    """Return the test of an edge operator and how many latest values it reads."""
    op = OPERATORS.get(condition.operator)
    if op is None or not op.is_edge:
        raise ValueError(f"{condition.operator} is not an edge operator")
    test: Edge = op.test(condition.operand)
    return test, op.reads(condition.operand)


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
    return OPERATORS[condition.operator].levels(condition.operand)
