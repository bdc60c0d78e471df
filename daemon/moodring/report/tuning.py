"""``moodring backtest --sweep … --report …``: threshold sweeps and the HTML report."""

from __future__ import annotations

import importlib.util
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from moodring.backtest.runner import FeedHistory, RuleInputs, replay_rules
from moodring.backtest.stats import RuleStats, is_edge, rule_stats
from moodring.backtest.sweep import (
    Sweep,
    SweepError,
    SweepPoint,
    Value,
    check_sweeps,
    format_table,
    parse_sweep,
    run_sweep,
    sweep_inputs,
    sweep_rows,
    swept_rules,
)
from moodring.backtest.table import MetricTable
from moodring.market.jumps import Jump
from moodring.rules.alert import Alert
from moodring.settings import RuleConfig, Settings

log = logging.getLogger("moodring")
REPORT_EXTRA = "pip install 'moodring[report]'"


@dataclass(frozen=True, slots=True)
class Tuning:
    """The sweeps and the report one backtest was asked for, checked before it runs."""

    settings: Settings
    sweeps: tuple[Sweep, ...]
    rules: list[tuple[tuple[Value, ...], RuleConfig]]  # the swept rule at each value
    report: Path | None
    config: Path
    data: Mapping[str, Path]

    @classmethod
    def of(
        cls,
        settings: Settings,
        specs: Sequence[str],
        report: Path | None,
        config: Path,
        data: Mapping[str, Path],
    ) -> Tuning:
        """Parse the ``--sweep`` arguments and check ``--report`` can be written; SweepError."""
        sweeps = tuple(parse_sweep(spec, settings) for spec in specs)
        check_sweeps(sweeps)
        rules = swept_rules(settings, sweeps) if sweeps else []
        if report is not None:
            check_report_path(report)
        return cls(settings, sweeps, rules, report, config, data)

    def run(
        self,
        table: MetricTable,
        history: Mapping[str, FeedHistory],
        jumps: Sequence[Jump],
        alerts: list[Alert],
        span: tuple[int, int],
        style: str,
    ) -> None:
        """Print the sweep (one line per value) and write the report, as asked."""
        settings = self.settings
        inputs = RuleInputs.of(settings, table, history, jumps)
        points: list[SweepPoint] = []
        if self.sweeps:
            rule = next(r for r in settings.rules if r.name == self.sweeps[0].rule)
            missing = set(rule.columns()) - set(table.columns)
            if missing:
                raise SweepError(
                    f"--sweep {self.sweeps[0].spec}: no data for {', '.join(sorted(missing))}"
                )
            own = sweep_inputs(settings, rule, table, inputs)
            points = run_sweep(settings, self.rules, table, own, span)
            if style == "json":
                for row in sweep_rows(settings, self.sweeps, points):
                    print(json.dumps(row))
            else:
                for line in format_table(settings, self.sweeps, points):
                    print(line)
        if self.report is None:
            return
        from moodring.report.page import ReportData, write_report  # bokeh: only here

        transitions = replay_all(settings, inputs)
        data = ReportData(
            settings=settings,
            config=self.config,
            data=dict(self.data),
            history=history,
            table=table,
            span=span,
            alerts=alerts,
            stats=all_stats(settings, transitions, span),
            transitions=transitions,
            sweeps=self.sweeps,
            points=points,
        )
        size = write_report(self.report, data)
        log.info("wrote the report to %s (%.1f MB)", self.report, size / 1e6)


def replay_all(settings: Settings, inputs: RuleInputs) -> list[Alert]:
    """Replay every rule with each resolution told (sent or not), texts left unrendered."""
    rules = tuple(
        rule.model_copy(
            update={"chart": False} | ({} if is_edge(rule) else {"send_resolved": True})
        )
        for rule in settings.rules
    )
    return replay_rules(settings.model_copy(update={"rules": rules}), inputs, render=False)


def all_stats(
    settings: Settings, transitions: Sequence[Alert], span: tuple[int, int]
) -> dict[str, RuleStats]:
    """Return each rule's figures over ``span`` from its replayed transitions."""
    by_rule: dict[str, list[Alert]] = {rule.name: [] for rule in settings.rules}
    for alert in transitions:
        if alert.rule in by_rule:
            by_rule[alert.rule].append(alert)
    return {
        rule.name: rule_stats(
            rule,
            by_rule[rule.name],
            bar_ms=settings.rule_timeframe(rule).ms,
            span=span,
            monthly=True,
        )
        for rule in settings.rules
    }


def check_report_path(path: Path) -> None:
    """Raise SweepError unless bokeh is installed and ``path`` can be written as a file."""
    if importlib.util.find_spec("bokeh") is None:
        raise SweepError(
            f"--report {path}: the report needs bokeh, which a plain install leaves out: "
            f"{REPORT_EXTRA}"
        )
    if path.is_dir():
        raise SweepError(f"--report {path}: is a directory; give a file name like report.html")
    parent = path.parent
    if not parent.is_dir():
        raise SweepError(f"--report {path}: no such directory {parent}")
