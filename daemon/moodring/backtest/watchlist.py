"""Watchlists in backtests: members' history from a universe, and who was a member when.

An explicit watchlist's members are its own throughout. A dynamic one (``top: N``) is
ranked from the universe's daily bars by ``altseason_series``, the Altcoin Season Index's
own ranking (quote volume over ``volume_days``, its exclusions, ties by name), on every
``refresh`` (whole days, at least one) from the day before the backtest's first day: the
ranking of day D is known once D has closed, so it holds for the bars from D + 1 day.
Its templates are expanded for every coin that was a member at some point, and
``MembershipLog.told`` keeps of their alerts what a daemon re-ranking the same way would
have told: the alerts of bars while the coin was a member; at a member's joining a
firing rule of its (a level rule already firing) is told firing, at its leaving a firing
rule is told resolved ("SOL left the top 10 watchlist alts").
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from moodring.backtest.universe import UniverseCoin, coin_files
from moodring.metrics.altseason import DAY_MS
from moodring.metrics.ranking import Ranking, described, rank_by_volume, ranked_members
from moodring.rules.alert import Alert
from moodring.settings import Member, RuleConfig, Settings, WatchlistConfig

__all__ = [
    "Membership",
    "MembershipLog",
    "described",
    "member_files",
    "ranked_members",
    "ranking",
]


def member_files(settings: Settings, paths: Sequence[str | Path]) -> dict[str, Path]:
    """Return the universe file (``<BASE><QUOTE>_1d.csv``) of each feed made for a member."""
    files: dict[str, dict[str, Path]] = {}  # quote -> base -> file
    found: dict[str, Path] = {}
    for feed in settings.feeds:
        origin = settings.origin("feeds", feed)
        if origin is None:
            continue
        quote = origin.member.quote
        if quote not in files:
            files[quote] = {}
            for path in paths:
                for base, coin_file in coin_files(path, quote).items():
                    files[quote].setdefault(base, coin_file)
        member_file = files[quote].get(origin.member.base)
        if member_file is not None:
            found[feed] = member_file
    return found


def ranking(coins: Mapping[str, UniverseCoin], config: WatchlistConfig) -> Ranking:
    """Rank the universe on every day it covers, as the Altcoin Season Index ranks it."""
    return rank_by_volume({base: coin.daily() for base, coin in coins.items()}, config)


@dataclass
class Membership:
    """Who was a member of one dynamic watchlist when: base -> [(from, until)] in epoch ms."""

    name: str
    config: WatchlistConfig
    spans: dict[str, list[tuple[int, int | None]]] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        name: str,
        config: WatchlistConfig,
        rank: Ranking,
        start_ms: int | None = None,
        end_ms: int | None = None,
    ) -> Membership:
        """Re-rank every ``refresh`` (whole days) from the day before ``start_ms`` on."""
        membership = cls(name, config)
        if not rank.days.size:
            return membership
        every = max(1, math.ceil(config.refresh / 86_400))
        first = int(rank.days[0]) if start_ms is None else (start_ms // DAY_MS - 1) * DAY_MS
        last = int(rank.days[-1]) if end_ms is None else end_ms
        current: set[str] = set()
        for row, day in enumerate(rank.days.tolist()):
            if day < first or day >= last or (day - first) // DAY_MS % every:
                continue
            now = set(rank.members[row])
            at = day + DAY_MS  # the ranking of a day holds once the day has closed
            for base in sorted(now - current, key=rank.members[row].index):
                membership.spans.setdefault(base, []).append((at, None))
            for base in current - now:
                begun, _ = membership.spans[base][-1]
                membership.spans[base][-1] = (begun, at)
            current = now
        return membership

    def members(self) -> tuple[Member, ...]:
        """Return every coin that was a member, in the order they first joined."""
        quote = self.config.quote
        return tuple(Member(f"{base}/{quote}", base, quote) for base in self.spans)


@dataclass
class MembershipLog:
    """The dynamic watchlists' memberships of a backtest, and what their rules would tell."""

    lists: dict[str, Membership]

    def rules_to_follow(self, settings: Settings) -> list[str]:
        """Return the level rules of members whose resolution must be seen to be told right."""
        return [
            rule.name
            for rule in settings.rules
            if self._membership(settings, rule.name) is not None and not _is_edge(rule)
        ]

    def followed(self, settings: Settings) -> Settings:
        """Return settings whose members' level rules send resolved alerts (to follow them)."""
        follow = set(self.rules_to_follow(settings))
        rules = tuple(
            rule.model_copy(update={"send_resolved": True}) if rule.name in follow else rule
            for rule in settings.rules
        )
        return settings.model_copy(update={"rules": rules})

    def told(self, alerts: Iterable[Alert], settings: Settings) -> list[Alert]:
        """Return the alerts a re-ranking daemon would have told, in time order.

        ``alerts`` come from a run of ``followed(settings)``; ``settings`` are the
        configured ones (whose ``send_resolved`` decides what is told).
        """
        by_rule: dict[str, list[Alert]] = {}
        out: list[Alert] = []
        for alert in alerts:
            if self._membership(settings, alert.rule) is None:
                out.append(alert)
            else:
                by_rule.setdefault(alert.rule, []).append(alert)
        configs = {rule.name: rule for rule in settings.rules}
        for name, config in configs.items():
            found = self._membership(settings, name)
            if found is not None:
                membership, member = found
                spans = membership.spans.get(member.base, [])
                out += _told(config, by_rule.get(name, []), spans, membership, member)
        return sorted(out, key=lambda alert: alert.time)

    def _membership(self, settings: Settings, rule: str) -> tuple[Membership, Member] | None:
        origin = settings.origin("rules", rule)
        if origin is None or origin.watchlist not in self.lists:
            return None
        return self.lists[origin.watchlist], origin.member


