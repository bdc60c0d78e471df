"""The digest's chart: up to four panels in a 2x2 grid, rendered from ``kind: digest`` data."""

# Like delivery/charts.py: matplotlib only inside the renderer, Figure + Agg, never pyplot.

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from moodring.delivery.charts import MAX_PANELS, ChartError, save_png

_TOP_KEYS = frozenset({"kind", "title", "start", "end", "panels"})
_PANEL_KEYS = frozenset({"label", "time", "series", "lines", "band", "limits"})


def render_digest(chart: Mapping[str, Any]) -> bytes:
    """Render digest chart data to a PNG under the size limit; ChartError if it is malformed."""
    title, start, end, panels = _validate(chart)

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10.0, 7.0), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 2, sharex=True, squeeze=False).ravel()
    x_lim = (np.datetime64(start, "ms"), np.datetime64(end, "ms"))
    for ax, panel in zip(axes, panels, strict=False):
        times = np.asarray(panel["time"], dtype=np.int64).astype("datetime64[ms]")
        drawn = False
        for name, values in panel["series"].items():
            y = np.array([math.nan if v is None else float(v) for v in values], dtype=np.float64)
            if np.isfinite(y).any():
                ax.plot(times, y, label=name, linewidth=1.5)
                drawn = True
        band = panel.get("band")
        if band:
            ax.axhspan(band[0], band[1], color="tab:green", alpha=0.12, linewidth=0)
        for level in panel.get("lines") or ():
            ax.axhline(level, color="0.45", linestyle="--", linewidth=0.9)
        limits = panel.get("limits")
        if limits:
            ax.set_ylim(*limits)
        if not drawn:
            ax.text(
                0.5,
                0.5,
                "no data",
                transform=ax.transAxes,
                ha="center",
                va="center",
                fontsize=14,
                color="0.4",
            )
        elif len(panel["series"]) > 1:
            ax.legend(loc="upper left", fontsize=9, framealpha=0.8)
        ax.set_title(panel.get("label", ""), loc="left", fontsize=11)
        ax.grid(True, alpha=0.3)
        ax.tick_params(labelsize=9)
    for ax in axes[len(panels) :]:
        ax.set_axis_off()
    locator = AutoDateLocator(tz="UTC", minticks=3, maxticks=6)
    for ax in axes[2:]:
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(ConciseDateFormatter(locator, tz="UTC"))
    axes[0].set_xlim(*x_lim)
    if title:
        fig.suptitle(title, fontsize=14, fontweight="bold")
    return save_png(fig)


def _validate(chart: Mapping[str, Any]) -> tuple[str, int, int, list[Mapping[str, Any]]]:
    """Check the digest chart's shape; raise ChartError naming the first bad key."""
    for key in chart:
        if key not in _TOP_KEYS:
            raise ChartError(f"{key}: unknown key in a digest chart")
    title = chart.get("title", "")
    if not isinstance(title, str):
        raise ChartError("title: expected a string")
    start, end = chart.get("start"), chart.get("end")
    if not (_integral(start) and _integral(end) and start < end):
        raise ChartError("start, end: expected epoch milliseconds, start before end")
    panels = chart.get("panels")
    if not isinstance(panels, Sequence) or not 1 <= len(panels) <= MAX_PANELS:
        raise ChartError(f"panels: expected 1 to {MAX_PANELS} panels")
    for i, panel in enumerate(panels):
        path = f"panels[{i}]"
        if not isinstance(panel, Mapping):
            raise ChartError(f"{path}: expected an object")
        for key in panel:
            if key not in _PANEL_KEYS:
                raise ChartError(f"{path}.{key}: unknown key")
        times = panel.get("time")
        if not isinstance(times, Sequence) or not all(_integral(t) for t in times):
            raise ChartError(f"{path}.time: expected a list of epoch milliseconds")
        series = panel.get("series")
        if not isinstance(series, Mapping):
            raise ChartError(f"{path}.series: expected an object")
        for name, values in series.items():
            if not isinstance(values, Sequence) or len(values) != len(times):
                raise ChartError(f"{path}.series.{name}: expected {len(times)} values")
            if not all(v is None or _number(v) for v in values):
                raise ChartError(f"{path}.series.{name}: expected numbers or nulls")
        for key, size in (("band", 2), ("limits", 2)):
            value = panel.get(key)
            if value is not None and not (
                isinstance(value, Sequence) and len(value) == size and all(map(_number, value))
            ):
                raise ChartError(f"{path}.{key}: expected [low, high] or null")
        lines = panel.get("lines") or []
        if not isinstance(lines, Sequence) or not all(map(_number, lines)):
            raise ChartError(f"{path}.lines: expected a list of numbers")
    return title, int(start), int(end), list(panels)


def _number(value: object) -> bool:
    """Tell whether ``value`` is a finite real number (bools excluded)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _integral(value: object) -> bool:
    """Tell whether ``value`` is a whole number (epoch milliseconds)."""
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and float(value).is_integer()
    )
