"""Rules, operators and metrics described in words for the report."""

from __future__ import annotations

from moodring.operators import BandEdge, Moving
from moodring.settings import Condition, Item, MetricConfig, RuleConfig
from moodring.times import format_duration


def number(x: float) -> str:
    """Return a threshold as people write it: 0.3, 80, -5, 1e-05."""
    return f"{x:g}"


def operator_text(condition: Condition) -> str:
    """Return an operator in words: ``below 0.3``, ``enters 50-80 from below``."""
    op, x = condition.operator, condition.operand
    if isinstance(x, BandEdge):
        band = f"{number(x.band[0])}-{number(x.band[1])}"
        if op == "enters":
            return f"enters {band}" + (f" from {x.from_}" if x.from_ else "")
        return f"leaves {band}" + (f" {x.to}wards" if x.to else "")
    if isinstance(x, Moving):
        size = f"{number(x.pct or 0)}%" if op.endswith("_pct") else number(x.by or 0)
        way = "rises" if "_up" in op else "falls"
        return f"{way} by {size} within {x.bars} bars"
    if isinstance(x, tuple):
        return f"{op} {number(x[0])}-{number(x[1])}"
    words = {"crosses_above": "crosses above", "crosses_below": "crosses below"}
    return f"{words.get(op, op)} {number(x)}"


def items_text(kind: str, items: tuple[Item, ...]) -> str:
    """Return a composite's items in words: ``all of (a below 0.5, any of (…))``."""
    parts = [
        items_text(item.group, item.items)
        if item.group
        else f"{item.metric} {operator_text(item.condition)}"
        for item in items
    ]
    return f"{kind} of ({', '.join(parts)})"


def rule_text(rule: RuleConfig, bars_for: int) -> str:
    """Return what a rule fires on and when it clears, in one line."""
    if rule.is_composite:
        text = items_text(rule.when.operator, rule.when.operand)
    else:
        text = f"{rule.metric} {operator_text(rule.when)}"
    if bars_for > 1:
        text += f" for {bars_for} bars"
    if rule.clear is not None:
        clear = rule.clear
        words = items_text(clear.operator, clear.operand) if clear.is_group else None
        text += f"; clears {words or operator_text(clear)}"
    if rule.cooldown:
        text += f"; cooldown {format_duration(rule.cooldown)}"
    if rule.repeat_interval:
        text += f"; repeats every {format_duration(rule.repeat_interval)}"
    return text


def metric_text(name: str, config: MetricConfig | None) -> str:
    """Return what a metric output is: ``correlation of eth and rut, 1d, window 30``."""
    if config is None:
        return f"{name} (daily, from the altcoin universe)"
    inputs = " and ".join(config.inputs())
    params = config.model_dump(exclude={"type", "series", "a", "b", "timeframe"})
    extra = ", ".join(f"{k} {v}" for k, v in params.items() if v is not None)
    return f"{config.type} of {inputs}, {config.timeframe}" + (f", {extra}" if extra else "")
