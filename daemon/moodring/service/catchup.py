"""After a restart from a snapshot: the alerts of bars that closed while moodring was down."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Literal

from moodring.rules.alert import Alert

Verdict = Literal["past", "late", "too_old"]


class CatchUp:
    """Judges the alerts that the warm-up's bars raise after a restart from a snapshot.

    ``judged`` maps a rule to the open time of the last bar its restored series hold (the
    earliest of them): an alert on a bar up to that one is in the past, judged by the run
    before (not told, as in a warm-up). A later bar closed while moodring was down: its
    alert is sent marked late, unless it closed more than ``max_age_s`` before the newest
    bar replayed (then it is only logged and counted). Rules without restored bars stay
    quiet, as in a warm-up from scratch.
    """

    def __init__(
        self, judged: Mapping[str, int], timeframes: Mapping[str, int], max_age_s: float
    ) -> None:
        self._judged = dict(judged)
        self._timeframes = dict(timeframes)
        self._max_age_ms = int(max_age_s * 1000)
        self.newest = -1  # close time (epoch ms) of the newest bar replayed
        self.active = False
        self.late = 0
        self.too_old = 0

    @contextmanager
    def replaying(self, newest_close_ms: int) -> Iterator[None]:
        """Judge the alerts raised in the block: bars up to ``newest_close_ms`` replayed."""
        self.newest = max(self.newest, newest_close_ms)
        self.active = True
        try:
            yield
        finally:
            self.active = False

    def judge(self, alert: Alert) -> tuple[Verdict, Alert]:
        """Return whether an alert is past, late (then marked so) or too old to send."""
        last = self._judged.get(alert.rule)
        if last is None or alert.time <= last:
            return "past", alert
        closed = alert.time + self._timeframes.get(alert.rule, 0)
        if self.newest - closed > self._max_age_ms:
            self.too_old += 1
            return "too_old", alert
        self.late += 1
        return "late", dataclasses.replace(alert, message=late_message(alert, self.newest))


def late_message(alert: Alert, now_ms: int) -> str:
    """Return the alert's message marked as sent late, with its bar's time."""
    at = datetime.fromtimestamp(alert.time / 1000, UTC)
    today = datetime.fromtimestamp(now_ms / 1000, UTC).date()
    when = at.strftime("%H:%M" if at.date() == today else "%Y-%m-%d %H:%M")
    return f"While moodring was down: {alert.message} (at {when} UTC)"
