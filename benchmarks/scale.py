"""Benchmark the daemon watching a whole exchange: a watchlist of N markets on one process.

Run: python benchmarks/scale.py [--n 10,100,400] [--window 120] [--streams ohlcv,trades]
The fake exchange (in this process) serves N markets: ETH/USDT and N-1 markets replaying
its real captured trades under other names (``relabel``), BTC/USDT from its own capture,
at real speed, with Binance's REST request-weight limit enforced (HTTP 429, Retry-After).
On kline streams each market gets one update every 2 s (as Binance sends them); on trade
streams the relabelled markets carry a thinned share of the trades so that the aggregate
rate stays near ``--trade-rate``. The daemon (``moodring run``, its own process) watches
a watchlist of the N markets, each with MFI, correlation against BTC and a ratio breakout
on 1m bars and a breakout rule; every 10th member also has a rule that fires at every
bar close (the latency probes; ``--all-alert``: every member).

Per N and stream kind: ``cpu_share`` (daemon CPU time / wall time over the steady window),
``rss_vs_bare_ccxt`` (daemon RSS / a bare ``import ccxt.pro`` process's), ``warmup_s``
(process start to every feed warmed up) with the 429s the fake answered, ``ticks`` and
``per_tick_us`` (daemon CPU per market update in the window), and
``tick_to_alert_p50/p99_ms``: from the frame that closes a member's bar being written to
the daemon's connection (a closed kline; on trade streams the member's first trade of the
next minute) to the daemon logging that member's alert as queued in its outbox.
``fake_send_lag_p99_ms`` is how long the fake took to write those frames once made (its
own work, left out of the latency). On trade streams the bars closed by the first trade
of a later pass of the looped capture are counted apart (``across_loop_*``): the fake's
clock jumps a minute there, as no exchange's does, and the daemon waits for a second frame
of each stream to confirm a jump past ``FUTURE_MS`` (by design), up to a thinned stream's
gap between trades. ``--logs`` keeps the daemon's log and each alert's times. The last
line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from moodring.testing.fake_exchange import FakeExchange
from moodring.testing.fake_exchange.core import Bar, Market

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CAPTURES = [
    DATA / "ws/hftbacktest_binance_spot/ethusdt_20240808.gz",
    DATA / "ws/hftbacktest_binance_spot/btcusdt_20240808.gz",
]
# Binance's REST request weight per minute (exchangeInfo's REQUEST_WEIGHT limit)
WEIGHT_LIMIT = 6000
# seconds of capture served as history before the daemon starts: 1m bars to warm up from
LEAD = 180.0
# metric windows short enough to be valid from the history the capture gives
PERIOD = 3
ONE_MINUTE = {"timeframe": "1m"}
_LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d)\s")
_ALERT = re.compile(r"alert (\S+)-tick firing at (\S+) queued")
_WARMED = re.compile(r": warmed up \d+ \S+ bars")


def member_names(n: int) -> list[str]:
    """Return the watchlist's Binance symbols: ETHUSDT and N-1 relabelled copies of it."""
    return ["ETHUSDT", *(f"X{i:03d}USDT" for i in range(1, n))]


def config(
    n: int, stream: str, ws_url: str, rest_url: str, state: Path, probe_every: int = 10
) -> dict[str, Any]:
    """Return the daemon's config: one watchlist of N members, three metrics and a rule each."""
    urls = {"ws_url": ws_url, "rest_url": rest_url, "stream": stream}
    members = [f"{name[:-4]}/USDT" for name in member_names(n)]
    return {
        "state_dir": str(state),
        "http": {"port": 0},
        # every ``probe_every``-th member alerts at every bar close: the latency probes, their
        # bars closing amid every other member's (all the members alerting at once is
        # ``--all-alert``, the worst case)
        "watchlists": {"alts": members, "probes": members[::probe_every]},
        "feeds": {
            "btc": {"symbol": "BTC/USDT", **urls},
            "{base}": {"for_each": "alts", "symbol": "{symbol}", **urls},
        },
        "series": {"{base}btc": {"for_each": "alts", "ratio": ["{base}", "btc"]}},
        "metrics": {
            "{base}_mfi": {
                "for_each": "alts",
                "type": "mfi",
                "series": "{base}",
                **ONE_MINUTE,
                "period": PERIOD,
            },
            "{base}_btc_corr": {
                "for_each": "alts",
                "type": "correlation",
                **ONE_MINUTE,
                "a": "{base}",
                "b": "btc",
                "window": PERIOD,
            },
            "{base}btc_breakout": {
                "for_each": "alts",
                "type": "breakout",
                **ONE_MINUTE,
                "series": "{base}btc",
                "lookback": PERIOD,
            },
        },
        "rules": [
            {
                "name": "{base}-tick",
                "for_each": "probes",
                "metric": "{base}_mfi",
                "condition": {"above": -1},
                "repeat_interval": "1m",
            },
            {
                "name": "{base}-breakout",
                "for_each": "alts",
                "metric": "{base}btc_breakout",
                "condition": {"equals": 1},
            },
        ],
    }


