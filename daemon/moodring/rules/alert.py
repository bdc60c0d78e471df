"""The alert record that rules produce and delivery sends."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Literal

Severity = Literal["info", "warning", "critical"]
AlertState = Literal["firing", "resolved"]


@dataclass(frozen=True, slots=True)
class Alert:
    """One notification: a rule's transition (or repeat) at a bar time, rendered for people.

    ``time`` is the open time (epoch ms, UTC) of the bar the transition happened on; with
    ``rule`` and ``state`` it is the dedup key, so a restart never sends it twice.
    ``chart`` is optional plot data (JSON-able) that delivery may render into a PNG.
    """

    rule: str
    state: AlertState
    time: int
    metric: str
    value: float
    severity: Severity
    title: str
    message: str
    chart: dict[str, Any] | None = field(default=None, compare=False)

    @property
    def key(self) -> str:
        """Return the dedup key: rule, state and bar time."""
        return f"{self.rule}|{self.state}|{self.time}"

    def to_json(self) -> str:
        """Serialise for the outbox (NaN values become null)."""
        # the fields in order, not ``asdict``: it deep-copies the chart, on the engine's path
        value = self.value
        data = {
            "rule": self.rule,
            "state": self.state,
            "time": self.time,
            "metric": self.metric,
            "value": None if isinstance(value, float) and math.isnan(value) else value,
            "severity": self.severity,
            "title": self.title,
            "message": self.message,
            "chart": self.chart,
        }
        return json.dumps(data, separators=(",", ":"), allow_nan=False)

    @classmethod
    def from_json(cls, text: str) -> Alert:
        """Parse what ``to_json`` wrote."""
        data = json.loads(text)
        if data["value"] is None:
            data["value"] = math.nan
        return cls(**data)
