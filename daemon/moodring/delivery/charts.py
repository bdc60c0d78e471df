"""Alert charts: validate an alert's plot data and render it to a small PNG for Telegram."""

# matplotlib is imported only inside render_png so the daemon pays for it (~40 MB) only when a
# chart is actually drawn. Rendering uses Figure + FigureCanvasAgg directly, never pyplot, so
# concurrent renders in worker threads share no global figure state.

from __future__ import annotations

import asyncio
import io
import logging
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from moodring.settings import MAX_CHART_PANELS

if TYPE_CHECKING:
    from matplotlib.figure import Figure

log = logging.getLogger(__name__)

MAX_PNG_BYTES = 300_000
MAX_PANELS = MAX_CHART_PANELS
FIGSIZE_IN = (10.0, 7.0)
# Height added per panel beyond four (a composite's chart has one per metric).
PANEL_IN = 1.6
# Tried in order until the PNG fits; at dpi 32 (320x224 px) even raw RGBA is under 300 KB.
DPI_LADDER = (100, 80, 64, 48, 32)

_TOP_KEYS = frozenset({"title", "time", "panels", "marker"})
_PANEL_KEYS = frozenset({"label", "series", "normalise", "thresholds"})


class ChartError(ValueError):
    """Invalid chart data; the message starts with the path of the offending key."""


@dataclass(frozen=True, slots=True)
class _Panel:
    """One validated panel: float arrays (NaN for gaps), already normalised if asked."""

    label: str
    series: dict[str, np.ndarray]
    normalised: bool
    thresholds: tuple[float, ...]


@dataclass(frozen=True, slots=True)
class _Chart:
    """Validated chart data, ready to draw."""

    title: str
    time_ms: np.ndarray
    panels: tuple[_Panel, ...]
    marker_ms: int | None


