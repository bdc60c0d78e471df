"""Chart PNGs: an alert's stacked panels, the digest's 2x2 grid, small enough for Telegram."""

# matplotlib is imported only inside the renderers: the daemon draws its charts in a worker
# process (``render_with_budget``, see charts/worker.py) and never imports it; the CLI's
# one-off charts draw in-process. Rendering uses Figure + FigureCanvasAgg directly, never
# pyplot, so renders share no global figure state.

from __future__ import annotations

import asyncio
import io
import logging
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from moodring.charts.model import AlertChart, ChartError, DigestChart, parse_chart
from moodring.charts.worker import CHART_WORKER, STARTUP_S

if TYPE_CHECKING:
    from matplotlib.figure import Figure

log = logging.getLogger(__name__)

MAX_PNG_BYTES = 300_000
FIGSIZE_IN = (10.0, 7.0)
# Height added per panel beyond four (a composite's chart has one per metric).
PANEL_IN = 1.6
# Tried in order until the PNG fits; at dpi 32 (320x224 px) even raw RGBA is under 300 KB.
DPI_LADDER = (100, 80, 64, 48, 32)


def render_png(data: Mapping[str, Any]) -> bytes:
    """Render chart data (an alert's, or ``kind: digest``) to PNG bytes; ChartError if bad."""
    chart = parse_chart(data)
    if isinstance(chart, DigestChart):
        return render_digest(chart)
    return render_alert(chart)


def warm_up() -> None:
    """Render a tiny chart, so a worker's first real chart does not pay for fonts and formatters."""
    day = 86_400_000
    render_png(
        {
            "title": "warm-up",
            "time": [0, day, 2 * day],
            "panels": [
                {"label": "a", "series": {"a": [1.0, 2.0, 1.5]}, "normalise": True},
                {"label": "b", "series": {"b": [0.1, 0.3, 0.2]}, "thresholds": [0.2]},
            ],
            "marker": day,
        }
    )


def render_alert(chart: AlertChart) -> bytes:
    """Render an alert's chart: panels stacked over its times, thresholds, the alert marker."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
    from matplotlib.figure import Figure

    utc = "UTC"
    n = len(chart.panels)
    size = (FIGSIZE_IN[0], FIGSIZE_IN[1] + PANEL_IN * max(0, n - 4))
    fig = Figure(figsize=size, dpi=DPI_LADDER[0], layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(n, 1, sharex=True, squeeze=False, height_ratios=[1.6] + [1.0] * (n - 1))[
        :, 0
    ]
    x = np.asarray(chart.time, dtype=np.int64).astype("datetime64[ms]")
    x_lim = (x[0], x[-1])
    marker = None if chart.marker is None else np.datetime64(chart.marker, "ms")

    for i, (ax, panel) in enumerate(zip(axes, chart.panels, strict=True)):
        for name, values in chart.arrays(panel).items():
            ax.plot(x, values, label=name, linewidth=1.6)
        if panel.normalise:
            ax.axhline(100.0, color="0.6", linewidth=0.8, zorder=0)
            ax.set_ylabel("start = 100", fontsize=10)
        for j, level in enumerate(panel.thresholds):
            label = f"thresholds {', '.join(f'{t:g}' for t in panel.thresholds)}"
            ax.axhline(
                level,
                color="tab:red",
                linestyle="--",
                linewidth=1.1,
                label=label if j == 0 else None,
            )
        if marker is not None:
            ax.axvline(
                marker,
                color="black",
                linestyle=":",
                linewidth=1.4,
                label="alert" if i == 0 else None,
            )
        if panel.label:
            ax.set_title(panel.label, loc="left", fontsize=12)
        ax.grid(True, alpha=0.3)
        ax.tick_params(labelsize=10)
        # A fixed location: loc="best" is slow on long series.
        ax.legend(loc="upper left", fontsize=10, framealpha=0.8)

    bottom = axes[-1]
    locator = AutoDateLocator(tz=utc, minticks=4, maxticks=8)
    bottom.xaxis.set_major_locator(locator)
    bottom.xaxis.set_major_formatter(ConciseDateFormatter(locator, tz=utc))
    bottom.set_xlim(*x_lim)
    bottom.set_xlabel("UTC", fontsize=10)
    if chart.title:
        fig.suptitle(chart.title, fontsize=15, fontweight="bold")
    return save_png(fig)


def render_digest(chart: DigestChart) -> bytes:
    """Render the digest's chart: up to four panels in a 2x2 grid over [start, end]."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10.0, 7.0), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 2, sharex=True, squeeze=False).ravel()
    x_lim = (np.datetime64(chart.start, "ms"), np.datetime64(chart.end, "ms"))
    for ax, panel in zip(axes, chart.panels, strict=False):
        times = np.asarray(panel.time, dtype=np.int64).astype("datetime64[ms]")
        drawn = False
        for name, values in panel.series.items():
            y = np.asarray(values, dtype=np.float64)
            if np.isfinite(y).any():
                ax.plot(times, y, label=name, linewidth=1.5)
                drawn = True
        if panel.band:
            ax.axhspan(panel.band[0], panel.band[1], color="tab:green", alpha=0.12, linewidth=0)
        for level in panel.lines or ():
            ax.axhline(level, color="0.45", linestyle="--", linewidth=0.9)
        if panel.limits:
            ax.set_ylim(*panel.limits)
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
        elif len(panel.series) > 1:
            ax.legend(loc="upper left", fontsize=9, framealpha=0.8)
        ax.set_title(panel.label, loc="left", fontsize=11)
        ax.grid(True, alpha=0.3)
        ax.tick_params(labelsize=9)
    for ax in axes[len(chart.panels) :]:
        ax.set_axis_off()
    locator = AutoDateLocator(tz="UTC", minticks=3, maxticks=6)
    for ax in axes[2:]:
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(ConciseDateFormatter(locator, tz="UTC"))
    axes[0].set_xlim(*x_lim)
    if chart.title:
        fig.suptitle(chart.title, fontsize=14, fontweight="bold")
    return save_png(fig)


