"""``moodring demo``: moodring's story on bundled real data, offline and without keys.

First the shipped config's engine replays the bundled daily history (ETH and BTC from
Binance, the Russell 2000 from Yahoo, mid-2024 to January 2026) in seconds: its alerts
(ETH decoupling from the Russell 2000, ETH/BTC breakouts, MFI bands ...) are printed once
each, in words, with their charts saved. Then the daemon runs live on a fake Binance
replaying real trades, with minute bars and short windows so alerts come quickly, until
Ctrl-C (or ``--for``); the last line says what was shown and where the charts are.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from moodring.backtest.csvfile import load_csv
from moodring.backtest.runner import FeedHistory, run_streaming, runnable_metrics
from moodring.configfile import load_settings
from moodring.rules.alert import Alert
from moodring.settings import DEFAULT_CONFIG, MAX_CHART_PANELS, Settings
from moodring.statedir import scratch_dir
from moodring.times import iso_time

SAMPLES = DEFAULT_CONFIG.parent / "samples"
LIVE_CONFIG = DEFAULT_CONFIG.with_name("demo.yaml")
LIVE_CAPTURES = (SAMPLES / "ethusdt_trades.gz", SAMPLES / "btcusdt_trades.gz")
# The loggers of the fake exchange, the web servers and ccxt: for --verbose only.
NOISY = ("websockets", "aiohttp", "asyncio", "ccxt", "moodring.testing")
INDENT = " " * 12
# The story shows the alerts from here on; the bars before it fill the windows (90 days).
STORY_FROM = "2025-06-01"


@dataclass
class Shown:
    """What the demo printed: the alerts, and the folder their charts went to."""

    charts: Path
    out: TextIO
    alerts: int = 0
    saved: int = 0
    names: set[str] = field(default_factory=set)

    async def show(self, alert: Alert, when: str) -> None:
        """Save the alert's chart, then print the alert as a person reads it."""
        self.alerts += 1
        chart = await self._save_chart(alert, when)
        mark = "resolved" if alert.state == "resolved" else alert.severity
        lines = [f"{when}  {mark.upper():8}  {alert.title}", f"{INDENT}{alert.message}"]
        if chart is not None:
            lines.append(f"{INDENT}chart: {chart}")
        print("\n".join(lines), file=self.out, flush=True)

    async def _save_chart(self, alert: Alert, when: str) -> Path | None:
        from moodring.charts.render import render_with_budget

        if alert.chart is None:
            return None
        png = await render_with_budget(alert.chart)
        if not png:
            return None
        stem = re.sub(r"[^0-9A-Za-z]+", "-", f"{when}-{alert.rule}-{alert.state}").strip("-")
        name, n = stem, 1
        while name in self.names:
            n += 1
            name = f"{stem}-{n}"
        self.names.add(name)
        path = self.charts / f"{name}.png"
        path.write_bytes(png)
        self.saved += 1
        return path

    def summary(self, how: str) -> str:
        """Return the last line: how it ended, what was shown, where the charts are."""
        return (
            f"moodring demo {how}: {self.alerts} alert(s) shown, {self.saved} chart(s) saved "
            f"in {self.charts}"
        )


def charted(settings: Settings) -> Settings:
    """Return ``settings`` with a chart on every rule a chart can show."""
    rules = tuple(
        rule.model_copy(update={"chart": len(rule.columns()) <= MAX_CHART_PANELS})
        for rule in settings.rules
    )
    return settings.model_copy(update={"rules": rules})


def story_settings() -> Settings:
    """Return the shipped config without what needs the network (altseason, digest)."""
    base = load_settings(DEFAULT_CONFIG)
    offline = set(base.altseason_columns())
    rules = tuple(r for r in base.rules if not offline & set(r.columns()))
    return charted(base.model_copy(update={"rules": rules, "altseason": None, "digest": None}))


