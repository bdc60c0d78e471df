"""The engine on live input: real trades in, bars and metric values out."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from moodring.backtest.runner import FeedHistory, run_batch
from moodring.configfile import load_settings
from moodring.engine import Engine
from moodring.market.frame import BarFrame
from moodring.pipeline import Pipeline
from tests.support.captures import capture_trades


def config(tmp_path: Path, timeframe: str = "1m") -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "feeds": {"eth": {"symbol": "ETH/USDT"}, "btc": {"symbol": "BTC/USDT"}},
                "series": {"ethbtc": {"ratio": ["eth", "btc"]}},
                "metrics": {
                    "corr": {
                        "type": "correlation",
                        "a": "eth",
                        "b": "btc",
                        "timeframe": timeframe,
                        "window": 3,
                    },
                    "mfi": {"type": "mfi", "series": "eth", "timeframe": timeframe, "period": 2},
                    "brk": {
                        "type": "breakout",
                        "series": "ethbtc",
                        "timeframe": timeframe,
                        "lookback": 2,
                    },
                    "z": {"type": "zscore", "series": "btc", "timeframe": timeframe, "window": 2},
                },
            }
        )
    )
    return path


def test_trades_to_metrics_equal_the_backtest_of_the_same_bars(tmp_path: Path) -> None:
    """Live trades through the engine give the values a backtest gives on their bars."""
    settings = load_settings(config(tmp_path, "1m"))
    engine = Engine(settings)
    closed: dict[str, dict[int, float]] = {name: {} for name in settings.metrics}
    engine.subscribe(lambda node, t: closed[node.name].__setitem__(t, node.values[0]))
    capture = capture_trades()
    for feed, t, price, amount, trade_id in capture:
        engine.on_trade(feed, t, price, amount, trade_id)
    engine.advance(capture[-1][1] + 60_000)  # the clock closes the last minute

    frame = pd.DataFrame(capture, columns=["feed", "t", "p", "q", "id"])
    frame["bar"] = frame["t"] // 60_000 * 60_000
    history = {}
    for feed, group in frame.groupby("feed"):
        bars = group.groupby("bar").agg(
            open=("p", "first"),
            high=("p", "max"),
            low=("p", "min"),
            close=("p", "last"),
            volume=("q", "sum"),
        )
        full = bars.reindex(range(bars.index[0], bars.index[-1] + 1, 60_000))
        assert not full["close"].isna().any(), "the capture has a trade every minute"
        history[feed] = FeedHistory(
            BarFrame(
                full.index.to_numpy(np.int64),
                *(full[c].to_numpy() for c in ("open", "high", "low", "close", "volume")),
            ),
            60_000,
        )
    table = run_batch(settings, history, list(settings.metrics))
    for name in settings.metrics:
        expected = {
            int(t): v
            for t, v in zip(table.time, table.columns[name], strict=True)
            if not math.isnan(v)
        }
        got = {t: v for t, v in closed[name].items() if not math.isnan(v)}
        assert got.keys() == expected.keys() and len(got) >= 2, name
        for t, v in got.items():
            assert math.isclose(v, expected[t], rel_tol=1e-9, abs_tol=1e-9), (name, t)


def test_peek_values_become_the_closed_values(tmp_path: Path) -> None:
    """Right before a bar closes, its forming values are what the closed bar gives."""
    engine = Engine(load_settings(config(tmp_path, "1m")))
    capture = capture_trades()
    compared = 0
    for i, (feed, t, price, amount, trade_id) in enumerate(capture):
        engine.on_trade(feed, t, price, amount, trade_id)
        forming = dict(engine.peek_values())
        following = capture[i + 1][1] if i + 1 < len(capture) else None
        if following is not None and following // 60_000 != t // 60_000:
            engine.advance(following // 60_000 * 60_000)  # the minute ends before the next trade
            for name, value in engine.values().items():
                if not math.isnan(value):
                    assert math.isclose(value, forming[name], rel_tol=1e-9, abs_tol=1e-9)
                    compared += 1
    assert compared >= 8


def test_only_metrics_of_the_ticked_feed_are_recomputed(tmp_path: Path) -> None:
    engine = Engine(load_settings(config(tmp_path, "1m")))
    capture = capture_trades()
    for feed, t, price, amount, trade_id in capture[:2000]:
        engine.on_trade(feed, t, price, amount, trade_id)
    engine.peek_values()
    assert not any(node.dirty for node in engine.metrics.values())
    _, t, _, amount, _ = capture[2000]
    engine.on_trade("btc", t, 99_999.0, amount, "x")
    assert {n.name for n in engine.metrics.values() if n.dirty} == {"corr", "brk", "z"}
    engine.peek_values()
    engine.on_trade("eth", t, 3_000.0, amount, "y")
    assert {n.name for n in engine.metrics.values() if n.dirty} == {"corr", "mfi", "brk"}


def test_default_engine_keeps_bounded_history() -> None:
    engine = Pipeline(load_settings())
    capacities = {
        (name, "1d"): engine.source(name, "1d").bars.time.capacity
        for name in ("eth", "btc", "rut", "ethbtc")
    }
    # the largest window a metric needs (divergence 2 x lookback 20), or what a chart
    # shows (2 x 120 bars for the charted eth_rut_corr rule)
    assert capacities[("eth", "1d")] == 240
    assert capacities[("rut", "1d")] == 240
    # read only through the ratio, but warm-up fills the ratio from the legs' windows
    # (the 90-day ETH/BTC change of the digest)
    assert capacities[("btc", "1d")] == 91
    assert capacities[("ethbtc", "1d")] == 91


def test_published_values_carry_over_to_the_engine_a_reload_builds() -> None:
    settings = load_settings()
    old, new = Engine(settings), Engine(settings)
    for engine in (old, new):
        engine.track(["altseason_index"], 10)
    day = 86_400_000
    for i, value in enumerate((31.0, 33.0, 35.0)):
        old.set_external("altseason_index", i * day, value, closed=True)
    old.set_external("altseason_index", 3 * day, 36.5, closed=False)
    assert "altseason_index" not in new.values()
    new.adopt_externals(old.externals())
    assert new.values()["altseason_index"] == 35.0
    assert new.peek_values()["altseason_index"] == 36.5
    assert new.history("altseason_index") == [(0, 31.0), (day, 33.0), (2 * day, 35.0)]


def test_builders_keep_trade_ids_only_for_feeds_that_do_not_drop_repeats(tmp_path: Path) -> None:
    # the five exchanges moodring knows number their trades and the feed drops a repeat;
    # another ccxt exchange's feed may not, and its builders drop a repeated id themselves
    path = config(tmp_path)
    raw = yaml.safe_load(path.read_text())
    raw["feeds"]["btc"]["exchange"] = "okx"
    path.write_text(yaml.safe_dump(raw))
    engine = Engine(load_settings(path))
    t = 1_753_747_200_000
    for feed in ("eth", "btc"):
        for _ in range(2):
            engine.on_trade(feed, t, 10.0, 1.0, "7")
    assert [b.duplicates for b in engine.builders("eth")] == [0]
    assert [b.duplicates for b in engine.builders("btc")] == [1]
