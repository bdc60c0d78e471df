"""The backtest report page: bokeh charts and tables in one HTML file that needs no network.

Imported only for ``--report``: bokeh is the ``report`` extra, never loaded by the daemon.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np
from bokeh.core.properties import value
from bokeh.document import Document
from bokeh.embed import components
from bokeh.embed.bundle import bundle_for_objs_and_resources
from bokeh.layouts import column, gridplot, row
from bokeh.model import Model
from bokeh.models import (
    ColumnDataSource,
    CustomJS,
    DataRange1d,
    FactorRange,
    HoverTool,
    LayoutDOM,
    NumeralTickFormatter,
    Range1d,
)
from bokeh.models.annotations.labels import Title
from bokeh.models.annotations.legends import Legend, LegendItem
from bokeh.models.renderers.glyph_renderer import GlyphRenderer
from bokeh.models.renderers.renderer import DataRenderer
from bokeh.models.widgets.inputs import Select
from bokeh.palettes import Blues256
from bokeh.plotting import figure
from bokeh.resources import INLINE
from bokeh.transform import factor_cmap, factor_mark, linear_cmap
from jinja2 import Environment, select_autoescape

from moodring import __version__
from moodring.backtest.runner import FeedHistory
from moodring.backtest.stats import RuleStats, is_edge, rule_stats
from moodring.backtest.sweep import Sweep, SweepPoint, configured, sweep_rows
from moodring.backtest.table import MetricTable
from moodring.market.frame import BarFrame, ratio_frame
from moodring.market.resample import resample
from moodring.market.timeframe import Timeframe
from moodring.report.wording import metric_text, operator_text, rule_text
from moodring.rules.alert import Alert
from moodring.rules.conditions import levels_of
from moodring.settings import DEFAULT_CONFIG, Condition, RuleConfig, Settings
from moodring.times import format_duration, iso_time

FIRE = "#c62828"
CLEAR = "#2e7d32"
METRIC = "#1565c0"
PRICE = "#37474f"
SWEEP_FLIPS = "#ef6c00"
PRICE_HEIGHT = 150
METRIC_HEIGHT = 210
TOOLS = "xpan,xwheel_zoom,box_zoom,reset,save"
STATES = ["firing", "resolved"]
# beyond this many swept values the rule's chart shows the configured one only
MAX_SWITCHABLE = 400


@dataclass(frozen=True, slots=True)
class ReportData:
    """Everything the page shows, from one backtest."""

    settings: Settings
    config: Path
    data: Mapping[str, Path]  # feed -> the CSV it was read from
    history: Mapping[str, FeedHistory]
    table: MetricTable  # every closed value, warm-up included
    span: tuple[int, int]  # the bars shown: [start, end) in epoch ms
    alerts: Sequence[Alert]  # what the backtest printed
    stats: Mapping[str, RuleStats]
    transitions: Sequence[Alert]  # every rule's firings and resolutions, sent or not
    sweeps: Sequence[Sweep] = ()
    points: Sequence[SweepPoint] = field(default_factory=list)


def write_report(path: Path, data: ReportData) -> int:
    """Write the report to ``path`` (whole or not at all); return its size in bytes."""
    page = render_report(data).encode("utf-8")
    partial = path.with_name(f".{path.name}.partial")
    partial.write_bytes(page)
    os.replace(partial, path)
    return len(page)


def render_report(data: ReportData) -> str:
    """Return the report as one HTML page with every script and style inline."""
    charts = _Charts(data)
    roots: dict[str, Model] = {}
    for rule in data.settings.rules:
        chart = charts.rule_chart(rule)
        if chart is not None:
            roots[f"rule-{rule.name}"] = chart
    if data.points:
        roots["sweep"] = charts.sweep_chart()
    document = Document()
    with document.models.freeze():  # one model walk for all roots instead of one per root
        for root in roots.values():
            document.add_root(root)
    script, divs = components(roots) if roots else ("", {})
    bundle = bundle_for_objs_and_resources(list(roots.values()), INLINE)
    env = Environment(autoescape=select_autoescape(default=True), trim_blocks=True)
    template = env.from_string(files("moodring.report").joinpath("page.html").read_text())
    return template.render(
        title=_title(data),
        header=_header(data),
        sources=_sources(data),
        summary=_summary(data),
        sweep=_sweep(data),
        months=_month_range(data),
        rules=[
            {
                "name": r.name,
                "anchor": f"rule-{r.name}",
                "text": rule_text(r, data.settings.rule_bars(r)),
                "severity": r.severity,
                "div": divs.get(f"rule-{r.name}"),
                "swept": bool(data.sweeps) and r.name == data.sweeps[0].rule,
            }
            for r in data.settings.rules
        ],
        sweep_div=divs.get("sweep"),
        alerts=_alert_rows(data),
        alert_rules=sorted({a.rule for a in data.alerts if _inside(a.time, data.span)}),
        bokeh_script=script,
        bokeh_resources=bundle.scripts(),
    )


def _legend_item(label: str, *renderers: GlyphRenderer[Any]) -> LegendItem:
    """Return a legend entry that shows or hides ``renderers``."""
    return LegendItem(label=value(label), renderers=list(renderers))


def _inside(t: int, span: tuple[int, int]) -> bool:
    return span[0] <= t < span[1]


def _day(t: int | None) -> str:
    return "-" if t is None else iso_time(t)[:10]


def _title(data: ReportData) -> str:
    return f"moodring backtest {_day(data.span[0])} to {_day(data.span[1] - 1)}"


def _shown(path: Path) -> str:
    """Return a path for the header: the bundled files by name, others as given."""
    try:
        inside = path.absolute().relative_to(DEFAULT_CONFIG.parent.absolute())
    except ValueError:
        return str(path)
    return f"built-in {inside}"


def _header(data: ReportData) -> dict[str, str]:
    config = data.config
    digest = hashlib.sha256(config.read_bytes()).hexdigest() if config.is_file() else "?"
    shown = [a for a in data.alerts if _inside(a.time, data.span)]
    months = (data.span[1] - data.span[0]) / (365.25 / 12 * 86_400_000)
    rate = f"{len(shown) / months:.2f}" if months > 0 else "-"
    return {
        "config": _shown(config),
        "sha256": digest,
        "version": __version__,
        "made": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "span": f"{_day(data.span[0])} to {_day(data.span[1] - 1)}",
        "alerts": f"{len(shown)} alerts, {rate} a month",
        "rules": str(len(data.settings.rules)),
    }


def _sources(data: ReportData) -> list[dict[str, str]]:
    rows = []
    for feed, path in data.data.items():
        h = data.history.get(feed)
        bars = h.bars if h is not None else None
        rows.append(
            {
                "feed": feed,
                "symbol": data.settings.feeds[feed].symbol if feed in data.settings.feeds else "",
                "path": _shown(path),
                "bars": str(len(bars)) if bars is not None else "0",
                "first": _day(int(bars.time[0])) if bars is not None and len(bars) else "-",
                "last": _day(int(bars.time[-1])) if bars is not None and len(bars) else "-",
                "step": format_duration(h.step_ms / 1000) if h is not None else "",
            }
        )
    return rows


def _summary(data: ReportData) -> list[dict[str, Any]]:
    counts = [count for stats in data.stats.values() for _, count in stats.months]
    top = max(counts, default=1) or 1  # one scale for every rule's sparkline
    rows = []
    for rule in data.settings.rules:
        stats = data.stats.get(rule.name)
        if stats is None:
            continue
        if not set(rule.columns()) <= set(data.table.columns):
            rows.append({"name": rule.name, "anchor": f"rule-{rule.name}", "missing": True})
            rows[-1]["severity"] = rule.severity
            continue
        median = stats.median_firing_ms
        edge = is_edge(rule)
        rows.append(
            {
                "name": rule.name,
                "anchor": f"rule-{rule.name}",
                "severity": rule.severity,
                "alerts": stats.alerts,
                "firing": stats.firing,
                "per_month": f"{stats.per_month:.2f}",
                "spark": _sparkline(stats.months, top),
                "flip_flops": stats.flip_flops,
                "share": "edge" if edge else f"{stats.firing_share:.1%}",
                "median": "-" if median is None else format_duration(median / 1000),
                "first": _day(stats.first),
                "last": _day(stats.last),
            }
        )
    return rows


def _sparkline(months: Sequence[tuple[str, int]], top: int) -> dict[str, Any]:
    """Return the bars of an alerts-per-month sparkline (SVG coordinates, ``top`` the tallest)."""
    width, height = 180, 26
    if not months:
        return {"width": width, "height": height, "bars": []}
    step = width / len(months)
    bars = []
    for i, (month, count) in enumerate(months):
        h = 0 if count == 0 else max(2.0, count / top * (height - 2))
        bars.append(
            {
                "x": f"{i * step:.2f}",
                "y": f"{height - h:.2f}",
                "w": f"{max(step - 0.4, 0.6):.2f}",
                "h": f"{h:.2f}",
                "title": f"{month}: {count} alert{'s' * (count != 1)}",
            }
        )
    return {"width": width, "height": height, "bars": bars}


def _month_range(data: ReportData) -> dict[str, Any]:
    """Return the first and last month of the sparklines and the tallest bar's count."""
    months = next((stats.months for stats in data.stats.values() if stats.months), ())
    counts = [count for stats in data.stats.values() for _, count in stats.months]
    first, last = (months[0][0], months[-1][0]) if months else ("", "")
    return {"first": first, "last": last, "top": max(counts, default=0)}


