"""Real daily bars (ETH, BTC, the Russell 2000) replayed into a pipeline as the daemon does."""

from __future__ import annotations

import functools
from collections.abc import Iterable

import numpy as np

from moodring.backtest.csvfile import load_csv
from moodring.configfile import load_settings
from moodring.market.bar import Bar
from moodring.market.frame import BarFrame
from moodring.pipeline import Pipeline
from moodring.rules.alert import Alert
from moodring.rules.book import RuleStatus
from moodring.service import snapshot
from moodring.service.pipeline_sink import PipelineSink
from moodring.service.snapshot import attach
from moodring.settings import Settings
from tests.support.captures import capture_trades
from tests.support.paths import DATA

DAY = 86_400_000
TRADE_DAY = 1_723_075_200_000  # 2024-08-08: the day of the real Binance trade capture
START = TRADE_DAY - 600 * DAY
REAL = {
    "eth": DATA / "daily/binance_yanniedog/ETHUSDT_1d.csv",
    "btc": DATA / "daily/binance_yanniedog/BTCUSDT_1d.csv",
    "rut": DATA / "daily/yahoo_alitalbi/RUT.csv",
}
# recursive and slow metrics: exact only when the replay sees every bar the original saw
EXTRA_METRICS = {
    "eth_ema": {"type": "ema", "series": "eth", "timeframe": "1d", "period": 20},
    "btc_cross": {
        "type": "ma_cross",
        "series": "btc",
        "timeframe": "1d",
        "fast": 5,
        "slow": 30,
        "kind": "ema",
    },
}


@functools.cache
def daily() -> dict[str, BarFrame]:
    return {feed: load_csv(path).bars for feed, path in REAL.items()}


@functools.cache
def day_trades() -> list[tuple[str, int, float, float, int]]:
    """The capture's trades of TRADE_DAY (23:54 to midnight), both feeds in time order."""
    return [t for t in capture_trades() if t[1] < TRADE_DAY + DAY]


def settings_with(*rules: dict, drop: Iterable[str] = (), **metrics: dict) -> Settings:
    """The shipped config plus EXTRA_METRICS, ``metrics`` and ``rules``."""
    base = load_settings()
    kept = {**base.metrics, **EXTRA_METRICS, **metrics}
    return Settings(
        feeds=base.feeds,
        series=base.series,
        altseason=base.altseason,
        metrics={k: v for k, v in kept.items() if k not in drop},
        rules=(*(r for r in base.rules if r.name not in drop), *rules),
    )


def bars_between(start: int, end: int, feeds: Iterable[str] = REAL) -> list[tuple[str, Bar]]:
    """Real daily bars opening in [start, end), in time order, feeds in config order."""
    out = []
    for rank, feed in enumerate(feeds):
        f = daily()[feed]
        lo, hi = np.searchsorted(f.time, [start, end])
        for i in range(lo, hi):
            row = (int(f.time[i]), *(float(getattr(f, c)[i]) for c in snapshot._COLUMNS))
            out.append((row[0], rank, feed, Bar(*row)))
    return [(feed, bar) for _, _, feed, bar in sorted(out)]


def started(
    settings: Settings, keep_bars: int | None = snapshot.KEEP_BARS
) -> tuple[Pipeline, list[Alert]]:
    """An engine warmed up at START as the daemon does: each feed's ring-full of bars, quietly.

    Its journal covers its whole life here (exact round trips); ``keep_bars=None`` gives
    the daemon's, as long as each feed's warm-up.
    """
    engine = Pipeline(settings)
    attach(engine, keep_bars=keep_bars)
    alerts: list[Alert] = []
    engine.rules.subscribe(alerts.append)
    sink = PipelineSink(engine)
    for feed in settings.feeds:
        need = engine.builders(feed)[0].bars.time.capacity
        bars = [bar for f, bar in bars_between(0, START) if f == feed][-need:]
        sink.history(feed, bars, length_ms=DAY)
    return engine, alerts


def live(engine: Pipeline, start: int, end: int, feeds: Iterable[str] = REAL) -> None:
    """Close the real daily bars of [start, end) one by one, alerts on."""
    for feed, bar in bars_between(start, end, feeds):
        engine.on_candle(feed, bar.time, bar, closed=True, length_ms=DAY)


def status(engine: Pipeline, name: str) -> RuleStatus:
    """Return where rule ``name`` of the engine stands."""
    return engine.rules.status(name)