@dataclass
class Sent:
    """The market updates the fake sent, and when the frames closing a member's bar went out.

    ``queued``: when the fake made the frame; ``left``: when it was written to the daemon's
    connection (what the daemon can read from then on). Keys are (market id, bar open ms).
    """

    ticks: int = 0
    queued: dict[tuple[str, int], float] = field(default_factory=dict)
    left: dict[tuple[str, int], float] = field(default_factory=dict)
    first: set[tuple[str, int]] = field(default_factory=set)
    first_out: set[tuple[str, int]] = field(default_factory=set)
    # bars closed by the first trade of a later replay pass (see ``run_case``)
    across_loop: set[tuple[str, int]] = field(default_factory=set)
    pass_of: dict[str, int] = field(default_factory=dict)  # each market's latest trade's pass


def instrument(fake: FakeExchange, sent: Sent) -> None:
    """Count the updates the fake sends; time the frames that close a bar, made and sent."""
    protocol = fake.protocol
    emit_candle, emit_trade = protocol.emit_candle, protocol.emit_trade

    def timed_candle(
        market: Market, interval: str, bar: Bar, closed: bool, trade: dict[str, Any]
    ) -> bool:
        done = emit_candle(market, interval, bar, closed, trade)
        if done:
            sent.ticks += 1
            if closed:
                sent.queued.setdefault((market.id, bar.t), time.time())
        return done

    def timed_trade(market: Market, trade: dict[str, Any], raw: str | None) -> bool:
        done = emit_trade(market, trade, raw)
        if done:
            sent.ticks += 1
            minute = trade["T"] - trade["T"] % 60_000
            key = (market.id, minute)
            if key not in sent.first:  # a minute's first trade closes the bar before it
                sent.first.add(key)
                sent.queued[market.id, minute - 60_000] = time.time()
                if sent.pass_of.get(market.id, fake.passes) != fake.passes:
                    sent.across_loop.add((market.id, minute - 60_000))
            sent.pass_of[market.id] = fake.passes
        return done

    def on_sent(frame: str | bytes) -> None:
        if isinstance(frame, bytes) or ('"x":true' not in frame and '"e":"trade"' not in frame):
            return
        at = time.time()
        message = json.loads(frame)
        data = message.get("data", message)
        if data.get("e") == "kline":
            sent.left.setdefault((data["k"]["s"], data["k"]["t"]), at)
        elif data.get("e") == "trade":
            minute = data["T"] - data["T"] % 60_000
            if (data["s"], minute) not in sent.first_out:
                sent.first_out.add((data["s"], minute))
                sent.left[data["s"], minute - 60_000] = at

    protocol.emit_candle = timed_candle  # type: ignore[method-assign]
    protocol.emit_trade = timed_trade  # type: ignore[method-assign]
    fake.on_sent = on_sent


def percentile(values: list[float], q: float) -> float:
    """Return the ``q``-th percentile of ``values`` rounded to 0.1 (NaN when empty)."""
    return round(float(np.percentile(values, q)), 1) if values else math.nan


def cpu_seconds(pid: int) -> float:
    """Return a process's user + system CPU seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int, key: str = "VmRSS") -> float:
    """Return a process's resident set (``VmRSS``) or its peak (``VmHWM``) in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return math.nan