def _alert_rows(data: ReportData) -> list[dict[str, str]]:
    rows = []
    for a in data.alerts:
        if not _inside(a.time, data.span):
            continue
        value = "" if a.value != a.value else f"{a.value:.4g}"
        rows.append(
            {
                "time": iso_time(a.time).replace("T00:00:00Z", ""),
                "rule": a.rule,
                "state": a.state,
                "severity": a.severity,
                "metric": a.metric,
                "value": value,
                "message": a.message,
            }
        )
    return rows


def _sweep(data: ReportData) -> dict[str, Any] | None:
    if not data.points:
        return None
    sweeps = data.sweeps
    rows = sweep_rows(data.settings, sweeps, data.points)
    given = [configured(data.settings, s) for s in sweeps]
    return {
        "rule": sweeps[0].rule,
        "anchor": f"rule-{sweeps[0].rule}",
        "switchable": _switchable(data),
        "most": MAX_SWITCHABLE,
        "paths": [s.path for s in sweeps],
        "configured": ", ".join(
            f"{s.path} = {s.show(v)}" for s, v in zip(sweeps, given, strict=True)
        ),
        "rows": [
            {
                "values": [s.show(v) for s, v in zip(sweeps, point.values, strict=True)],
                "configured": row["configured"],
                "alerts": row["alerts"],
                "per_month": f"{row['per_month']:.2f}",
                "flip_flops": row["flip_flops"],
                "median": "-"
                if row["median_firing_s"] is None
                else format_duration(row["median_firing_s"]),
                "share": f"{row['firing_share']:.1%}",
                "first": (row["first"] or "-")[:10],
                "last": (row["last"] or "-")[:10],
            }
            for point, row in zip(data.points, rows, strict=True)
        ],
    }


