"""The real Binance trade captures of 2024-08-08 and bars computed from them with pandas.

The fake exchange replays these captures; the tests compare what moodring builds from the
replay with what pandas builds straight from the captured trade frames.
"""

from __future__ import annotations

import functools
import gzip
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from moodring.service.daemon import Daemon
from moodring.settings import Settings
from moodring.testing.fake_exchange import FakeExchange
from moodring.times import iso_time
from tests.support.paths import BTC_CAPTURE, CAPTURE_DIR, ETH_CAPTURE
from tests.support.wait import until

__all__ = [
    "BTC_CAPTURE",
    "CAPTURES",
    "CAPTURE_DIR",
    "ETH_CAPTURE",
    "assert_bars_equal",
    "capture_trades",
    "expected_bars",
    "pandas_bars",
    "recorded",
    "settings_for",
]

# both captures, as the fake exchange takes them
CAPTURES = [ETH_CAPTURE, BTC_CAPTURE]
# moodring timeframes as pandas resample rules
RULES = {"1m": "1min", "5m": "5min", "15m": "15min", "1h": "1h", "4h": "4h", "1d": "1D"}


@functools.cache
def capture_trades() -> list[tuple[str, int, float, float, int]]:
    """Real ETH and BTC trade frames of the Binance capture, in time order."""
    out = []
    for feed, path in (("eth", ETH_CAPTURE), ("btc", BTC_CAPTURE)):
        with gzip.open(path, "rt") as lines:
            for line in lines:
                if "@trade" in line:
                    d = json.loads(line.split(" ", 1)[1])["data"]
                    out.append((feed, d["T"], float(d["p"]), float(d["q"]), d["t"]))
    return sorted(out, key=lambda trade: trade[1])


def settings_for(fake: FakeExchange, tmp_path: Path, **feed: object) -> Settings:
    """ETH and BTC from the fake exchange: an MFI, a correlation, a ratio breakout on 1m."""
    urls = {"ws_url": fake.ws_url, "rest_url": fake.rest_url, **feed}
    return Settings(
        feeds={"eth": {"symbol": "ETH/USDT", **urls}, "btc": {"symbol": "BTC/USDT", **urls}},
        series={"ethbtc": {"ratio": ["eth", "btc"]}},
        metrics={
            "mfi": {"type": "mfi", "series": "eth", "timeframe": "1m", "period": 2},
            "corr": {"type": "correlation", "a": "eth", "b": "btc", "timeframe": "1m", "window": 2},
            "brk": {"type": "breakout", "series": "ethbtc", "timeframe": "1m", "lookback": 2},
        },
        state_dir=tmp_path / "state",
        http={"port": 0},
    )


def expected_bars(fake: FakeExchange, symbol: str) -> pd.DataFrame:
    """Minute bars computed directly from the capture's trade frames."""
    trades = pd.DataFrame(fake.trades(symbol))
    trades["bar"] = trades["T"] // 60_000 * 60_000
    trades["p"] = trades["p"].astype(float)
    trades["q"] = trades["q"].astype(float)
    bars = trades.groupby("bar").agg(
        open=("p", "first"),
        high=("p", "max"),
        low=("p", "min"),
        close=("p", "last"),
        volume=("q", "sum"),
    )
    bars.index = pd.to_datetime(bars.index, unit="ms", utc=True)
    return bars.iloc[:-1]  # the last minute is still forming when the replay ends


def record_lines(path: Path) -> int:
    """Return how many bars a ``--record`` file holds so far (0 before it exists)."""
    if not path.exists():
        return 0
    with path.open() as f:
        return sum(1 for _ in f) - 1


def recorded(path: Path) -> pd.DataFrame:
    """Read a ``--record`` CSV file with pandas."""
    table = pd.read_csv(path)
    table.index = pd.to_datetime(table.pop("timestamp"), utc=True)
    return table


def pandas_bars(trades: list[dict[str, Any]], interval: str) -> list[list[float]]:
    """OHLCV per bar straight from trades: first/max/min/last price, summed quantity."""
    frame = pd.DataFrame(
        {"p": [float(t["p"]) for t in trades], "q": [float(t["q"]) for t in trades]},
        index=pd.to_datetime([t["T"] for t in trades], unit="ms", utc=True),
    )
    res = frame.resample(RULES[interval])  # bins from midnight UTC, like Binance
    bars = pd.DataFrame(
        {
            "o": res["p"].first(),
            "h": res["p"].max(),
            "l": res["p"].min(),
            "c": res["p"].last(),
            "v": res["q"].sum(),
        }
    )
    bars["c"] = bars["c"].ffill()  # a bar without trades is flat at the previous close
    for col in ("o", "h", "l"):
        bars[col] = bars[col].fillna(bars["c"])
    stamps = bars.index.as_unit("ms").asi8
    return [[int(t), *map(float, row)] for t, row in zip(stamps, bars.to_numpy(), strict=True)]


def assert_bars_equal(got: list[list[float]], want: list[list[float]]) -> None:
    """Compare OHLCV lists: identical timestamps, prices and volumes to float precision."""
    assert [b[0] for b in got] == [b[0] for b in want]
    for g, w in zip(got, want, strict=True):
        assert g[1:5] == w[1:5], (g, w)
        assert g[5] == pytest.approx(w[5], rel=1e-9, abs=1e-9), (g, w)


async def until_settled(
    daemon: Daemon, feeds: tuple[str, ...] = ("eth", "btc"), *, timeout: float = 30.0
) -> None:
    """Wait until no builder of ``feeds`` holds bars; on time-out say what each still holds."""
    part = daemon.parts[0]
    held = [(f, b) for f in feeds for b in daemon.engine.builders(f)]

    def holding() -> str:
        return "; ".join(
            f"{feed} {b.timeframe} holds {iso_time(b.held_from)}..{iso_time(b.held_until)}"
            f" (through {b.hold_through}), its clock at {iso_time(part.clock_ms(feed))}"
            for feed, b in held
            if b.holding
        )

    await until(lambda: not any(b.holding for _, b in held), holding, timeout=timeout)


async def until_recorded(daemon: Daemon, fake: FakeExchange, record: Path) -> None:
    """Wait until no bar is held and the capture's minute bars are recorded (all but the last)."""
    await until_settled(daemon, timeout=60)
    wants = {"eth": expected_bars(fake, "ETHUSDT"), "btc": expected_bars(fake, "BTCUSDT")}

    def complete() -> bool:  # all but maybe the final bar recorded (slow when loaded)
        return all(record_lines(record / f"{f}_1m.csv") >= len(w) - 1 for f, w in wants.items())

    await until(complete, "the capture's bars recorded", timeout=60)