def _is_number(value: object) -> bool:
    """Tell whether ``value`` is a real number (bools excluded)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_)


def _as_list(value: object, path: str) -> Sequence[Any]:
    """Return ``value`` if it is a list-like of values, else raise ChartError for ``path``."""
    if isinstance(value, np.ndarray):
        if value.ndim != 1:
            raise ChartError(f"{path}: expected a 1-D array, got {value.ndim}-D")
        return value.tolist()
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise ChartError(f"{path}: expected a list, got {type(value).__name__}")
    return value


def _check_keys(data: Mapping[str, Any], allowed: frozenset[str], prefix: str) -> None:
    """Reject keys outside ``allowed`` (catches typos such as ``normalize``)."""
    for key in data:
        if key not in allowed:
            raise ChartError(
                f"{prefix}{key}: unknown key (expected one of {', '.join(sorted(allowed))})"
            )


def _parse_time(raw: object) -> np.ndarray:
    """Validate bar open times: at least two, integral epoch ms, strictly ascending."""
    values = _as_list(raw, "time")
    if len(values) < 2:
        raise ChartError(f"time: expected at least 2 values, got {len(values)}")
    out = np.empty(len(values), dtype=np.int64)
    for i, v in enumerate(values):
        if not _is_number(v) or not math.isfinite(v) or float(v) != int(v):
            raise ChartError(f"time[{i}]: expected integer epoch milliseconds, got {v!r}")
        out[i] = int(v)
        if i and out[i] <= out[i - 1]:
            raise ChartError(f"time[{i}]: not ascending ({out[i]} after {out[i - 1]})")
    return out


def _parse_values(raw: object, n: int, path: str) -> np.ndarray:
    """Validate one series: ``n`` numbers or nulls; null/NaN/inf become NaN (a gap)."""
    values = _as_list(raw, path)
    if len(values) != n:
        raise ChartError(f"{path}: expected {n} values, got {len(values)}")
    out = np.empty(n, dtype=np.float64)
    for i, v in enumerate(values):
        if v is None:
            out[i] = math.nan
        elif _is_number(v):
            f = float(v)
            out[i] = f if math.isfinite(f) else math.nan
        else:
            raise ChartError(f"{path}[{i}]: expected a number or null, got {v!r}")
    return out


def _normalise(values: np.ndarray, path: str) -> np.ndarray:
    """Rescale to 100 at the first non-missing value (all-missing stays all-missing)."""
    present = np.flatnonzero(~np.isnan(values))
    if present.size == 0:
        return values
    first = values[present[0]]
    if first == 0:
        raise ChartError(f"{path}: cannot normalise, first value (index {present[0]}) is 0")
    return values / first * 100.0


def _parse_panel(raw: object, n: int, index: int) -> _Panel:
    """Validate one panel against ``n`` time points."""
    path = f"panels[{index}]"
    if not isinstance(raw, Mapping):
        raise ChartError(f"{path}: expected an object, got {type(raw).__name__}")
    _check_keys(raw, _PANEL_KEYS, f"{path}.")
    label = raw.get("label", "")
    if not isinstance(label, str):
        raise ChartError(f"{path}.label: expected a string, got {type(label).__name__}")
    normalise = raw.get("normalise", False)
    if not isinstance(normalise, bool):
        raise ChartError(f"{path}.normalise: expected true or false, got {normalise!r}")
    if "series" not in raw:
        raise ChartError(f"{path}.series: missing")
    raw_series = raw["series"]
    if not isinstance(raw_series, Mapping):
        raise ChartError(f"{path}.series: expected an object, got {type(raw_series).__name__}")
    if not raw_series:
        raise ChartError(f"{path}.series: expected at least one series")
    series: dict[str, np.ndarray] = {}
    for name, values in raw_series.items():
        key = f"{path}.series.{name}"
        if not isinstance(name, str) or not name:
            raise ChartError(f"{key}: series names must be non-empty strings")
        arr = _parse_values(values, n, key)
        series[name] = _normalise(arr, key) if normalise else arr
    thresholds: list[float] = []
    for i, t in enumerate(_as_list(raw.get("thresholds", []), f"{path}.thresholds")):
        if not _is_number(t) or not math.isfinite(t):
            raise ChartError(f"{path}.thresholds[{i}]: expected a finite number, got {t!r}")
        thresholds.append(float(t))
    return _Panel(label, series, normalise, tuple(thresholds))


def _validate(chart: object) -> _Chart:
    """Check chart data against the schema; raise ChartError naming the first bad key."""
    if not isinstance(chart, Mapping):
        raise ChartError(f"chart: expected an object, got {type(chart).__name__}")
    _check_keys(chart, _TOP_KEYS, "")
    title = chart.get("title", "")
    if not isinstance(title, str):
        raise ChartError(f"title: expected a string, got {type(title).__name__}")
    if "time" not in chart:
        raise ChartError("time: missing")
    time_ms = _parse_time(chart["time"])
    if "panels" not in chart:
        raise ChartError("panels: missing")
    raw_panels = _as_list(chart["panels"], "panels")
    if not 1 <= len(raw_panels) <= MAX_PANELS:
        raise ChartError(f"panels: expected 1 to {MAX_PANELS} panels, got {len(raw_panels)}")
    panels = tuple(_parse_panel(p, len(time_ms), i) for i, p in enumerate(raw_panels))
    marker = chart.get("marker")
    if marker is not None and (not _is_number(marker) or not math.isfinite(marker)):
        raise ChartError(f"marker: expected epoch milliseconds or null, got {marker!r}")
    return _Chart(title, time_ms, panels, None if marker is None else int(marker))


def render_png(chart: Mapping[str, Any]) -> bytes:
    """Render chart data to PNG bytes (matplotlib, Agg backend, no pyplot global state)."""
    if isinstance(chart, Mapping) and chart.get("kind") == "digest":
        from moodring.digest.chart import render_digest

        return render_digest(chart)
    data = _validate(chart)

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
    from matplotlib.figure import Figure

    utc = "UTC"
    n = len(data.panels)
    size = (FIGSIZE_IN[0], FIGSIZE_IN[1] + PANEL_IN * max(0, n - 4))
    fig = Figure(figsize=size, dpi=DPI_LADDER[0], layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(n, 1, sharex=True, squeeze=False, height_ratios=[1.6] + [1.0] * (n - 1))[
        :, 0
    ]
    x = data.time_ms.astype("datetime64[ms]")
    x_lim = (x[0], x[-1])
    marker = None if data.marker_ms is None else np.datetime64(data.marker_ms, "ms")

    for i, (ax, panel) in enumerate(zip(axes, data.panels, strict=True)):
        for name, values in panel.series.items():
            ax.plot(x, values, label=name, linewidth=1.6)
        if panel.normalised:
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
    if data.title:
        fig.suptitle(data.title, fontsize=15, fontweight="bold")
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
    """Render in a worker thread; None (and a log line) on timeout or error."""
    title = chart.get("title", "") if isinstance(chart, Mapping) else ""
    try:
        # The thread cannot be killed: on timeout it finishes in the background, result dropped.
        return await asyncio.wait_for(asyncio.to_thread(render_png, chart), timeout=budget_s)
    except TimeoutError:
        log.warning("chart %r: rendering took over %.1f s; sending without it", title, budget_s)
    except ChartError as exc:
        log.warning("chart %r: invalid chart data (%s); sending without it", title, exc)
    except Exception:
        log.exception("chart %r: rendering failed; sending without it", title)
    return None