def save_png(fig: Figure) -> bytes:
    """Save a figure as PNG at the largest DPI of the ladder that keeps it under the limit."""
    size = 0
    for dpi in DPI_LADDER:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
        png = buf.getvalue()
        size = len(png)
        if size < MAX_PNG_BYTES:
            return png
        log.info("chart PNG is %d bytes at dpi %d; retrying smaller", size, dpi)
    raise RuntimeError(
        f"chart PNG is {size} bytes even at dpi {DPI_LADDER[-1]} (limit {MAX_PNG_BYTES})"
    )


async def render_with_budget(chart: Mapping[str, Any], budget_s: float = 10.0) -> bytes | None:
    """Render in the chart worker process; None (and a log line) on timeout or error.

    The chart is checked here, rendered there; a render over ``budget_s`` kills the worker.
    Starting a worker is bounded by ``STARTUP_S`` instead.
    """
    title = chart.get("title", "") if isinstance(chart, Mapping) else ""
    try:
        request = parse_chart(chart).model_dump_json().encode()
    except ChartError as exc:
        log.warning("chart %r: invalid chart data (%s); sending without it", title, exc)
        return None
    cancel = threading.Event()
    # a worker's start (Python, matplotlib, maybe a first font cache) is bounded apart
    step, bound_s = "starting the chart worker", STARTUP_S
    try:
        async with asyncio.timeout(bound_s):
            await asyncio.to_thread(CHART_WORKER.start, cancel)
        step, bound_s = "rendering", budget_s
        async with asyncio.timeout(bound_s):
            kind, body = await asyncio.to_thread(CHART_WORKER.render, request, cancel)
    except TimeoutError:
        CHART_WORKER.abandon(cancel)
        log.warning("chart %r: %s took over %g s; sending without it", title, step, bound_s)
        return None
    except asyncio.CancelledError:
        CHART_WORKER.abandon(cancel)
        raise
    except Exception as exc:
        log.error("chart %r: rendering failed (%s); sending without it", title, exc)
        return None
    if kind == "png":
        return body
    if kind == "chart":
        log.warning("chart %r: invalid chart data (%s); sending without it", title, body.decode())
    else:
        log.error("chart %r: rendering failed; sending without it\n%s", title, body.decode())
    return None