def _told(
    config: RuleConfig,
    alerts: list[Alert],
    spans: list[tuple[int, int | None]],
    membership: Membership,
    member: Member,
) -> list[Alert]:
    """Return what one member's rule tells while a member, joining and leaving included."""
    level = not _is_edge(config)
    events: list[tuple[int, int, Alert | None]] = []
    for begun, ended in spans:  # a span is [begun, ended): at a moment, leave, join, alerts
        events.append((begun, 1, None))
        if ended is not None:
            events.append((ended, 0, None))
    events += [(alert.time, 2, alert) for alert in alerts]
    events.sort(key=lambda event: (event[0], event[1]))
    out: list[Alert] = []
    last_firing: Alert | None = None  # the rule's state: firing since this alert
    member_now, told_firing = False, False
    for time, kind, alert in events:
        if alert is not None:
            if level:
                last_firing = alert if alert.state == "firing" else None
            if not member_now:
                continue
            if alert.state == "firing":
                out.append(alert)
                told_firing = level
            elif told_firing:
                if config.send_resolved:
                    out.append(alert)
                told_firing = False
        elif kind == 1:
            member_now = True
            if last_firing is not None and not told_firing:
                note = f" (firing already when {member.base} joined {_described(membership)})"
                out.append(_at(last_firing, time, last_firing.message + note))
                told_firing = True
        else:
            member_now = False
            if told_firing:
                text = f"{member.base} left {_described(membership)}"
                out.append(
                    Alert(
                        config.name,
                        "resolved",
                        time,
                        config.columns()[0],
                        math.nan,
                        config.severity,
                        text,
                        f"{text}: {config.name} is no longer watched.",
                    )
                )
                told_firing = False
    return out


def _described(membership: Membership) -> str:
    return described(membership.name, membership.config)


def _at(alert: Alert, time: int, message: str) -> Alert:
    return Alert(
        alert.rule,
        alert.state,
        time,
        alert.metric,
        alert.value,
        alert.severity,
        alert.title,
        message,
        alert.chart,
    )


def _is_edge(rule: RuleConfig) -> bool:
    return not rule.is_composite and rule.when.is_edge