async def replay_story(shown: Shown) -> None:
    """Replay the bundled daily history through the shipped config's engine; show its alerts."""
    settings = story_settings()
    history = {
        feed: FeedHistory.of(load_csv(SAMPLES / f"{feed}_1d.csv").bars) for feed in settings.feeds
    }
    first = min(int(h.bars.time[0]) for h in history.values())
    last = max(int(h.bars.time[-1]) for h in history.values())
    print(
        f"1. The story so far: the built-in config replays real daily bars of ETH, BTC and the "
        f"Russell 2000 ({iso_time(first)[:10]} to {iso_time(last)[:10]}) through the "
        f"daemon's engine; the alerts from {STORY_FROM} on:",
        file=shown.out,
        flush=True,
    )
    alerts: list[Alert] = []
    metrics, _ = runnable_metrics(settings, set(history))
    await asyncio.to_thread(run_streaming, settings, history, metrics, alerts)
    for alert in alerts:
        when = iso_time(alert.time)[:10]
        if when >= STORY_FROM:
            await shown.show(alert, when)


@contextlib.contextmanager
def quiet(verbose: bool) -> Iterator[None]:
    """Keep moodring's log to warnings and the fakes' and servers' silent, unless ``verbose``."""
    if verbose:
        yield
        return
    levels = {"moodring": logging.WARNING, **dict.fromkeys(NOISY, logging.CRITICAL)}
    saved = {name: logging.getLogger(name).level for name in levels}
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
    try:
        yield
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


async def run_live(
    shown: Shown, *, speed: float, duration: float | None, record: Path | None
) -> str:
    """Run the daemon on a fake Binance replaying real trades; return how it ended."""
    from moodring.service.daemon import Daemon
    from moodring.testing.fake_exchange import FakeExchange

    base = charted(load_settings(LIVE_CONFIG))
    print(
        f"\n2. Live: the daemon on a fake Binance replaying real ETH and BTC trades of "
        f"2024-08-08 at {speed:g}x with minute bars and 3-minute windows; the 6-minute capture "
        "plays in a loop, so its moves come again (Ctrl-C stops).",
        file=shown.out,
        flush=True,
    )
    async with FakeExchange(list(LIVE_CAPTURES), speed=speed, loop=True) as fake:
        feeds = {
            name: feed.model_copy(update={"ws_url": fake.ws_url, "rest_url": fake.rest_url})
            for name, feed in base.feeds.items()
        }
        with scratch_dir() as state:
            settings = base.model_copy(update={"feeds": feeds, "state_dir": state})
            daemon = Daemon(settings, record=record)
            printing: list[asyncio.Task[None]] = []
            order = asyncio.Lock()

            async def show(alert: Alert) -> None:
                async with order:
                    await shown.show(alert, iso_time(alert.time)[:16].replace("T", " "))

            def on_alert(alert: Any) -> None:
                printing.append(asyncio.create_task(show(alert)))

            daemon.engine.rules.subscribe(on_alert)
            how = "stopped by Ctrl-C"

            def time_up() -> None:
                nonlocal how
                how = f"ran its {duration:g} s"
                daemon.stop()

            async def pause_when_stopping() -> None:
                await daemon.stopping.wait()
                fake.pause()  # the fake shares this loop: its replay would slow the feeds' stop

            if duration:
                asyncio.get_running_loop().call_later(duration, time_up)
            pausing = asyncio.create_task(pause_when_stopping())
            try:
                await daemon.run()
            finally:
                pausing.cancel()
            await asyncio.gather(*printing)
            return how


async def run_demo(
    *,
    speed: float = 10.0,
    duration: float | None = None,
    record: Path | None = None,
    charts: Path | None = None,
    verbose: bool = False,
    out: TextIO | None = None,
) -> int:
    """Tell the story on the bundled history, then run live until Ctrl-C or ``duration``."""
    out = out if out is not None else sys.stdout  # the stdout of the call, not of the import
    folder = charts if charts is not None else Path(tempfile.mkdtemp(prefix="moodring-demo-"))
    folder.mkdir(parents=True, exist_ok=True)
    shown = Shown(folder, out)
    how = "stopped by Ctrl-C"
    with quiet(verbose):
        try:
            await replay_story(shown)
            how = await run_live(shown, speed=speed, duration=duration, record=record)
        finally:
            print(shown.summary(how), file=out, flush=True)
    return 0
