"""Alerts, notify settings and a clock for delivery tests."""

from __future__ import annotations

from typing import Any

from moodring.rules.alert import Alert
from moodring.settings import NotifyConfig


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make_alert(
    i: int, severity: str = "warning", state: str = "firing", chart: dict | None = None
) -> Alert:
    """Return alert number ``i`` of rule ``r`` (bar time i minutes, value i)."""
    return Alert(
        rule="r",
        state=state,  # type: ignore[arg-type]
        time=i * 60_000,
        metric="m",
        value=float(i),
        severity=severity,  # type: ignore[arg-type]
        title=f"title {i}",
        message=f"alert {i}",
        chart=chart,
    )


def notify_for(*urls: Any, **kw: Any) -> NotifyConfig:
    """Return notify settings for ``urls`` with fast retries and no practical rate limit."""
    settings: dict[str, Any] = {
        "rate_per_minute": 6000,
        "retry_initial": 0.05,
        "retry_max": 0.2,
        "timeout": 10,
    }
    settings.update(kw)
    return NotifyConfig(urls=urls, **settings)
