"""Binance's REST request-weight limit: the fake enforces it, a watchlist's warm-up keeps to it."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import ccxt.pro
import pytest
import yaml
from ccxt.base.errors import DDoSProtection

from moodring.configfile import load_settings
from moodring.service.daemon import Daemon
from moodring.settings import Settings
from moodring.testing.fake_exchange import FakeExchange, configure_ccxt
from tests.support.captures import CAPTURES

pytestmark = pytest.mark.asyncio
MEMBERS = [f"X{i:02d}USDT" for i in range(60)]
# Binance spot's documented weights: exchangeInfo 20, time 1, klines 2
WARM_UP_WEIGHT = 20 + 1 + 2 * (len(MEMBERS) + 1)


def get(url: str) -> tuple[int, dict[str, str], Any]:
    """GET a URL; return the status, the headers and the JSON body (errors too)."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, dict(response.headers), json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), json.load(exc)


async def test_the_fake_answers_429_with_retry_after_past_the_weight_limit() -> None:
    fake = FakeExchange(CAPTURES, weight_limit=25)
    await fake.start()
    try:
        base = fake.rest_url
        info = await asyncio.to_thread(get, f"{base}/exchangeInfo")
        assert info[0] == 200 and info[1]["X-MBX-USED-WEIGHT-1M"] == "20"
        klines = await asyncio.to_thread(get, f"{base}/klines?symbol=ETHUSDT&interval=1m")
        assert klines[0] == 200 and klines[1]["X-MBX-USED-WEIGHT-1M"] == "22"
        await asyncio.to_thread(get, f"{base}/klines?symbol=ETHUSDT&interval=1m")
        status, headers, body = await asyncio.to_thread(
            get, f"{base}/klines?symbol=ETHUSDT&interval=1m"
        )
        if status == 200:  # the minute turned between two requests: its count began anew
            pytest.skip("a wall-clock minute ended during the test")
        assert status == 429
        assert 1 <= int(headers["Retry-After"]) <= 60
        assert body["code"] == -1003 and "request weight" in body["msg"]
        assert fake.rate_limited == 1 and fake.weight_used == 24
        client = ccxt.pro.binance({"enableRateLimit": False})
        configure_ccxt(client, fake.ws_url, fake.rest_url)
        try:
            with pytest.raises(DDoSProtection):  # what ccxt makes of it
                await client.fetch_ohlcv("ETH/USDT", "1m", limit=5)
        finally:
            await client.close()
    finally:
        await fake.stop()


def watchlist(fake: FakeExchange, state: Path) -> Settings:
    """A watchlist of 60 markets on 1m candles, each with a metric and a rule."""
    urls = {"ws_url": fake.ws_url, "rest_url": fake.rest_url, "stream": "ohlcv"}
    config = {
        "state_dir": str(state),
        "http": {"port": 0},
        "watchlists": {"alts": [f"{name[:-4]}/USDT" for name in MEMBERS]},
        "feeds": {
            "btc": {"symbol": "BTC/USDT", **urls},
            "{base}": {"for_each": "alts", "symbol": "{symbol}", **urls},
        },
        "series": {"{base}btc": {"for_each": "alts", "ratio": ["{base}", "btc"]}},
        "metrics": {
            "{base}btc_breakout": {
                "for_each": "alts",
                "type": "breakout",
                "series": "{base}btc",
                "timeframe": "1m",
                "lookback": 3,
            }
        },
        "rules": [
            {
                "name": "{base}-breakout",
                "for_each": "alts",
                "metric": "{base}btc_breakout",
                "condition": {"equals": 1},
            }
        ],
    }
    path = state.parent / "moodring.yaml"
    path.write_text(yaml.safe_dump(config))
    return load_settings(path)


async def test_a_watchlist_of_60_warms_up_within_binances_weight_limit(tmp_path: Path) -> None:
    fake = FakeExchange(
        CAPTURES,
        speed=1.0,
        autostart=False,
        relabel={name: "ETHUSDT" for name in MEMBERS},
        kline_every=2.0,
        # Binance allows 6000 a minute to everything on the IP: the warm-up may take what
        # its requests weigh (one exchangeInfo, one time, one klines per feed), no more
        weight_limit=WARM_UP_WEIGHT,
        lead=120.0,
    )
    await fake.start()
    try:
        async with Daemon(watchlist(fake, tmp_path / "state")) as daemon:
            part = daemon.parts[0]
            deadline = time.monotonic() + 60
            while not part.warmed.is_set() and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            assert part.warmed.is_set()
            for builder in daemon.engine.builders("x59"):
                assert len(builder.bars) >= 1  # the history came from REST
            klines = [p for p in fake.rest_requests if p.startswith("/api/v3/klines")]
            assert len(klines) == len(MEMBERS) + 1  # one per feed
            assert fake.rate_limited == 0
    finally:
        await fake.stop()
