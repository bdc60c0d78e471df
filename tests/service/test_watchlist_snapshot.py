"""Snapshots keep the states of expanded rules; a changed member list restores the others."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from moodring.backtest.csvfile import load_csv
from moodring.configfile import load_settings
from moodring.market.bar import Bar
from moodring.pipeline import Pipeline
from moodring.service.snapshot import capture, load, restore, save
from tests.support.watchlists import ALTS, write

# no MOODRING_* variable, user or system config around
pytestmark = pytest.mark.usefixtures("isolated")


def daily_bars(feed: str, path: Path) -> list[tuple[str, Bar]]:
    bars = load_csv(path).bars
    return [
        (feed, Bar(int(t), o, h, low, c, v))
        for t, o, h, low, c, v in zip(
            bars.time.tolist(),
            bars.open.tolist(),
            bars.high.tolist(),
            bars.low.tolist(),
            bars.close.tolist(),
            bars.volume.tolist(),
            strict=True,
        )
    ]


def test_snapshots_keep_the_expanded_rules_states(tmp_path: Path) -> None:
    text = """\
watchlists:
  alts: [ADA/USDT, XRP/USDT, LINK/USDT]
feeds:
  "{base}": {for_each: alts, symbol: "{symbol}"}
metrics:
  "{base}_mfi": {for_each: alts, type: mfi, series: "{base}", period: 14}
rules:
  - {name: "{base}-hot", for_each: alts, metric: "{base}_mfi", condition: {above: 60}}
"""
    settings = load_settings(write(tmp_path, text))
    engine = Pipeline(settings)
    fired: list[str] = []
    engine.rules.subscribe(lambda alert: fired.append(alert.rule))
    bars = [
        b for f in ("ada", "xrp", "link") for b in daily_bars(f, ALTS / f"{f.upper()}USDT_1d.csv")
    ]
    end = 1_735_689_600_000  # 2025-01-01
    for feed, bar in sorted((b for b in bars if b[1].time < end), key=lambda b: b[1].time):
        engine.on_candle(feed, bar.time, bar, closed=True, length_ms=86_400_000)
    assert {"ada-hot", "xrp-hot", "link-hot"} <= set(fired)
    states = {r.config.name: r.status for r in engine.rules.rules}
    save(tmp_path / "snapshot.npz", capture(engine))

    state = load(tmp_path / "snapshot.npz", settings, max_age_s=math.inf)
    assert state is not None and set(state.rules) == {"ada-hot", "xrp-hot", "link-hot"}
    again = Pipeline(settings)
    report = restore(again, state)
    assert set(report.rules.values()) == {"restored"}
    assert {r.config.name: r.status for r in again.rules.rules} == states

    # a reload without XRP and with DOT: the others keep their states, DOT starts afresh
    fewer = write(tmp_path, text.replace("XRP/USDT", "DOT/USDT"), "fewer.yaml")
    changed = Pipeline(load_settings(fewer))
    report = restore(changed, capture(engine))
    assert report.rules == {
        "ada-hot": "restored",
        "dot-hot": "fresh: not in the snapshot",
        "link-hot": "restored",
    }
    assert {r.config.name: r.status for r in changed.rules.rules if r.config.name != "dot-hot"} == {
        name: states[name] for name in ("ada-hot", "link-hot")
    }
