"""Benchmark the engine on real data: per tick (with rules), recompute baseline, MFI, backtest.

Run: python benchmarks/engine.py   (needs the test extras: ta-lib and pandas)
The last line printed is one JSON object with the headline figures.
"""

from __future__ import annotations

import gzip
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd  # type: ignore[import-untyped]
import talib
from talib import stream

from moodring.backtest.csvfile import load_csv
from moodring.backtest.runner import FeedHistory, merged_bars, run_batch, run_streaming
from moodring.configfile import load_settings
from moodring.delivery.dispatcher import Dispatcher
from moodring.delivery.outbox import Outbox
from moodring.market.bar import Bar
from moodring.market.frame import BarFrame
from moodring.metrics.breakout import BreakoutConfig
from moodring.metrics.correlation import CorrelationConfig
from moodring.metrics.mfi import MFI, MFIConfig
from moodring.pipeline import Pipeline
from moodring.rules.alert import Alert
from moodring.settings import Settings

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
DAY = 86_400_000


def load(path: Path) -> BarFrame:
    """Load a real history file with moodring's own loader."""
    return load_csv(path).bars


def capture_trades() -> list[tuple[str, int, float, float, int]]:
    """Return the ETH and BTC trades of the Binance capture, merged in time order."""
    trades = []
    for feed, name in (("eth", "ethusdt"), ("btc", "btcusdt")):
        path = DATA / f"ws/hftbacktest_binance_spot/{name}_20240808.gz"
        with gzip.open(path, "rt") as lines:
            for line in lines:
                if "@trade" not in line:
                    continue
                d = json.loads(line.split(" ", 1)[1])["data"]
                trades.append((feed, d["T"], float(d["p"]), float(d["q"]), d["t"]))
    trades.sort(key=lambda trade: trade[1])
    return trades


def warm_engine(settings: Settings, until_ms: int) -> Pipeline:
    """Return an engine fed with daily history of eth, btc and rut up to ``until_ms``."""
    engine = Pipeline(settings)
    files = {
        "eth": DATA / "daily/binance_yanniedog/ETHUSDT_1d.csv",
        "btc": DATA / "daily/binance_yanniedog/BTCUSDT_1d.csv",
        "rut": DATA / "daily/yahoo_alitalbi/RUT.csv",
    }
    history = {feed: FeedHistory.of(load(path)).until(until_ms) for feed, path in files.items()}
    for feed, t, bar in merged_bars(history):
        engine.on_candle(feed, t, bar, closed=True, length_ms=DAY)
    return engine


def bench_ticks(settings: Settings, trades: list, days: int = 20) -> dict[str, list[float]]:
    """Replay the capture's trades ``days`` times (a day apart) through engine + forming values.

    Each replayed day opens a Russell 2000 daily bar too, as in US hours, so the pair
    metrics peek with a joined forming bar: the expensive case.
    """
    day0 = trades[0][1] - trades[0][1] % DAY
    engine = warm_engine(settings, day0 - (days + 1) * DAY)
    rut_last = engine.source("rut", "1d").bars.last()
    assert rut_last is not None
    costs: dict[str, list[float]] = {"eth": [], "btc": []}
    clock = time.perf_counter_ns
    on_trade, peek = engine.on_trade, engine.peek_values
    for d in range(days, 0, -1):
        shift = -d * DAY
        day = day0 + shift
        p = rut_last.close
        engine.on_candle("rut", day, Bar(day, p, p * 1.01, p * 0.99, p * 1.002, 1e9))
        for feed, t, price, amount, trade_id in trades:
            start = clock()
            on_trade(feed, t + shift, price, amount, (trade_id, d))
            peek()
            costs[feed].append((clock() - start) / 1000)
    return costs


