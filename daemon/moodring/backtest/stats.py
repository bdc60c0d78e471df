"""What a rule did over a backtest: alerts, firing episodes, flip-flops, alerts per month."""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from moodring.rules.alert import Alert
from moodring.settings import RuleConfig
from moodring.times import iso_time

# A firing this close (in bars of the rule) to the rule's last resolution or firing flip-flops.
FLIP_FLOP_BARS = 5
MONTH_MS = 365.25 / 12 * 86_400_000


@dataclass(frozen=True, slots=True)
class Episode:
    """A stretch of firing: from the bar it fired to the bar it resolved (None: still firing)."""

    fired: int
    resolved: int | None


@dataclass(frozen=True, slots=True)
class RuleStats:
    """One rule's record over a span of bars; times are bar open times in epoch ms."""

    rule: str
    alerts: int  # alerts it sent: firings, repeats and, with send_resolved, resolutions
    firing: int  # of them, firing alerts
    flip_flops: int  # new firings within FLIP_FLOP_BARS of its last resolution or firing
    per_month: float
    months: tuple[tuple[str, int], ...]  # ("2024-07", alerts) per month of the span, if counted
    firing_share: float  # share of the span spent firing (0 for an edge rule)
    median_firing_ms: float | None  # median length of its firing episodes (None: none)
    first: int | None
    last: int | None
    episodes: tuple[Episode, ...]

    def as_dict(self) -> dict[str, object]:
        """Return the figures as JSON-ready values (times ISO-8601, durations in seconds)."""
        median = self.median_firing_ms
        return {
            "alerts": self.alerts,
            "firing": self.firing,
            "resolved": self.alerts - self.firing,
            "per_month": round(self.per_month, 4),
            "flip_flops": self.flip_flops,
            "median_firing_s": None if median is None else median / 1000,
            "firing_share": round(self.firing_share, 6),
            "first": None if self.first is None else iso_time(self.first),
            "last": None if self.last is None else iso_time(self.last),
        }


def is_edge(rule: RuleConfig) -> bool:
    """Return whether a rule fires on a change (one bar) rather than holds as a level."""
    return not rule.is_composite and rule.when.is_edge


def rule_stats(
    rule: RuleConfig,
    alerts: Iterable[Alert],
    *,
    bar_ms: int,
    span: tuple[int, int],
    monthly: bool = False,
) -> RuleStats:
    """Return what ``rule`` did within ``span`` (start, end) from its alerts.

    For a level rule ``alerts`` must hold every resolution, sent or not (replay it with
    ``send_resolved`` on); they count as alerts only if the rule sends them. Alerts before
    the span (warm-up) only set the state the span starts in. A level rule firing while
    already firing repeats, it does not fire anew; an edge rule fires on one bar each time.
    With ``monthly`` the alerts per calendar month are counted too.
    """
    edge = is_edge(rule)
    sends_resolved = rule.send_resolved
    name = rule.name
    start, end = span
    sent: list[Alert] = []
    episodes: list[Episode] = []
    flip_flops = 0
    fired: int | None = None  # when the open episode fired
    last_event: int | None = None  # the last firing or resolution
    for alert in alerts:
        if alert.rule != name:
            continue
        t = alert.time
        inside = start <= t < end
        if alert.state == "resolved":
            if fired is not None:
                episodes.append(Episode(fired, t))
                fired = None
            last_event = t
            if inside and sends_resolved:
                sent.append(alert)
            continue
        if inside:
            sent.append(alert)
        if fired is not None:
            continue  # a repeat while firing
        if inside and last_event is not None and t - last_event <= FLIP_FLOP_BARS * bar_ms:
            flip_flops += 1
        last_event = t
        if not edge:
            fired = t
    if fired is not None:
        episodes.append(Episode(fired, None))
    shown = [e for e in episodes if (e.resolved is None or e.resolved > start) and e.fired < end]
    firing_ms = sum(min(e.resolved or end, end) - max(e.fired, start) for e in shown)
    lengths = [(e.resolved or end) - e.fired for e in shown if start <= e.fired]
    months = _months(sent, span) if monthly else ()
    length = end - start
    return RuleStats(
        rule=name,
        alerts=len(sent),
        firing=sum(a.state == "firing" for a in sent),
        flip_flops=flip_flops,
        per_month=len(sent) / (length / MONTH_MS) if length > 0 else 0.0,
        months=months,
        firing_share=firing_ms / length if length > 0 else 0.0,
        median_firing_ms=statistics.median(lengths) if lengths else None,
        first=sent[0].time if sent else None,
        last=sent[-1].time if sent else None,
        episodes=tuple(shown),
    )


def _months(alerts: list[Alert], span: tuple[int, int]) -> tuple[tuple[str, int], ...]:
    """Return ("YYYY-MM", alerts) for each calendar month from the span's start to its end."""
    if span[1] <= span[0]:
        return ()
    first = datetime.fromtimestamp(span[0] / 1000, UTC)
    last = datetime.fromtimestamp((span[1] - 1) / 1000, UTC)
    counts: dict[str, int] = {}
    year, month = first.year, first.month
    while (year, month) <= (last.year, last.month):
        counts[f"{year:04d}-{month:02d}"] = 0
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    for alert in alerts:
        key = datetime.fromtimestamp(alert.time / 1000, UTC).strftime("%Y-%m")
        if key in counts:
            counts[key] += 1
    return tuple(counts.items())
