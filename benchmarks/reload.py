"""Config reload and snapshot times of the daemon on the shipped config and real daily bars.

The daemon is built on the shipped config (feeds not started: no network), its windows
filled from the bundled real daily history (Binance ETH/BTC, Yahoo ^RUT), then:
(a) SIGHUP's work for a threshold change (a new engine takes the old one's bars and
rule states), (b) for a window change (the same, plus metrics re-fed), (c) a snapshot
capture + save, (d) load + restore at start. Last line: one JSON object.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

import yaml

from moodring.backtest.csvfile import load_csv
from moodring.configfile import load_settings
from moodring.market.bar import Bar
from moodring.pipeline import Pipeline
from moodring.service.daemon import Daemon
from moodring.service.snapshot import capture, load, restore, save
from moodring.settings import DEFAULT_CONFIG

SAMPLES = DEFAULT_CONFIG.parent / "samples"
RUNS = 20


def fill(daemon: Daemon) -> None:
    """Feed the bundled daily history to every feed, as a warm-up would."""
    for feed in ("eth", "btc", "rut"):
        frame = load_csv(SAMPLES / f"{feed}_1d.csv").bars
        bars = [
            Bar(*row)
            for row in zip(
                *(
                    c.tolist()
                    for c in (
                        frame.time,
                        frame.open,
                        frame.high,
                        frame.low,
                        frame.close,
                        frame.volume,
                    )
                ),
                strict=True,
            )
        ]
        daemon.sink.history(feed, bars, length_ms=86_400_000)


async def reload_ms(daemon: Daemon, path: Path, config: dict, change) -> list[float]:
    times = []
    for i in range(RUNS):
        change(config, i)
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        started = time.perf_counter()
        assert await daemon.reload()
        times.append((time.perf_counter() - started) * 1000)
    return times


def threshold(config: dict, i: int) -> None:
    config["rules"][0]["condition"] = {"below": 0.3 + i / 1000}


def window(config: dict, i: int) -> None:
    config["metrics"]["eth_rut_corr"]["window"] = 30 + i % 2


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        config = yaml.safe_load(DEFAULT_CONFIG.read_text())
        config["state_dir"] = tmp
        config["http"] = {"enabled": False}
        path = Path(tmp) / "moodring.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        daemon = Daemon(load_settings(path), config_path=path)
        fill(daemon)
        rules_ms = await reload_ms(daemon, path, config, threshold)
        window_ms = await reload_ms(daemon, path, config, window)

        snap = Path(tmp) / "snapshot.npz"
        save_ms, restore_ms = [], []
        for _ in range(RUNS):
            started = time.perf_counter()
            save(snap, capture(daemon.engine))
            save_ms.append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            state = load(snap, daemon.settings, max_age_s=3600)
            assert state is not None
            restore(Pipeline(daemon.settings), state, forming_bars=False)
            restore_ms.append((time.perf_counter() - started) * 1000)
        daemon.outbox.close()

    rows = [
        ("reload, threshold change (median / max)", rules_ms),
        ("reload, window change (median / max)", window_ms),
        ("snapshot capture + save", save_ms),
        ("snapshot load + restore", restore_ms),
    ]
    for label, values in rows:
        print(f"{label:<42} {statistics.median(values):7.1f} / {max(values):7.1f} ms")
    print(
        json.dumps(
            {
                "reload_threshold_ms": round(statistics.median(rules_ms), 1),
                "reload_window_ms": round(statistics.median(window_ms), 1),
                "snapshot_save_ms": round(statistics.median(save_ms), 1),
                "snapshot_restore_ms": round(statistics.median(restore_ms), 1),
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
