"""Benchmark the live pipeline on the fake exchange replaying a real Binance capture.

Run: python benchmarks/pipeline.py [--exchange NAME]
(a) a bare ccxt.pro trade-watching loop's frames/s; (b) moodring's daemon on the same
replay; (c) peak RSS of the daemon against a bare `import ccxt.pro` process; (d) latency
from the frame that closes a bar to apprise's POST arriving at a local json:// receiver;
(e) the daemon's RSS once 50 alerts with charts have reached the receiver (charts are
drawn in a worker process, which it also reports, then waits for it to exit). RSS is
measured with moodring's bytecode compiled, as an installed moodring runs.
The last line printed is one JSON object with the headline figures.

``--exchange binanceus|coinbase|kraken|bybit`` measures (a) and (b) only, with the fake
speaking that exchange (the same capture re-encoded): the daemon's frames/s relative to a
bare ccxt.pro loop of that exchange, per wall-clock second and per CPU second of the process
(the second is steadier on a loaded machine).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import ccxt.pro as ccxtpro
import numpy as np

from moodring.feeds.ccxt.exchange import ExchangeFeeds
from moodring.service.daemon import Daemon
from moodring.settings import Settings
from moodring.testing.fake_exchange import FakeExchange, configure_ccxt

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CAPTURES = [
    DATA / "ws/hftbacktest_binance_spot/ethusdt_20240808.gz",
    DATA / "ws/hftbacktest_binance_spot/btcusdt_20240808.gz",
]
SYMBOLS = ["ETH/USDT", "BTC/USDT"]
# the libraries ``moodring run`` imports (with charts, minus aiomqtt: MQTT is off here);
# their RSS alone is the floor under the daemon's, whatever moodring's own code weighs
LIBRARIES = (
    "ccxt.pro, numpy, pydantic_settings, yaml, jinja2.sandbox, aiohttp.web, "
    "prometheus_client.aiohttp, sqlite3, argparse, cronsim"
)
QUOTE = {"coinbase": "USD", "kraken": "USD"}
# the captures replayed this many times over (time-shifted) per frame-rate run: a longer
# window than one pass's ~2 s, so a shared machine's slow spell weighs less
PASSES = 4


def symbols(exchange: str) -> list[str]:
    """Return the ETH and BTC markets the fake lists when it speaks ``exchange``."""
    quote = QUOTE.get(exchange, "USDT")
    return [f"ETH/{quote}", f"BTC/{quote}"]


def total_trades(fake: FakeExchange, exchange: str = "binance") -> int:
    """Return the number of trade frames in ``PASSES`` replays of the captures."""
    return PASSES * sum(len(fake.trades(s)) for s in symbols(exchange))


def settle_fake() -> None:
    """Freeze the fake's loaded captures (~300k objects) out of the collector's way.

    Both sides of a pair do it: else the daemon's own ``gc.freeze`` at start-up takes them
    out of its collections only, and every later run in this process, of either side,
    inherits the freezes of the runs before it.
    """
    gc.collect()
    gc.freeze()


async def _watch(ex: Any, markets: list[str]) -> list[Any]:
    """One watch of both markets: for-symbols where ccxt has it, else whichever answers first."""
    if ex.has.get("watchTradesForSymbols"):
        return await ex.watch_trades_for_symbols(markets)
    tasks = [asyncio.ensure_future(ex.watch_trades(s)) for s in markets]
    done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    return [t for task in done for t in task.result()]


async def bare_ccxt(exchange: str = "binance") -> tuple[float, float]:
    """Frames per second and per CPU second of a plain ccxt.pro trade-watching loop."""
    fake = FakeExchange(CAPTURES, exchange=exchange, speed=0.0, loop=True)
    await fake.start()
    settle_fake()
    ex = getattr(ccxtpro, exchange)({"newUpdates": True})
    configure_ccxt(ex, fake.ws_url, fake.rest_url)
    ex.options["tradesLimit"] = 5000
    await ex.load_markets()
    markets = symbols(exchange)
    for market in markets:  # as the daemon's warm-up does: the fake then builds 1m candles too
        await ex.fetch_ohlcv(market, "1m", limit=5)
    want, got = total_trades(fake, exchange), 0
    start = last = cpu_start = cpu_last = 0.0
    while got < want:
        try:
            trades = await asyncio.wait_for(_watch(ex, markets), 2.0)
        except TimeoutError:
            break  # the last frames stay in ccxt's cache until another arrives
        last, cpu_last = time.perf_counter(), time.process_time()
        if not start:
            start, cpu_start = last, cpu_last
        got += len(trades)
    await ex.close()
    await fake.stop()
    return got / (last - start), got / (cpu_last - cpu_start)


def settings_for(
    fake: Any,
    state: Path,
    receiver: str | None = None,
    exchange: str = "binance",
    *,
    charts: bool = False,
) -> Settings:
    """Daemon settings on the fake exchange: the shipped metric kinds on 1-minute bars.

    With a receiver, a rule per feed alerts on every closed bar (with a chart if ``charts``).
    """
    urls = {"ws_url": fake.ws_url, "rest_url": fake.rest_url, "exchange": exchange}
    eth, btc = symbols(exchange)
    rules = []
    if receiver:
        rules = [
            {
                "name": f"{f}-bar",
                "metric": f"{f}_mfi",
                "condition": {"above": -1},
                "repeat_interval": "1m",
                "message": "{{ time }}",
                "chart": charts,
            }
            for f in ("eth", "btc")
        ]
    return Settings(
        feeds={"eth": {"symbol": eth, **urls}, "btc": {"symbol": btc, **urls}},
        series={"ethbtc": {"ratio": ["eth", "btc"]}},
        metrics={
            "eth_mfi": {"type": "mfi", "series": "eth", "timeframe": "1m", "period": 3},
            "btc_mfi": {"type": "mfi", "series": "btc", "timeframe": "1m", "period": 3},
            "corr": {"type": "correlation", "a": "eth", "b": "btc", "timeframe": "1m", "window": 3},
            "brk": {"type": "breakout", "series": "ethbtc", "timeframe": "1m", "lookback": 3},
            "div": {
                "type": "divergence",
                "a": "eth",
                "b": "btc",
                "timeframe": "1m",
                "window": 3,
                "lookback": 2,
            },
        },
        rules=rules,
        # rate limit lifted: it is not what this measures
        notify={"urls": [receiver], "rate_per_minute": 10_000} if receiver else {},
        state_dir=state,
        http={"port": 0},
    )


async def daemon_rate(exchange: str = "binance") -> tuple[float, float]:
    """Frames per second and per CPU second through moodring's daemon at full speed."""
    fake = FakeExchange(CAPTURES, exchange=exchange, speed=0.0, loop=True)
    await fake.start()
    settle_fake()
    with tempfile.TemporaryDirectory() as state:
        async with Daemon(settings_for(fake, Path(state), exchange=exchange)) as daemon:
            part = daemon.parts[0]
            assert isinstance(part, ExchangeFeeds)
            stats = part.stats
            want = total_trades(fake, exchange)
            while stats.trades == 0:
                await asyncio.sleep(0.001)
            start, cpu_start, first = time.perf_counter(), time.process_time(), stats.trades
            last_change, cpu_last, seen = start, cpu_start, first
            while stats.trades < want and time.perf_counter() - last_change < 2.0:
                await asyncio.sleep(0.005)
                if stats.trades != seen:
                    seen, last_change = stats.trades, time.perf_counter()
                    cpu_last = time.process_time()
    await fake.stop()
    return (seen - first) / (last_change - start), (seen - first) / (cpu_last - cpu_start)