def bare_ccxt_rss_mb() -> float:
    """Return the RSS in MB of a process that only imports ccxt.pro."""
    code = "import ccxt.pro, sys; sys.stdout.write(open('/proc/self/status').read())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    for line in out.stdout.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return math.nan


def log_time(line: str) -> float | None:
    """Return the epoch time of a daemon log line (None if it has no timestamp)."""
    found = _LOG_TIME.match(line)
    return datetime.fromisoformat(found.group(1)).timestamp() if found else None


async def run_case(
    n: int,
    stream: str,
    window: float,
    trade_rate: float,
    logs: Path | None = None,
    probe_every: int = 10,
) -> dict[str, Any]:
    """Run the daemon on N markets of one stream kind; return its figures."""
    names = member_names(n)
    thin = 1
    if stream == "trades":
        eth_rate = 6106 / 345  # the ETH capture's trades per second
        thin = max(1, math.ceil(n * eth_rate / trade_rate))
    fake = FakeExchange(
        CAPTURES,
        speed=1.0,
        loop=True,
        autostart=False,
        relabel={name: "ETHUSDT" for name in names[1:]},
        relabel_thin=thin,
        kline_every=2.0,
        weight_limit=WEIGHT_LIMIT,
        lead=LEAD,
    )
    sent = Sent()
    instrument(fake, sent)
    await fake.start()
    await asyncio.sleep(1.0)  # the lead replays
    feeds = n + 1
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "moodring.yaml"
        state = Path(tmp) / "state"
        settings = config(n, stream, fake.ws_url, fake.rest_url, state, probe_every)
        path.write_text(yaml.safe_dump(settings))
        started = time.time()
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            "import sys; from moodring.cli import main; sys.exit(main())",
            "run",
            "-c",
            str(path),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        warmed: list[float] = []
        alerts: list[tuple[float, str, str]] = []
        errors: list[str] = []

        kept = open(logs / f"daemon_{stream}_{n}.log", "w") if logs else None  # noqa: SIM115

        async def read_log() -> None:
            assert proc.stderr is not None
            async for raw in proc.stderr:
                line = raw.decode(errors="replace").rstrip()
                if kept is not None:
                    print(line, file=kept)
                at = log_time(line)
                if at is None:
                    continue
                if _WARMED.search(line):
                    warmed.append(at)
                elif (found := _ALERT.search(line)) is not None:
                    alerts.append((at, found.group(1), found.group(2)))
                elif " ERROR " in line or " WARNING " in line:
                    errors.append(line)

        passes: list[float] = []  # when each replay pass of the capture ended (its clock jumps)

        async def watch_passes() -> None:
            while True:
                await fake.replay_done.wait()
                fake.replay_done.clear()
                passes.append(time.time())

        reader = asyncio.create_task(read_log())
        passes_task = asyncio.create_task(watch_passes())
        try:
            deadline = time.time() + 600
            while len(warmed) < feeds and time.time() < deadline and proc.returncode is None:
                await asyncio.sleep(0.2)
            warmup_s = warmed[-1] - started if len(warmed) >= feeds else math.nan
            limited = fake.rate_limited
            # the first bar to close after the warm-up is repaired from REST (its forming
            # part came from there): the window starts once its alerts are out
            deadline = time.time() + 150
            probes = len(range(0, n, probe_every))
            while len(alerts) < probes and time.time() < deadline and proc.returncode is None:
                await asyncio.sleep(0.2)
            await asyncio.sleep(5.0)
            cpu0, ticks0, t0 = cpu_seconds(proc.pid), sent.ticks, time.time()
            await asyncio.sleep(window)
            cpu1, ticks1, t1 = cpu_seconds(proc.pid), sent.ticks, time.time()
            rss, peak = rss_mb(proc.pid), rss_mb(proc.pid, "VmHWM")
        finally:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            await proc.wait()
            reader.cancel()
            passes_task.cancel()
            await fake.stop()
            if kept is not None:
                kept.close()
    latencies, lags, timed, looped = [], [], [], []
    for at, base, bar_time in alerts:
        if not t0 <= at <= t1:
            continue
        bar_ms = int(datetime.fromisoformat(bar_time.replace("Z", "+00:00")).timestamp() * 1000)
        key = (f"{base.upper()}USDT", bar_ms)
        left, queued = sent.left.get(key), sent.queued.get(key)
        if left is not None and key in sent.across_loop:
            looped.append((at - left) * 1000)
        elif left is not None:
            latencies.append((at - left) * 1000)
            timed.append({"member": key[0], "bar": bar_ms, "at": at, "left": left})
            if queued is not None:
                lags.append((left - queued) * 1000)
    if logs is not None:
        latency_file = logs / f"latencies_{stream}_{n}.json"
        latency_file.write_text(json.dumps({"passes": passes, "alerts": timed}))
    ticks = ticks1 - ticks0
    cpu = cpu1 - cpu0
    return {
        "n": n,
        "stream": stream,
        "cpu_share": round(cpu / (t1 - t0), 3),
        "rss_mb": round(rss, 1),
        "peak_rss_mb": round(peak, 1),
        "warmup_s": round(warmup_s, 1),
        "rest_429": limited,
        "ticks_per_s": round(ticks / (t1 - t0), 1),
        "per_tick_us": round(cpu / ticks * 1e6, 1) if ticks else math.nan,
        "alerts": len(latencies),
        "tick_to_alert_p50_ms": percentile(latencies, 50),
        "tick_to_alert_p99_ms": percentile(latencies, 99),
        "fake_send_lag_p99_ms": percentile(lags, 99),
        "across_loop_alerts": len(looped),
        "across_loop_p99_ms": percentile(looped, 99),
        "warnings": len(errors),
        "first_warning": errors[0][:200] if errors else None,
    }


