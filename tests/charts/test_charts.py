"""Alert charts: real-data rendering, size limits, validation errors and the render budget."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import math
import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from moodring.charts import render as charts
from moodring.charts.model import ChartError, parse_chart
from moodring.charts.render import render_png, render_with_budget
from moodring.charts.worker import CHART_WORKER, ChartWorker, WorkerError
from tests.support.paths import DATA
from tests.support.wait import until

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
EXAMPLE_PATH = Path("/tmp/moodring_chart_example.png")


def _close(path: Path, date_col: str, close_col: str) -> pd.Series:
    """Read a daily CSV into a close series indexed by date."""
    df = pd.read_csv(path, usecols=[date_col, close_col], parse_dates=[date_col])
    return df.set_index(date_col)[close_col].rename(None).astype(float)


def _nulls(values: np.ndarray | pd.Series) -> list[float | None]:
    """Turn NaN into None, as the chart arrives after a JSON round trip."""
    return [None if math.isnan(v) else float(v) for v in np.asarray(values, dtype=float)]


@pytest.fixture(scope="module")
def real_chart() -> dict[str, Any]:
    """ETH vs the Russell 2000 over the last 120 joined days, with their 30-day correlation."""
    assert DATA.is_dir(), f"real market data expected at {DATA}"
    eth = _close(DATA / "daily/binance_yanniedog/ETHUSDT_1d.csv", "timestamp", "close")
    rut = _close(DATA / "daily/yahoo_alitalbi/RUT.csv", "Date", "Close")
    joined = pd.concat({"ETH": eth, "RUT": rut}, axis=1, join="inner").sort_index()
    rets = np.log(joined).diff()
    corr = rets["ETH"].rolling(30).corr(rets["RUT"])
    last = joined.iloc[-120:]
    corr = corr.iloc[-120:]
    assert len(last) == 120 and corr.notna().all()
    time = last.index.tz_localize("UTC").as_unit("ms").asi8.tolist()
    chart = {
        "title": "ETH decoupling from the Russell 2000",
        "time": time,
        "panels": [
            {
                "label": "ETH vs Russell 2000",
                "series": {"ETH": _nulls(last["ETH"]), "RUT": _nulls(last["RUT"])},
                "normalise": True,
            },
            {
                "label": "eth_rut_corr",
                "series": {"eth_rut_corr": _nulls(corr)},
                "thresholds": [0.3, 0.45],
            },
        ],
        "marker": time[int(np.argmin(corr.to_numpy()))],
    }
    return json.loads(json.dumps(chart, allow_nan=False))  # it must survive the outbox


def _decode(png: bytes) -> np.ndarray:
    """Decode PNG bytes into a pixel array."""
    from matplotlib.image import imread

    return imread(io.BytesIO(png), format="png")


def _check_png(png: bytes) -> np.ndarray:
    """Assert the common properties of a rendered chart and return its pixels."""
    assert png.startswith(PNG_SIGNATURE)
    assert len(png) < charts.MAX_PNG_BYTES
    pixels = _decode(png)
    height, width = pixels.shape[:2]
    assert 800 <= width <= 1200 and 500 <= height <= 900, (width, height)
    assert pixels.var() > 0
    # Not just a speck: a good share of pixels differ from the white background.
    assert (pixels[..., :3] < 0.9).any(axis=-1).mean() > 0.01
    return pixels


def test_real_data_renders(real_chart: dict[str, Any]) -> None:
    png = render_png(real_chart)
    pixels = _check_png(png)
    assert pixels.shape[:2] == (700, 1000)
    EXAMPLE_PATH.write_bytes(png)


def test_importing_does_not_load_matplotlib() -> None:
    code = "import sys, moodring.charts.render; assert 'matplotlib' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)


def test_ten_thousand_points_with_gaps() -> None:
    n = 10_000
    rng = np.random.default_rng(7)
    time = (1_600_000_000_000 + np.arange(n, dtype=np.int64) * 3_600_000).tolist()
    a = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    b = 50 * np.exp(np.cumsum(rng.normal(0, 0.02, n)))
    noise = rng.normal(0, 1, n)
    a[:37] = np.nan  # leading gap: normalise starts at the first value present
    a[3000:3400] = np.nan
    b[rng.choice(n, 500, replace=False)] = np.nan
    noise[7000:7100] = np.nan
    chart = {
        "title": "10k hourly bars with gaps",
        "time": time,
        "panels": [
            {"label": "prices", "series": {"A": a.tolist(), "B": _nulls(b)}, "normalise": True},
            {"label": "noise", "series": {"noise": noise.tolist()}, "thresholds": [-2, 2]},
            {"label": "all missing", "series": {"empty": [None] * n}},
            {"label": "ints", "series": {"i": list(range(n))}},
        ],
        "marker": time[8000],
    }
    _check_png(render_png(chart))


def test_over_size_limit_retries_at_lower_dpi(
    real_chart: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    full = render_png(real_chart)
    monkeypatch.setattr(charts, "MAX_PNG_BYTES", len(full) // 2)
    small = render_png(real_chart)
    assert len(small) < len(full) // 2
    assert _decode(small).shape[1] < 1000
    monkeypatch.setattr(charts, "MAX_PNG_BYTES", 100)
    with pytest.raises(RuntimeError, match="even at dpi"):
        render_png(real_chart)


def _base(n: int = 120) -> dict[str, Any]:
    """A small valid chart with two panels, for mutating into invalid ones."""
    return {
        "title": "t",
        "time": [1_700_000_000_000 + i * 86_400_000 for i in range(n)],
        "panels": [
            {"label": "p", "series": {"ETH": [1.0 + i for i in range(n)]}, "normalise": True},
            {"label": "c", "series": {"eth_rut_corr": [0.5] * n}, "thresholds": [0.3, 0.45]},
        ],
        "marker": 1_700_000_000_000,
    }


def _drop(key: str) -> Callable[[dict[str, Any]], None]:
    return lambda c: c.pop(key)


def _set(*path: Any, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(c: dict[str, Any]) -> None:
        target: Any = c
        for p in path[:-1]:
            target = target[p]
        target[path[-1]] = value

    return mutate


INVALID: list[tuple[Callable[[dict[str, Any]], None], str]] = [
    (_drop("time"), "time: missing"),
    (_drop("panels"), "panels: missing"),
    (_set("time", value="soon"), "time: expected a list"),
    (_set("time", value=[1]), "time: expected at least 2"),
    (_set("time", 2, value="x"), "time[2]: expected integer"),
    (_set("time", 2, value=1.5), "time[2]: expected integer"),
    (_set("time", 3, value=0), "time[3]: not ascending"),
    (_set("title", value=5), "title: expected a string"),
    (_set("colour", value="red"), "colour: unknown key"),
    (_set("marker", value="now"), "marker: expected epoch"),
    (_set("panels", value=[]), "panels: expected 1 to 6 panels, got 0"),
    (_set("panels", value=[_base()["panels"][1]] * 7), "panels: expected 1 to 6 panels, got 7"),
    (_set("panels", 0, value=[1, 2]), "panels[0]: expected an object"),
    (lambda c: c["panels"][0].pop("series"), "panels[0].series: missing"),
    (_set("panels", 0, "series", value={}), "panels[0].series: expected at least one"),
    (_set("panels", 0, "series", value=[1.0] * 120), "panels[0].series: expected an object"),
    (_set("panels", 0, "normalise", value="yes"), "panels[0].normalise: expected true or false"),
    (_set("panels", 0, "normalize", value=True), "panels[0].normalize: unknown key"),
    (_set("panels", 0, "label", value=None), "panels[0].label: expected a string"),
    (
        _set("panels", 1, "series", "eth_rut_corr", value=[0.5] * 119),
        "panels[1].series.eth_rut_corr: expected 120 values, got 119",
    ),
    (
        _set("panels", 1, "series", "eth_rut_corr", 5, value="0.4"),
        "panels[1].series.eth_rut_corr[5]: expected a number or null",
    ),
    (
        _set("panels", 1, "series", "eth_rut_corr", 6, value=True),
        "panels[1].series.eth_rut_corr[6]: expected a number or null",
    ),
    (
        _set("panels", 1, "series", "eth_rut_corr", value=None),
        "panels[1].series.eth_rut_corr: expected a list",
    ),
    (_set("panels", 1, "thresholds", 1, value="high"), "panels[1].thresholds[1]: expected"),
    (_set("panels", 1, "thresholds", value=0.3), "panels[1].thresholds: expected a list"),
    (
        _set("panels", 0, "series", "ETH", value=[None, 0.0] + [1.0] * 118),
        "panels[0].series.ETH: cannot normalise",
    ),
]


@pytest.mark.parametrize(("mutate", "message"), INVALID, ids=[m for _, m in INVALID])
def test_invalid_chart_names_the_key(
    mutate: Callable[[dict[str, Any]], None], message: str
) -> None:
    chart = _base()
    mutate(chart)
    with pytest.raises(ChartError) as info:
        render_png(chart)
    assert str(info.value).startswith(message), str(info.value)


def test_not_a_mapping() -> None:
    with pytest.raises(ChartError, match=r"^chart: expected an object"):
        render_png([1, 2, 3])  # type: ignore[arg-type]


def test_optional_keys_and_single_panel() -> None:
    chart = _base()
    del chart["title"], chart["marker"], chart["panels"][1]
    chart["time"] = np.asarray(chart["time"])  # numpy input is accepted too
    _check_png(render_png(chart))


async def test_render_with_budget_returns_png(real_chart: dict[str, Any]) -> None:
    png = await render_with_budget(real_chart)
    assert png is not None
    _check_png(png)
    assert png == render_png(real_chart)  # the worker draws what the process would


def test_the_daemons_charts_leave_matplotlib_out_of_its_process() -> None:
    # a fresh process: this one has imported matplotlib for the tests above
    code = textwrap.dedent("""
        import asyncio, sys
        from moodring.charts.render import render_with_budget
        from moodring.charts.worker import CHART_WORKER
        n = 50
        chart = {"time": [1_700_000_000_000 + i * 60_000 for i in range(n)],
                 "panels": [{"label": "p", "series": {"x": [float(i) for i in range(n)]}}]}
        pngs = [asyncio.run(render_with_budget(chart)) for _ in range(3)]
        assert all(png and png.startswith(b"\\x89PNG") for png in pngs), pngs
        assert CHART_WORKER.started == 1, CHART_WORKER.started
        print(sorted(m for m in sys.modules if m.split(".")[0] == "matplotlib"))
    """)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip() == "[]", out.stdout


async def test_render_over_budget_kills_the_worker(
    real_chart: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    await render_with_budget(real_chart)  # a worker is up and idle
    pid = CHART_WORKER.pid
    assert pid is not None
    started = CHART_WORKER.started
    with caplog.at_level(logging.WARNING, logger=charts.__name__):
        # no render takes a millisecond
        assert await render_with_budget(real_chart, budget_s=0.001) is None
    assert "took over 0.001 s" in caplog.text
    png = await render_with_budget(real_chart)  # the next chart is drawn all the same
    assert png is not None and png.startswith(PNG_SIGNATURE)
    # given up before the worker took it (it lives on), or killed with it and replaced
    assert CHART_WORKER.started == started + (CHART_WORKER.pid != pid)


async def test_abandoning_a_chart_the_worker_has_kills_it() -> None:
    worker = ChartWorker()
    await asyncio.to_thread(worker.start, threading.Event())
    slow = parse_chart(_base(300_000)).model_dump_json().encode()  # seconds to draw
    cancel = threading.Event()
    rendering = asyncio.ensure_future(asyncio.to_thread(worker.render, slow, cancel))
    await until(lambda: worker.busy, timeout=60)
    pid = worker.pid
    assert pid is not None
    worker.abandon(cancel)
    with pytest.raises(WorkerError, match="killed by SIGKILL"):
        await rendering
    await _gone(pid)
    small = parse_chart(_base()).model_dump_json().encode()
    kind, png = await asyncio.to_thread(worker.render, small, threading.Event())
    assert kind == "png" and png.startswith(PNG_SIGNATURE) and worker.started == 2
    worker.close()


async def test_a_worker_that_died_while_idle_is_replaced(real_chart: dict[str, Any]) -> None:
    await render_with_budget(real_chart)
    pid = CHART_WORKER.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    await _gone(pid)
    png = await render_with_budget(real_chart)  # not lost: sent again to a fresh worker
    assert png is not None and png.startswith(PNG_SIGNATURE)
    assert CHART_WORKER.pid not in (None, pid)


async def test_an_idle_worker_exits() -> None:
    worker = ChartWorker(idle_s=0.2)
    request = parse_chart(_base()).model_dump_json().encode()
    kind, png = await asyncio.to_thread(worker.render, request, threading.Event())
    assert kind == "png" and png.startswith(PNG_SIGNATURE)
    pid = worker.pid
    assert pid is not None
    await _gone(pid)
    assert worker.pid is None
    kind, _ = await asyncio.to_thread(worker.render, request, threading.Event())
    assert kind == "png" and worker.started == 2
    worker.close()


def _slow_starts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    """Make every new Python process (a chart worker too) sleep first: a loaded machine."""
    (tmp_path / "sitecustomize.py").write_text(f"import time\ntime.sleep({seconds})\n")
    paths = (str(tmp_path), os.environ.get("PYTHONPATH", ""))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in paths if p))
    CHART_WORKER.close()  # the next chart starts a worker with this environment


async def test_a_slow_worker_start_does_not_count_against_the_render_budget(
    real_chart: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _slow_starts(tmp_path, monkeypatch, 9.0)
    try:
        png = await render_with_budget(real_chart, budget_s=8.0)
        assert png is not None and png.startswith(PNG_SIGNATURE)
    finally:
        CHART_WORKER.close()


async def test_a_worker_that_does_not_start_in_time_is_killed(
    real_chart: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    _slow_starts(tmp_path, monkeypatch, 30.0)
    monkeypatch.setattr(charts, "STARTUP_S", 0.5)
    with caplog.at_level(logging.WARNING, logger=charts.__name__):
        assert await render_with_budget(real_chart) is None
    assert "starting the chart worker took over 0.5 s; sending without it" in caplog.text
    await until(lambda: CHART_WORKER.pid is None, timeout=30)  # killed, not left sleeping
    monkeypatch.undo()
    png = await render_with_budget(real_chart)  # the next chart starts a worker in time
    assert png is not None and png.startswith(PNG_SIGNATURE)


async def test_render_with_budget_swallows_errors(caplog: pytest.LogCaptureFixture) -> None:
    chart = _base()
    chart["time"] = "soon"
    with caplog.at_level(logging.WARNING, logger=charts.__name__):
        assert await render_with_budget(chart) is None
    assert "time: expected a list" in caplog.text

    # valid data matplotlib cannot draw: dates past the year 9999
    chart = _base()
    chart["time"] = [10**17 + i * 60_000 for i in range(len(chart["time"]))]
    chart["marker"] = None
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=charts.__name__):
        assert await render_with_budget(chart) is None
    assert "rendering failed" in caplog.text and "OverflowError" in caplog.text
    assert await render_with_budget(_base()) is not None  # the worker lives on


async def _gone(pid: int, timeout: float = 30.0) -> None:
    """Wait until process ``pid`` no longer exists (or is a zombie)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return
        if state == "Z":
            return
        assert asyncio.get_running_loop().time() < deadline, f"process {pid} still runs"
        await asyncio.sleep(0.05)