class Receiver:
    """A json:// endpoint noting when each alert arrives."""

    def __init__(self) -> None:
        self.arrivals: list[tuple[float, dict[str, Any]]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                receiver.arrivals.append((time.monotonic(), body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"json://127.0.0.1:{self.server.server_address[1]}/alerts"


# The fake exchange in its own process, noting (on stdout) when the first trade frame of
# each symbol's minute leaves it; time.monotonic is the system-wide CLOCK_MONOTONIC on Linux.
TIMED_FAKE = textwrap.dedent("""
    import re, sys, time
    from moodring.testing import fake_exchange
    first, push = set(), fake_exchange._Conn.push
    trade = re.compile(r'"s":"(\\w+)","t":\\d+,.*"T":(\\d+)')

    def timed_push(conn, message):
        if isinstance(message, str) and '"e":"trade"' in message:
            match = trade.search(message)
            if match:
                key = (match.group(1), int(match.group(2)) // 60_000 * 60_000)
                if key not in first:
                    first.add(key)
                    print("sent", *key, time.monotonic(), flush=True)
        push(conn, message)

    fake_exchange._Conn.push = timed_push
    sys.exit(fake_exchange.main(sys.argv[1:]))
""")


async def frame_to_notify(speed: float = 10.0, passes: int = 4) -> list[float]:
    """ms from a symbol's first trade frame of a minute (it closes its bar) to the POST."""
    args = [sys.executable, "-c", TIMED_FAKE, "--speed", str(speed), "--port", "0", "--loop"]
    for capture in CAPTURES:
        args += ["--capture", str(capture)]
    fake = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
    )
    port = int((await fake.stdout.readline()).decode())  # type: ignore[union-attr]
    first_sent: dict[tuple[str, int], float] = {}

    async def read_sent() -> None:
        async for line in fake.stdout:  # type: ignore[union-attr]
            if not line.startswith(b"sent "):  # the fake's ws_url=/rest_url= line
                continue
            _, symbol, minute, at = line.decode().split()
            first_sent[symbol, int(minute)] = float(at)

    reader = asyncio.create_task(read_sent())
    receiver = Receiver()

    class Urls:
        ws_url = f"ws://127.0.0.1:{port}/stream/ws"
        rest_url = f"http://127.0.0.1:{port}/api/v3"

    try:
        with tempfile.TemporaryDirectory() as state:
            async with Daemon(settings_for(Urls(), Path(state), receiver.url)):
                await asyncio.sleep(passes * 400 / speed)  # the capture spans ~6.5 minutes
    finally:
        fake.terminate()
        await fake.wait()
        reader.cancel()
        receiver.server.shutdown()
    latencies = []
    for arrived, body in receiver.arrivals[1:]:  # the first send loads apprise's plugin
        bar = int(np.datetime64(body["message"].rstrip("Z"), "ms").astype(np.int64))
        symbol = body["title"].partition("-")[0].upper() + "USDT"  # "eth-bar: ..." -> ETHUSDT
        sent = first_sent.get((symbol, bar + 60_000))
        if sent is not None:
            latencies.append((arrived - sent) * 1000)
    return latencies


# A small parent: peak RSS survives exec, so a large parent would inflate its children's.
LAUNCHER = textwrap.dedent("""
    import os, signal, subprocess, sys, time
    seconds, argv = float(sys.argv[1]), sys.argv[2:]
    child = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if seconds:
        time.sleep(seconds)
        child.send_signal(signal.SIGTERM)
    _, _, usage = os.wait4(child.pid, 0)
    print(usage.ru_maxrss / 1024)
""")


def compile_bytecode() -> None:
    """Compile moodring's bytecode, as installing it does: the daemon is measured as installed.

    The reference, ``import ccxt.pro``, reads ccxt's bytecode compiled when it was installed;
    an editable checkout under PYTHONDONTWRITEBYTECODE would compile moodring from source on
    every start instead (+0.6 MB RSS).
    """
    import compileall

    import moodring

    compileall.compile_dir(Path(moodring.__file__).parent, quiet=1)


def peak_rss_mb(argv: list[str], run_for: float = 0.0) -> float:
    """Return the peak RSS in MB of ``argv`` (stopped with SIGTERM after ``run_for`` s)."""
    out = subprocess.run(
        [sys.executable, "-c", LAUNCHER, str(run_for), *argv],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout.strip())


def daemon_rss_mb(run_for: float = 15.0) -> float:
    """Peak RSS of ``moodring run`` taking the whole replay from a fake exchange process."""
    args = [sys.executable, "-m", "moodring.testing.fake_exchange", "--speed", "0", "--port", "0"]
    for capture in CAPTURES:
        args += ["--capture", str(capture)]
    fake = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        port = int(fake.stdout.readline())  # type: ignore[union-attr]
        urls = {
            "ws_url": f"ws://127.0.0.1:{port}/stream/ws",
            "rest_url": f"http://127.0.0.1:{port}/api/v3",
        }
        with tempfile.TemporaryDirectory() as tmp:
            config = settings_for_yaml(urls, Path(tmp))
            return peak_rss_mb(["moodring", "run", "-c", str(config)], run_for)
    finally:
        fake.terminate()
        fake.wait()


def settings_for_yaml(
    urls: dict[str, str], tmp: Path, receiver: str | None = None, *, charts: bool = False
) -> Path:
    """Write the benchmark's daemon config as YAML and return its path."""
    import yaml

    class Stub:
        ws_url, rest_url = urls["ws_url"], urls["rest_url"]

    settings = settings_for(Stub(), tmp / "state", receiver, charts=charts)
    data = settings.model_dump(mode="json", exclude_none=True, by_alias=True)
    if receiver:
        data["notify"]["urls"] = [receiver]  # the dump masks secrets, URLs among them
    path = tmp / "moodring.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


Rates = tuple[float, float]  # frames per second, frames per CPU second


def rates(exchange: str, runs: int) -> list[tuple[Rates, Rates]]:
    """Return ``runs`` pairs of (bare loop, daemon) rates, each pair run back to back.

    A loaded machine's slow spell then weighs on both sides of a pair (the order alternates
    from pair to pair); the fake runs in the same process, so the CPU figures carry its work
    on both sides.
    """
    pairs: list[tuple[Rates, Rates]] = []
    for run in range(runs):
        if run % 2:
            ours = asyncio.run(daemon_rate(exchange))
            bare = asyncio.run(bare_ccxt(exchange))
        else:
            bare = asyncio.run(bare_ccxt(exchange))
            ours = asyncio.run(daemon_rate(exchange))
        pairs.append((bare, ours))
    return pairs


def ratios(pairs: list[tuple[Rates, Rates]], which: int = 0) -> list[float]:
    """Return each pair's daemon-to-bare ratio of frames/s (``which`` 0) or frames/CPU s (1)."""
    return sorted(ours[which] / bare[which] for bare, ours in pairs)


def exchange_rates(exchange: str, runs: int) -> int:
    """Measure one exchange: the daemon's frames/s against a bare ccxt.pro loop's."""
    pairs = rates(exchange, runs)
    for bare, ours in pairs:
        print(
            f"bare ccxt.pro ({exchange}) {bare[0]:>9,.0f} frames/s {bare[1]:>9,.0f} /CPU s"
            f"   moodring {ours[0]:>9,.0f} frames/s {ours[1]:>9,.0f} /CPU s"
            f"   ratio {ours[0] / bare[0]:.3f}"
        )
    wall, cpu = ratios(pairs), ratios(pairs, 1)
    summary = {
        "exchange": exchange,
        "pipeline_vs_bare_ccxt": round(statistics.median(wall), 3),
        "pipeline_vs_bare_ccxt_cpu": round(statistics.median(cpu), 3),
        "pipeline_vs_bare_ccxt_range": [round(wall[0], 3), round(wall[-1], 3)],
    }
    print(json.dumps(summary))
    return 0


def proc_status_mb(pid: int) -> dict[str, float]:
    """Return a process's current and peak RSS in MB (``VmRSS``, ``VmHWM``) from /proc."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0]) / 1024
    return found


def worker_pids(parent: int) -> list[int]:
    """Return the pids of ``parent``'s chart workers (``python -m moodring.charts.worker``)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == parent and b"moodring.charts.worker" in cmdline:
            found.append(int(stat.parent.name))
    return found


def daemon_rss_after_alerts(
    alerts: int = 50, *, charts: bool = True, speed: float = 30.0
) -> dict[str, float]:
    """RSS in MB of ``moodring run`` once ``alerts`` alerts reached a json:// receiver.

    Two rules alert on every 1-minute bar, with a chart each if ``charts``. Returns the
    daemon's RSS then (``after``) and its peak (``peak``); with charts also the chart
    worker's largest RSS (``worker``) and the seconds it lingered once the alerts stopped
    (``worker_exit_s``, the replay paused; -1 if it was still there after two minutes).
    """
    args = [sys.executable, "-m", "moodring.testing.fake_exchange", "--speed", str(speed)]
    args += ["--port", "0", "--loop"]
    for capture in CAPTURES:
        args += ["--capture", str(capture)]
    fake = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    receiver = Receiver()
    daemon = None
    try:
        port = int(fake.stdout.readline())  # type: ignore[union-attr]
        urls = {
            "ws_url": f"ws://127.0.0.1:{port}/stream/ws",
            "rest_url": f"http://127.0.0.1:{port}/api/v3",
        }
        with tempfile.TemporaryDirectory() as tmp:
            config = settings_for_yaml(urls, Path(tmp), receiver.url, charts=charts)
            daemon = subprocess.Popen(
                ["moodring", "run", "-c", str(config)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            deadline = time.monotonic() + 600
            worker = 0.0

            def arrived() -> int:
                return sum(bool(body.get("attachments")) == charts for _, body in receiver.arrivals)

            while arrived() < alerts:
                if time.monotonic() > deadline or daemon.poll() is not None:
                    raise RuntimeError(f"{arrived()} alerts arrived, not {alerts}")
                for pid in worker_pids(daemon.pid):
                    with contextlib.suppress(OSError, KeyError):
                        worker = max(worker, proc_status_mb(pid)["VmRSS"])
                time.sleep(0.2)
            figures = proc_status_mb(daemon.pid)
            result = {"after": figures["VmRSS"], "peak": figures["VmHWM"]}
            if charts:
                fake.send_signal(signal.SIGUSR1)  # pause the replay: no more bars, no alerts
                stopped = time.monotonic()
                while worker_pids(daemon.pid) and time.monotonic() - stopped < 120:
                    time.sleep(0.5)
                lingered = time.monotonic() - stopped
                result["worker"] = worker
                result["worker_exit_s"] = -1.0 if worker_pids(daemon.pid) else lingered
            return result
    finally:
        if daemon is not None:
            daemon.terminate()
            daemon.wait()
        fake.terminate()
        fake.wait()
        receiver.server.shutdown()


def main(argv: list[str] | None = None) -> int:
    """Run every measurement, print a table and the JSON summary line."""
    parser = argparse.ArgumentParser(description="Benchmark the live pipeline on the fake.")
    parser.add_argument(
        "--exchange",
        choices=["binance", "binanceus", "coinbase", "kraken", "bybit"],
        default=None,
        help="only the frames/s figures, the fake speaking this exchange",
    )
    parser.add_argument(
        "--runs",
        type=int,
        default=5,
        help="pairs of runs (bare loop, daemon); the median ratio is reported (default 5)",
    )
    args = parser.parse_args(argv)
    if args.exchange is not None:
        return exchange_rates(args.exchange, args.runs)
    pairs = rates("binance", args.runs)
    bare = statistics.median(b[0] for b, _ in pairs)
    ours = statistics.median(o[0] for _, o in pairs)
    compile_bytecode()
    bare_rss = peak_rss_mb([sys.executable, "-c", "import ccxt.pro"])
    floor = peak_rss_mb([sys.executable, "-c", f"import {LIBRARIES}"])
    rss = daemon_rss_mb()
    latencies = asyncio.run(frame_to_notify())
    plain = daemon_rss_after_alerts(charts=False)
    charted = daemon_rss_after_alerts(charts=True)
    p99 = float(np.percentile(latencies, 99)) if latencies else float("nan")
    rows = [
        ("bare ccxt.pro watch_trades_for_symbols", f"{bare:,.0f} frames/s"),
        ("moodring daemon (same replay)", f"{ours:,.0f} frames/s"),
        ("peak RSS: import ccxt.pro", f"{bare_rss:.0f} MB"),
        ("peak RSS: import the daemon's libraries", f"{floor:.0f} MB"),
        ("peak RSS: daemon after the replay", f"{rss:.0f} MB"),
        ("frame to apprise POST, median", f"{statistics.median(latencies):.1f} ms"),
        ("frame to apprise POST, p99", f"{p99:.1f} ms ({len(latencies)} alerts)"),
        ("RSS: daemon after 50 alerts, no charts", f"{plain['after']:.0f} MB"),
        ("RSS: daemon after 50 charted alerts", f"{charted['after']:.0f} MB"),
        ("peak RSS: daemon, 50 charted alerts", f"{charted['peak']:.0f} MB"),
        ("RSS: chart worker while it ran", f"{charted.get('worker', 0):.0f} MB"),
    ]
    for name, value in rows:
        print(f"{name:<42} {value}")
    print(
        json.dumps(
            {
                "pipeline_vs_bare_ccxt": round(statistics.median(ratios(pairs)), 3),
                "rss_vs_bare_ccxt": round(rss / bare_rss, 3),
                "libraries_rss_vs_bare_ccxt": round(floor / bare_rss, 3),
                "frame_to_notify_p99_ms": round(p99, 1),
                "rss_after_alerts_vs_bare_ccxt": round(plain["after"] / bare_rss, 3),
                "rss_after_charts_vs_bare_ccxt": round(charted["after"] / bare_rss, 3),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
