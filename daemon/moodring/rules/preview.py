"""Rule templates rendered once with sample values: one that can never render is a config error."""

from __future__ import annotations

import time
from typing import Any

from moodring.rules.conditions import threshold_of
from moodring.rules.templates import metric_namespace, render_strict
from moodring.settings import RuleConfig, Settings
from moodring.times import iso_time

Problem = tuple[tuple[str | int, ...], str]

# Two unlike samples (positive and negative numbers, firing and resolved, with and without a
# note): a template is reported only when it fails with both, so it fails whatever the values.
_SAMPLES: tuple[dict[str, Any], ...] = (
    {"base": 0.25, "step": 0.5, "price": 100.0, "state": "firing", "note": ""},
    {
        "base": -1.5,
        "step": -0.75,
        "price": 2500.5,
        "state": "resolved",
        "note": "(muted for 5m while a feed was stale)",
    },
)


def render_problems(settings: Settings) -> list[Problem]:
    """Return ``(key path, message)`` for each rule template that fails with every sample."""
    problems: list[Problem] = []
    for i, rule in enumerate(settings.rules):
        contexts = [_context(settings, rule, sample) for sample in _SAMPLES]
        for field in ("title", "message"):
            text = getattr(rule, field)
            errors = [_failure(text, context) for context in contexts]
            if all(errors):
                problems.append(
                    (("rules", i, field), f"fails to render with sample values: {errors[0]}")
                )
    return problems


def _failure(text: str, context: dict[str, Any]) -> str:
    """Return why ``text`` fails to render in ``context``, or "" if it renders."""
    try:
        render_strict(text, context)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return ""


def _context(settings: Settings, rule: RuleConfig, sample: dict[str, Any]) -> dict[str, Any]:
    """Return what the rule book passes a rule's templates, filled with sample values."""
    columns = [*settings.metric_columns(), *settings.altseason_columns()]
    values = {column: sample["base"] + k * sample["step"] for k, column in enumerate(columns)}
    condition = getattr(rule, "condition", None)
    return {
        **metric_namespace(values),
        "rule": rule.name,
        "metric": getattr(rule, "metric", ""),
        "value": sample["base"],
        "previous": sample["base"] - sample["step"],
        "threshold": threshold_of(condition) if condition is not None else None,
        "severity": rule.severity,
        "state": sample["state"],
        "time": iso_time(int(time.time() * 1000)),
        "feeds": {feed: sample["price"] + k for k, feed in enumerate(settings.feeds)},
        "metrics": values,
        "note": sample["note"],
    }