def _switchable(data: ReportData) -> bool:
    """Return whether the swept rule's chart gets a chooser of values (the page stays small)."""
    return 0 < len(data.points) <= MAX_SWITCHABLE


@dataclass(frozen=True, slots=True)
class _Line:
    """A price or metric line over the report's span, shared by every chart that draws it."""

    source: ColumnDataSource
    times: np.ndarray
    values: np.ndarray


@dataclass(frozen=True, slots=True)
class _Panel:
    """One panel of a rule's chart: a price series (``price``) or a metric output."""

    price: bool
    name: str  # the series or the metric output
    title: str
    line: _Line


class _Charts:
    """Builds the bokeh charts; price and metric lines are shared between rules' charts."""

    def __init__(self, data: ReportData) -> None:
        self.data = data
        self.settings = data.settings
        start, end = data.span
        self.x_bounds = (float(start), float(end))
        self._lines: dict[str, _Line] = {}
        series = data.table.series()
        self._metric = {name: (t[~np.isnan(v)], v[~np.isnan(v)]) for name, (t, v) in series.items()}

    # --- data -------------------------------------------------------------------------
    def _price(self, series: str, timeframe: str) -> BarFrame | None:
        settings, history = self.settings, self.data.history
        ratio = settings.series.get(series)
        if ratio is not None:
            legs = [self._price(leg, timeframe) for leg in ratio.ratio]
            if legs[0] is None or legs[1] is None:
                return None
            return ratio_frame(legs[0], legs[1])
        feed = history.get(series)
        if feed is None:
            return None
        return resample(feed.bars, feed.step_ms, Timeframe.parse(timeframe))

    def _line(self, key: str, times: np.ndarray, values: np.ndarray) -> _Line:
        if key not in self._lines:
            start, end = self.data.span
            keep = (times >= start) & (times < end)
            t, v = times[keep], values[keep]
            source = ColumnDataSource({"x": t.astype(np.float64), "y": v})
            self._lines[key] = _Line(source, t, v)
        return self._lines[key]

    def _panels(self, rule: RuleConfig) -> list[_Panel]:
        """Return a rule's panels: the prices its metrics read, then each metric."""
        settings = self.settings
        owners = settings.metric_columns()
        prices: dict[tuple[str, str], None] = {}
        for c in rule.columns():
            config = settings.metrics.get(owners.get(c, ""))
            if config is not None:
                for s in config.inputs():
                    prices[(s, config.timeframe)] = None
        panels: list[_Panel] = []
        for series, timeframe in prices:
            frame = self._price(series, timeframe)
            if frame is None:
                continue
            ratio = settings.series.get(series)
            name = f"{series} = {' / '.join(ratio.ratio)}" if ratio else series
            symbol = settings.feeds[series].symbol if series in settings.feeds else ""
            title = f"{name} {symbol} close ({timeframe})".replace("  ", " ")
            line = self._line(f"price:{series}:{timeframe}", frame.time, frame.close)
            panels.append(_Panel(True, series, title, line))
        for c in rule.columns():
            if c not in self._metric:
                continue
            config = settings.metrics.get(owners.get(c, ""))
            t, v = self._metric[c]
            title = f"{c}: {metric_text(c, config)}"
            panels.append(_Panel(False, c, title, self._line(c, t, v)))
        return panels

    # --- overlays ---------------------------------------------------------------------
    def _levels(self, rule: RuleConfig, column: str) -> list[tuple[str, str, float]]:
        """Return (kind, label, y) of the threshold lines a metric panel draws for ``rule``."""
        out: list[tuple[str, str, float]] = []

        def add(kind: str, condition: Condition) -> None:
            text = f"{'fires' if kind == 'fire' else 'clears'}: {operator_text(condition)}"
            out.extend((kind, text, y) for y in levels_of(condition))

        if rule.is_composite:
            for path, item in rule.metric_items():
                if item.metric == column:
                    add("clear" if path.startswith("clear.") else "fire", item.condition)
        else:
            add("fire", rule.when)
            if rule.clear is not None:
                add("clear", rule.clear)
        return out

    def _overlay(
        self,
        rule: RuleConfig,
        transitions: Sequence[Alert],
        stats: RuleStats,
        panels: list[_Panel],
    ) -> dict[str, Any]:
        """Return the spans, markers and threshold lines of a rule's chart as plain data."""
        start, end = self.data.span
        sent = [
            a
            for a in transitions
            if _inside(a.time, self.data.span) and (a.state == "firing" or rule.send_resolved)
        ]
        spans = {
            "x0": [max(e.fired, start) for e in stats.episodes],
            "x1": [min(e.resolved or end, end) for e in stats.episodes],
        }
        markers: dict[str, dict[str, list[Any]]] = {}
        for i, panel in enumerate(panels):
            line = panel.line
            at = np.searchsorted(line.times, [a.time for a in sent], "right") - 1
            ys = [float(line.values[j]) if j >= 0 else math.nan for j in at.tolist()]
            markers[f"m{i}"] = {
                "x": [a.time for a in sent],
                "y": [float(f"{y:.6g}") if y == y else None for y in ys],
                "state": [a.state for a in sent],
            }
        lines: dict[str, dict[str, list[float]]] = {}
        labels: dict[str, str] = {}
        for i, panel in enumerate(panels):
            if panel.price:
                continue
            grouped: dict[str, list[float]] = {}
            for _, label, y in self._levels(rule, panel.name):
                grouped.setdefault(label, []).append(y)
            for j, (label, ys) in enumerate(grouped.items()):
                lines[f"l{i}_{j}"] = {"y": ys}
                labels[f"l{i}_{j}"] = label
        return {"spans": spans, "markers": markers, "lines": lines, "labels": labels}

    # --- figures ----------------------------------------------------------------------
    def rule_chart(self, rule: RuleConfig) -> LayoutDOM | None:
        """Return a rule's chart: price panels above metric panels, with alerts marked."""
        panels = self._panels(rule)
        stats = self.data.stats.get(rule.name)
        if not panels or stats is None:
            return None
        transitions = [a for a in self.data.transitions if a.rule == rule.name]
        overlay = self._overlay(rule, transitions, stats, panels)
        start, end = self.x_bounds
        pad = (end - start) * 0.01
        bounds = (start - 20 * pad, end + 20 * pad)
        x_range = Range1d(start=start - pad, end=end + pad, bounds=bounds)
        span_source = ColumnDataSource(overlay["spans"])
        marker_sources = {
            k: ColumnDataSource(v, name=f"markers:{rule.name}:{k}")
            for k, v in overlay["markers"].items()
        }
        line_sources = {k: ColumnDataSource(v) for k, v in overlay["lines"].items()}
        legend_items: dict[str, LegendItem] = {}
        figures = []
        for i, panel in enumerate(panels):
            price, name = panel.price, panel.name
            fig = figure(
                title=Title(text=panel.title, text_font_size="12px", text_font_style="normal"),
                x_axis_type="datetime",
                x_range=x_range,
                height=PRICE_HEIGHT if price else METRIC_HEIGHT,
                sizing_mode="stretch_width",
                tools=TOOLS,
                active_drag="xpan",
                toolbar_location="right",
            )
            fig.yaxis.formatter = NumeralTickFormatter(format="0,0.[0000]")
            fig.vstrip(
                x0="x0",
                x1="x1",
                source=span_source,
                fill_color=FIRE,
                fill_alpha=0.07 if price else 0.12,
                line_alpha=0,
            )
            line = fig.line(
                "x", "y", source=panel.line.source, color=PRICE if price else METRIC, line_width=1.4
            )
            fig.add_tools(
                HoverTool(
                    renderers=[line],
                    tooltips=[("date", "@x{%F}"), ("close" if price else name, "@y{0,0.[0000]}")],
                    formatters={"@x": "datetime"},
                    mode="vline",
                )
            )
            ranged: list[Model] = [line]
            items = [_legend_item(name if not price else "close", line)]
            for key, level_source in line_sources.items():
                if not key.startswith(f"l{i}_"):
                    continue
                label = overlay["labels"][key]
                clear = label.startswith("clears")
                span = fig.hspan(
                    y="y",
                    source=level_source,
                    line_color=CLEAR if clear else FIRE,
                    line_dash="dashed" if clear else "solid",
                    line_width=1.5,
                )
                ranged.append(span)
                item = _legend_item(label, span)
                legend_items[key] = item
                items.append(item)
            fig.y_range = DataRange1d(renderers=ranged, range_padding=0.08)
            markers = fig.scatter(
                "x",
                "y",
                source=marker_sources[f"m{i}"],
                marker=factor_mark("state", ["triangle", "circle"], STATES),
                fill_color=factor_cmap("state", [FIRE, CLEAR], STATES),
                size=10,
                line_color="white",
                line_width=1,
            )
            fig.add_tools(
                HoverTool(
                    renderers=[markers],
                    tooltips=[("", "@x{%F} @state"), ("at", "@y{0,0.[0000]}")],
                    formatters={"@x": "datetime"},
                )
            )
            if not price:
                legend = Legend(
                    items=items,
                    orientation="horizontal",
                    location="top_left",
                    click_policy="hide",
                    label_text_font_size="11px",
                    border_line_alpha=0,
                    spacing=14,
                    padding=0,  # type: ignore[arg-type]  # bokeh's stub types it as a Property
                    margin=2,
                )
                fig.add_layout(legend, "above")
            fig.xaxis.visible = i == len(panels) - 1
            fig.min_border_left = 70
            figures.append(fig)
        grid = gridplot(
            [[f] for f in figures],
            merge_tools=True,
            toolbar_location="right",
            sizing_mode="stretch_width",
        )
        if not _switchable(self.data) or rule.name != self.data.sweeps[0].rule:
            return grid
        chooser = self._chooser(
            rule, panels, span_source, marker_sources, line_sources, legend_items
        )
        return column(chooser, grid, sizing_mode="stretch_width")

    def _chooser(
        self,
        rule: RuleConfig,
        panels: list[_Panel],
        span_source: ColumnDataSource,
        marker_sources: dict[str, ColumnDataSource],
        line_sources: dict[str, ColumnDataSource],
        legend_items: dict[str, LegendItem],
    ) -> LayoutDOM:
        """Return the selects that switch the swept rule's chart between swept values."""
        sweeps, settings = self.data.sweeps, self.settings
        bar_ms = settings.rule_timeframe(rule).ms
        overlays: dict[str, dict[str, Any]] = {}
        for point in self.data.points:
            stats = rule_stats(point.rule, point.alerts, bar_ms=bar_ms, span=self.data.span)
            key = "|".join(s.show(v) for s, v in zip(sweeps, point.values, strict=True))
            overlays[key] = self._overlay(point.rule, point.alerts, stats, panels)
        given = [s.show(configured(settings, s)) for s in sweeps]
        selects = []
        for n, sweep in enumerate(sweeps):
            options: list[str | tuple[Any, str]] = list(
                dict.fromkeys(sweep.show(v) for v in sweep.values)
            )
            chosen = given[n] if given[n] in options else options[0]
            selects.append(
                Select(title=f"{sweep.label} =", options=options, value=chosen, width=260)
            )
        callback = CustomJS(
            args={
                "selects": selects,
                "overlays": json.dumps(overlays, separators=(",", ":"), allow_nan=False),
                "spans": span_source,
                "markers": marker_sources,
                "lines": line_sources,
                "items": legend_items,
            },
            code="""
const key = selects.map((s) => s.value).join("|");
window.moodringOverlays = window.moodringOverlays || JSON.parse(overlays);
const o = window.moodringOverlays[key];
if (o === undefined) { return; }
spans.data = o.spans;
for (const [k, source] of Object.entries(markers)) { source.data = o.markers[k]; }
for (const [k, source] of Object.entries(lines)) { source.data = o.lines[k]; }
for (const [k, item] of Object.entries(items)) { item.label = {value: o.labels[k]}; }
""",
        )
        for select in selects:
            select.js_on_change("value", callback)
        first = "|".join(s.value for s in selects)
        if first in overlays:
            current = overlays[first]
            span_source.data = current["spans"]
            for k, source in marker_sources.items():
                source.data = current["markers"][k]
            for k, source in line_sources.items():
                source.data = current["lines"][k]
            for k, item in legend_items.items():
                item.label = value(current["labels"][k])
        return row(*selects)

    def sweep_chart(self) -> LayoutDOM:
        """Return alerts and flip-flops against the swept value (a heat map for a grid)."""
        sweeps, points = self.data.sweeps, self.data.points
        if len(sweeps) == 2:
            return self._grid_chart()
        first = sweeps[0]
        fig = figure(
            title=Title(
                text=f"{first.rule}: alerts and flip-flops against {first.path}",
                text_font_size="13px",
            ),
            height=300,
            sizing_mode="stretch_width",
            tools="pan,box_zoom,reset,save",
            toolbar_location="right",
        )
        fig.xaxis.axis_label = first.label
        fig.yaxis.axis_label = "alerts over the span"
        groups: dict[str, list[SweepPoint]] = {"": list(points)}
        palette = ["#1565c0", "#6a1b9a", "#00838f", "#558b2f", "#ad1457", "#4e342e", "#283593"]
        items = []
        hover: list[DataRenderer] = []
        for n, (label, group) in enumerate(groups.items()):
            color = palette[n % len(palette)]
            source = ColumnDataSource(
                {
                    "x": [float(p.values[0]) for p in group],
                    "alerts": [p.stats.alerts for p in group],
                    "flips": [p.stats.flip_flops for p in group],
                    "month": [round(p.stats.per_month, 2) for p in group],
                    "label": [first.show(p.values[0]) for p in group],
                }
            )
            line = fig.line("x", "alerts", source=source, color=color, line_width=2)
            dots = fig.scatter("x", "alerts", source=source, color=color, size=7)
            flips = fig.line(
                "x",
                "flips",
                source=source,
                color=SWEEP_FLIPS if len(groups) == 1 else color,
                line_dash="dashed",
                line_width=2,
            )
            flip_dots = fig.scatter(
                "x",
                "flips",
                source=source,
                color=SWEEP_FLIPS if len(groups) == 1 else color,
                marker="square",
                size=6,
            )
            hover += [dots, flip_dots]
            name = f" ({label})" if label else ""
            items.append(_legend_item(f"alerts{name}", line, dots))
            items.append(_legend_item(f"flip-flops{name}", flips, flip_dots))
        given = configured(self.settings, first)
        fig.vspan(x=[float(given)], line_color="#616161", line_dash="dotted", line_width=2)
        fig.add_tools(
            HoverTool(
                renderers=hover,
                tooltips=[
                    (first.path, "@label"),
                    ("alerts", "@alerts (@month a month)"),
                    ("flip-flops", "@flips"),
                ],
            )
        )
        fig.add_layout(
            Legend(items=items, click_policy="hide", label_text_font_size="11px"), "right"
        )
        return fig

    def _grid_chart(self) -> LayoutDOM:
        """Return a grid sweep as a heat map of alerts: a cell per pair of values."""
        first, second = self.data.sweeps
        given = (configured(self.settings, first), configured(self.settings, second))
        xs = list(dict.fromkeys(first.show(v) for v in first.values))
        ys = list(dict.fromkeys(second.show(v) for v in second.values))
        points = self.data.points
        top = max((p.stats.alerts for p in points), default=1) or 1
        source = ColumnDataSource(
            {
                "x": [first.show(p.values[0]) for p in points],
                "y": [second.show(p.values[1]) for p in points],
                "alerts": [p.stats.alerts for p in points],
                "flips": [p.stats.flip_flops for p in points],
                "month": [round(p.stats.per_month, 2) for p in points],
                "text": [
                    f"{p.stats.alerts}" + (f" ({p.stats.flip_flops})" if p.stats.flip_flops else "")
                    for p in points
                ],
                "edge": ["#212121" if p.values == given else "#ffffff" for p in points],
                "ink": ["#ffffff" if p.stats.alerts > 0.55 * top else "#263238" for p in points],
            }
        )
        fig = figure(
            title=Title(
                text=f"{first.rule}: alerts for each {first.path} and {second.path} "
                "(flip-flops in brackets; the configured pair outlined)",
                text_font_size="13px",
            ),
            x_range=FactorRange(factors=xs),
            y_range=FactorRange(factors=ys),
            height=min(640, 90 + 26 * len(ys)),
            sizing_mode="stretch_width",
            tools="save",
            toolbar_location="right",
        )
        fig.xaxis.axis_label = first.label
        fig.yaxis.axis_label = second.label
        cells = fig.rect(
            "x",
            "y",
            width=0.96,
            height=0.92,
            source=source,
            fill_color=linear_cmap("alerts", Blues256[::-1][40:], 0, top),
            line_color="edge",
            line_width=2,
        )
        if len(points) <= MAX_SWITCHABLE:
            fig.text(
                "x",
                "y",
                text="text",
                source=source,
                text_align="center",
                text_baseline="middle",
                text_font_size="10px",
                text_color="ink",
            )
        fig.add_tools(
            HoverTool(
                renderers=[cells],
                tooltips=[
                    (first.path, "@x"),
                    (second.path, "@y"),
                    ("alerts", "@alerts (@month a month)"),
                    ("flip-flops", "@flips"),
                ],
            )
        )
        fig.xaxis.major_label_orientation = 0.8 if len(xs) > 12 else 0
        fig.grid.visible = False
        return fig