def bench_enqueue(trades: list, replays: int = 60) -> list[float]:
    """Return µs from the trade that closes a bar to its alert committed in the outbox.

    A 1-minute MFI with a rule that re-fires on every closed bar; the capture's 6 minutes
    of real trades are replayed ``replays`` times back to back (no empty minutes, so each
    closing tick makes one alert).
    """
    settings = Settings(
        feeds={"eth": {"symbol": "ETH/USDT"}, "btc": {"symbol": "BTC/USDT"}},
        metrics={"mfi": {"type": "mfi", "series": "eth", "timeframe": "1m", "period": 3}},
        rules=[
            {
                "name": "every-bar",
                "metric": "mfi",
                "condition": {"above": -1},
                "repeat_interval": "1m",
                "message": "MFI {{ value | round(1) }} ETH {{ feeds.eth }}",
            }
        ],
        notify={"urls": ["json://127.0.0.1:9/unused"]},
    )
    engine = Pipeline(settings)
    latencies: list[float] = []
    started = [0]
    with tempfile.TemporaryDirectory() as state:
        outbox = Outbox(Path(state) / "outbox.sqlite")
        dispatcher = Dispatcher(outbox, settings.notify)

        def enqueue(alert: Alert) -> None:
            dispatcher.enqueue(alert)
            latencies.append((time.perf_counter_ns() - started[0]) / 1000)

        engine.rules.subscribe(enqueue)
        eth = [t for t in trades if t[0] == "eth"]
        span = (eth[-1][1] // 60_000 - eth[0][1] // 60_000 + 1) * 60_000
        for k in range(replays):
            shift = k * span
            for feed, t, price, amount, trade_id in eth:
                started[0] = time.perf_counter_ns()
                engine.on_trade(feed, t + shift, price, amount, (trade_id, k))
        outbox.close()
    return latencies[5:]  # the first bars only warm the MFI up


def bench_recompute(settings: Settings, trades: list, ticks: int = 300) -> list[float]:
    """The typical bot: per tick, a DataFrame of the last 1000 bars and full recomputes."""
    day0 = trades[0][1] - trades[0][1] % DAY
    files = {
        "eth": DATA / "daily/binance_yanniedog/ETHUSDT_1d.csv",
        "btc": DATA / "daily/binance_yanniedog/BTCUSDT_1d.csv",
        "rut": DATA / "daily/yahoo_alitalbi/RUT.csv",
    }
    frames = {f: load(p).between(None, day0 + DAY) for f, p in files.items()}

    def tail(frame: BarFrame) -> pd.DataFrame:
        f = frame.slice(len(frame) - 1000, len(frame))
        return pd.DataFrame(
            {"open": f.open, "high": f.high, "low": f.low, "close": f.close, "volume": f.volume},
            index=pd.to_datetime(f.time, unit="ms", utc=True),
        )

    eth, btc, rut = tail(frames["eth"]), tail(frames["btc"]), tail(frames["rut"])
    corr, mfi, breakout = (
        settings.metrics[k] for k in ("eth_rut_corr", "eth_mfi", "ethbtc_breakout")
    )
    assert isinstance(corr, CorrelationConfig) and isinstance(mfi, MFIConfig)
    assert isinstance(breakout, BreakoutConfig)
    corr_w, mfi_p, look = corr.window, mfi.period, breakout.lookback
    costs = []
    last = {"eth": eth["close"].iloc[-1], "btc": btc["close"].iloc[-1]}
    for feed, _, price, _, _ in trades[:ticks]:
        start = time.perf_counter_ns()
        last[feed] = price
        df = eth.copy()
        df.iloc[-1, df.columns.get_loc("close")] = last["eth"]
        b = btc["close"].copy()
        b.iloc[-1] = last["btc"]
        mfi = talib.MFI(
            df["high"].to_numpy(),
            df["low"].to_numpy(),
            df["close"].to_numpy(),
            df["volume"].to_numpy(),
            mfi_p,
        )[-1]
        joined = pd.concat({"a": df["close"], "b": rut["close"]}, axis=1, join="inner")
        r = np.log(joined).diff()
        corr = r["a"].rolling(corr_w).corr(r["b"]).iloc[-1]
        ratio = df["close"] / b
        top = ratio.rolling(look).max().shift(1).iloc[-1]
        bottom = ratio.rolling(look).min().shift(1).iloc[-1]
        _ = (mfi, corr, ratio.iloc[-1] > top, ratio.iloc[-1] < bottom)
        costs.append((time.perf_counter_ns() - start) / 1000)
    return costs


def bench_mfi() -> tuple[float, float]:
    """Return µs per closed-bar update: moodring's MFI and TA-Lib's C stream, same real bars."""
    bars = load(DATA / "daily/binance_yanniedog/ETHUSDT_1d.csv")
    h, lo, c, v = (x.tolist() for x in (bars.high, bars.low, bars.close, bars.volume))
    rows = list(zip(h[15:], lo[15:], c[15:], v[15:], strict=True))

    def ours() -> float:
        m = MFI(14)
        for row in zip(h[:15], lo[:15], c[:15], v[:15], strict=True):
            m.update(*row)
        update = m.update
        start = time.perf_counter_ns()
        for hi, low, close, vol in rows:
            update(hi, low, close, vol)
        return (time.perf_counter_ns() - start) / 1000 / len(rows)

    def theirs() -> float:
        first = [np.array(x[:15]) for x in (h, lo, c, v)]
        s = stream.MFI(first[0], first[1], first[2], first[3], timeperiod=14)
        update = s.update
        start = time.perf_counter_ns()
        for hi, low, close, vol in rows:
            update(hi, low, close, vol)
        return (time.perf_counter_ns() - start) / 1000 / len(rows)

    return min(ours() for _ in range(30)), min(theirs() for _ in range(30))


def bench_backtest(settings: Settings, target: int = 1_000_000) -> tuple[int, float, float]:
    """Return (bars, bars/s batch, bars/s streaming) for the default metrics on minute bars.

    No minute Russell 2000 history exists, so ``rut`` replays Kraken BTC minutes as a
    stand-in; the 5 weeks of Kraken data (with its gaps) are tiled in time to reach
    ``target`` bars in all.
    """
    minute = settings.model_copy(
        update={
            "metrics": {
                name: config.model_copy(update={"timeframe": "1m"})
                for name, config in settings.metrics.items()
            }
        }
    )
    eth = load(DATA / "intraday/kraken_1m_cnettlev/ETHUSD.csv")
    btc = load(DATA / "intraday/kraken_1m_cnettlev/BTCUSD.csv")
    reps = -(-target // (3 * len(eth)))

    def tiled(frame: BarFrame) -> BarFrame:
        span = int(frame.time[-1] - frame.time[0]) + 60_000
        return BarFrame(
            np.concatenate([frame.time + k * span for k in range(reps)]),
            *(
                np.tile(col, reps)
                for col in (frame.open, frame.high, frame.low, frame.close, frame.volume)
            ),
        )

    history = {
        "eth": FeedHistory(tiled(eth), 60_000),
        "btc": FeedHistory(tiled(btc), 60_000),
        "rut": FeedHistory(tiled(btc), 60_000),
    }
    bars = sum(len(h.bars) for h in history.values())
    names = list(minute.metrics)
    batch = []
    for _ in range(3):
        start = time.perf_counter()
        run_batch(minute, history, names)
        batch.append(time.perf_counter() - start)
    small = {f: FeedHistory(h.bars.slice(0, 100_000), 60_000) for f, h in history.items()}
    start = time.perf_counter()
    run_streaming(minute, small, names)
    streaming_rate = 300_000 / (time.perf_counter() - start)
    return bars, bars / min(batch), streaming_rate


def main() -> int:
    """Run every benchmark, print a table and the JSON summary line."""
    settings = load_settings()
    trades = capture_trades()
    by_feed = bench_ticks(settings, trades)
    tick_costs = by_feed["eth"] + by_feed["btc"]
    ticks = len(tick_costs)
    base_costs = bench_recompute(settings, trades)
    ours_mfi, talib_mfi = bench_mfi()
    bars, bars_per_s, streaming_per_s = bench_backtest(settings)
    enqueue = bench_enqueue(trades)

    us_tick = statistics.median(tick_costs)
    base_tick = statistics.median(base_costs)
    rows = [
        ("per tick: on_trade + all forming values, median", f"{us_tick:.2f} µs", f"{ticks} ticks"),
        ("per tick: p99", f"{np.percentile(tick_costs, 99):.2f} µs", ""),
        (
            "per ETH tick (every metric recomputed), median",
            f"{statistics.median(by_feed['eth']):.2f} µs",
            f"{len(by_feed['eth'])} ticks",
        ),
        (
            "per BTC tick (the ETH/BTC metrics), median",
            f"{statistics.median(by_feed['btc']):.2f} µs",
            f"{len(by_feed['btc'])} ticks",
        ),
        (
            "baseline: pandas/TA-Lib recompute per tick, median",
            f"{base_tick:.0f} µs",
            f"{len(base_costs)} ticks",
        ),
        ("speedup vs recompute", f"{base_tick / us_tick:.0f}x", ""),
        ("MFI update: moodring", f"{ours_mfi:.3f} µs", "daily ETH bars"),
        ("MFI update: talib.stream.MFI", f"{talib_mfi:.3f} µs", ""),
        ("backtest, vectorised path", f"{bars_per_s:,.0f} bars/s", f"{bars:,} minute bars"),
        ("backtest, streaming path", f"{streaming_per_s:,.0f} bars/s", "300,000 minute bars"),
        (
            "tick to alert in outbox (SQLite WAL), median",
            f"{statistics.median(enqueue):.0f} µs",
            f"{len(enqueue)} alerts",
        ),
        ("tick to alert in outbox, p99", f"{np.percentile(enqueue, 99):.0f} µs", ""),
    ]
    width = max(len(r[0]) for r in rows)
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:>18}  {note}")
    summary = {
        "us_per_tick": round(us_tick, 3),
        "speedup_vs_recompute": round(base_tick / us_tick, 1),
        "mfi_update_vs_talib_stream": round(ours_mfi / talib_mfi, 3),
        "backtest_bars_per_s": round(bars_per_s),
        "alert_enqueue_p99_us": round(float(np.percentile(enqueue, 99)), 1),
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