def main() -> int:
    """Run every case, print one line per case and the JSON summary line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", default="10,100,400", help="watchlist sizes (comma-separated)")
    parser.add_argument("--window", type=float, default=120.0, help="steady window, seconds")
    parser.add_argument("--streams", default="ohlcv,trades", help="ohlcv, trades or both")
    parser.add_argument(
        "--trade-rate", type=float, default=300.0, help="aggregate trades/s on trade streams"
    )
    parser.add_argument("--logs", type=Path, default=None, help="keep the daemon's logs here")
    parser.add_argument(
        "--all-alert", action="store_true", help="every member alerts at every bar close"
    )
    args = parser.parse_args()
    sizes = [int(x) for x in args.n.split(",")]
    streams = args.streams.split(",")
    bare = bare_ccxt_rss_mb()
    load = os.getloadavg()
    results: dict[str, list[dict[str, Any]]] = {}
    for stream in streams:
        for n in sizes:
            case = asyncio.run(
                run_case(
                    n, stream, args.window, args.trade_rate, args.logs, 1 if args.all_alert else 10
                )
            )
            case["rss_vs_bare_ccxt"] = round(case["rss_mb"] / bare, 3)
            print(json.dumps(case), flush=True)
            results.setdefault(stream, []).append(case)
    summary: dict[str, Any] = {
        "bare_ccxt_rss_mb": round(bare, 1),
        "load_avg_start": [round(x, 2) for x in load],
        "load_avg_end": [round(x, 2) for x in os.getloadavg()],
        "window_s": args.window,
    }
    for stream, cases in results.items():
        by_n = {case["n"]: case for case in cases}
        keys = ("cpu_share", "rss_vs_bare_ccxt", "warmup_s", "rest_429", "per_tick_us")
        summary[stream] = {str(n): {k: case[k] for k in keys} for n, case in by_n.items()}
        top, low = max(by_n), min(by_n)
        summary[stream]["tick_to_alert_p99_ms"] = by_n[top]["tick_to_alert_p99_ms"]
        summary[stream]["tick_to_alert_at_n"] = top
        if top != low:
            ratio = by_n[top]["per_tick_us"] / by_n[low]["per_tick_us"]
            summary[stream][f"per_tick_us_ratio_{top}_vs_{low}"] = round(ratio, 2)
            # the cost of one more update, net of the fixed cost a small N spreads thinly
            sizes = sorted(by_n)
            a, b = by_n[sizes[-2]], by_n[top]
            extra = b["cpu_share"] - a["cpu_share"]
            more = b["ticks_per_s"] - a["ticks_per_s"]
            if more > 0:
                summary[stream][f"marginal_us_per_tick_{sizes[-2]}_to_{top}"] = round(
                    extra / more * 1e6, 1
                )
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
