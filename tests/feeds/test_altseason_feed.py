"""The Altcoin Season Index live: ccxt.pro for real against the fake exchange's universe.

The fake serves the real daily files of 49 coins and BTC up to a settable "today"; every
value the feed publishes must equal ``altseason_series`` (the backtest) on the same files.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import sys
import urllib.request
from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import parse_qs, urlsplit

import ccxt.pro
import numpy as np
import pandas as pd
import pytest

from moodring.feeds.altseason_feed import AltseasonFeed
from moodring.market.frame import BarFrame
from moodring.metrics.altseason import DAY_MS, AltseasonValue, altseason_series
from moodring.settings import AltseasonConfig
from moodring.testing.fake_exchange import FakeExchange, configure_ccxt, load_universe_bars
from tests.support.paths import DATA
from tests.support.wait import until

ALTS_2022 = DATA / "daily/binance_alts_gnguyenquant"
BTC_1D = DATA / "daily/binance_yanniedog/BTCUSDT_1d.csv"
# GMT and APE were listed in March 2022: younger than 90 days, so skipped
TODAY = "2022-04-15"
TOP = 10
ALL = 60  # candidates enough for all 49 coins: the backtest ranks every one
WAIT = 60.0

Values = list[tuple[str, int, float, bool]]
Universe = dict[str, BarFrame]


def day_ms(text: str) -> int:
    return int(pd.Timestamp(text, tz="UTC").value // 1_000_000)


@pytest.fixture(scope="module")
def bars() -> Universe:
    return load_universe_bars([ALTS_2022, BTC_1D])


def with_day(frame: BarFrame, day: int, close: float) -> BarFrame:
    """The bars through ``day`` with that day's close replaced and its volume 0."""
    n = int(np.searchsorted(frame.time, day, side="right"))
    assert frame.time[n - 1] == day
    closes, volumes = frame.close[:n].copy(), frame.volume[:n].copy()
    closes[-1], volumes[-1] = close, 0.0
    return BarFrame(frame.time[:n], frame.open[:n], frame.high[:n], frame.low[:n], closes, volumes)


def backtest(
    bars: Mapping[str, BarFrame], day: int, *, leave_out: tuple[str, ...] = ()
) -> AltseasonValue:
    """The backtest's value at ``day`` from the same daily bars."""
    btc = bars["BTCUSDT"]
    coins = {
        symbol.removesuffix("USDT"): (b.time, b.close, b.volume)
        for symbol, b in bars.items()
        if symbol != "BTCUSDT" and symbol.removesuffix("USDT") not in leave_out
    }
    series = altseason_series(coins, (btc.time, btc.close), top=TOP)
    row = int(np.searchsorted(series.times, day))
    assert series.times[row] == day
    return AltseasonValue(
        day, float(series.index[row]), series.members_at(row), int(series.skipped[row])
    )


def same(a: AltseasonValue | None, b: AltseasonValue) -> bool:
    """Equal values, exactly (NaN equal to NaN)."""
    return (
        a is not None
        and (a.time, a.members, a.skipped) == (b.time, b.members, b.skipped)
        and (a.index == b.index or (math.isnan(a.index) and math.isnan(b.index)))
    )


def closed_rows(published: Values, day: int) -> dict[str, float]:
    return {column: value for column, t, value, closed in published if closed and t == day}


def klines_requests(fake: FakeExchange, since: int = 0) -> list[dict[str, str]]:
    """The query of every klines request from the ``since``-th REST request on."""
    out = []
    for path in fake.rest_requests[since:]:
        parts = urlsplit(path)
        if parts.path.endswith("/klines"):
            out.append({k: v[-1] for k, v in parse_qs(parts.query).items()})
    return out


@contextlib.asynccontextmanager
async def live(fake: FakeExchange, **options: Any) -> AsyncIterator[tuple[AltseasonFeed, Values]]:
    """Run the fake exchange and a feed on it (its clock the fake's), stopped afterwards."""
    await fake.start()
    config = AltseasonConfig(top=TOP, ws_url=fake.ws_url, rest_url=fake.rest_url)
    published: Values = []
    feed = AltseasonFeed(
        config,
        lambda column, t, value, closed: published.append((column, t, value, closed)),
        clock=lambda: fake.universe_now_ms / 1000,
        throttle=0.05,
        **{"candidates": ALL, **options},
    )
    try:
        async with feed:
            yield feed, published
    finally:
        await fake.stop()


async def test_closed_value_equals_the_backtest_and_exclusions_never_enter(bars: Universe) -> None:
    fake = FakeExchange(universe=bars, today=TODAY)
    # the stablecoin pair and the leveraged token are the busiest markets by far
    assert {"USDCUSDT", "ETHUPUSDT"} <= set(fake.universe_symbols)
    async with live(fake) as (feed, published):
        await until(lambda: feed.closed is not None, "the first closed value")
        yesterday = day_ms(TODAY) - DAY_MS
        want = backtest(bars, yesterday)
        assert want.skipped == 2 and len(want.members) == TOP and 0 < want.index < 100
        assert same(feed.closed, want), (feed.closed, want)
        assert closed_rows(published, yesterday) == {
            "altseason_index": want.index,
            "altseason_members": float(TOP),
            "altseason_skipped": 2.0,
        }
        assert feed.running
        requested = {q["symbol"] for q in klines_requests(fake)}
        assert requested == {s for s in fake.universe_symbols if s not in ("USDCUSDT", "ETHUPUSDT")}
        assert "USDC/USDT" not in feed.coins and "ETHUP/USDT" not in feed.coins
        # one request per coin and BTC, all of the window at once: the definition's reach
        assert len(klines_requests(fake)) == 50
        assert all(int(q["startTime"]) == yesterday - 90 * DAY_MS for q in klines_requests(fake))


async def test_intraday_prices_move_the_forming_value_and_the_next_day_closes_exactly(
    bars: Universe,
) -> None:
    fake = FakeExchange(universe=bars, today=TODAY)
    today = day_ms(TODAY)
    async with live(fake) as (feed, published):
        await until(lambda: feed.closed is not None, "the first closed value")
        await fake.wait_subscribed("btcusdt@miniTicker", "adausdt@miniTicker")
        # untouched, every coin's forming close is today's open (the tickers' last price)
        opens = {s: float(b.open[np.searchsorted(b.time, today)]) for s, b in bars.items()}
        expected = backtest({s: with_day(b, today, opens[s]) for s, b in bars.items()}, today)
        await until(lambda: same(feed.latest, expected), "the forming value at the opens")
        # BTC down 30 %, every coin moved at once: a different index, exactly the definition's
        rng = np.random.default_rng(5)
        moved = {s: p * float(rng.uniform(0.6, 1.6)) for s, p in opens.items()}
        moved["BTCUSDT"] = opens["BTCUSDT"] * 0.7
        prices = {**opens, **moved}
        expected_moved = backtest(
            {s: with_day(b, today, prices[s]) for s, b in bars.items()}, today
        )
        assert expected_moved.index != expected.index
        await fake.set_prices(moved)
        await until(lambda: same(feed.latest, expected_moved), "the forming value moved")
        forming = [(c, v) for c, t, v, closed in published if not closed and t == today]
        assert ("altseason_index", expected_moved.index) in forming
        assert feed.stats.tickers > 50

        # the day closes with its real bars: fetched two days per coin, no history again
        mark = len(fake.rest_requests)
        fake.advance_day()
        await until(lambda: feed.closed is not None and feed.closed.time == today, "day close")
        want = backtest(bars, today)
        assert same(feed.closed, want), (feed.closed, want)
        assert closed_rows(published, today)["altseason_index"] == want.index
        queries = klines_requests(fake, mark)
        assert len(queries) == 50 and {int(q["startTime"]) for q in queries} == {today}
        # the new day's forming value, from the new day's opens
        tomorrow = today + DAY_MS
        opens = {s: float(b.open[np.searchsorted(b.time, tomorrow)]) for s, b in bars.items()}
        expected = backtest({s: with_day(b, tomorrow, opens[s]) for s, b in bars.items()}, tomorrow)
        await until(lambda: same(feed.latest, expected), "the next forming value")
        assert feed.running


async def test_a_delisted_symbol_is_left_out_and_the_feed_goes_on(bars: Universe) -> None:
    fake = FakeExchange(universe=bars, today=TODAY)
    yesterday, today = day_ms(TODAY) - DAY_MS, day_ms(TODAY)
    assert "ADA" in backtest(bars, yesterday).members  # its absence changes the universe
    fake.fail_symbol("ADAUSDT")
    async with live(fake) as (feed, _):
        await until(lambda: feed.closed is not None, "the first closed value")
        want = backtest(bars, yesterday, leave_out=("ADA",))
        assert same(feed.closed, want), (feed.closed, want)
        assert feed.failed == {"ADA/USDT"} and feed.stats.failed == 1
        assert "ADA/USDT" not in feed.coins and len(feed.coins) == 48
        await fake.wait_subscribed("btcusdt@miniTicker")
        await fake.set_prices({"BTCUSDT": 1000.0})  # everything beats a BTC crash
        await until(lambda: feed.latest is not None and feed.latest.index == 100.0, "forming")
        assert "ADA" not in feed.latest.members

        # back the next day: its missing days are fetched and it is in again
        fake.fail_symbol("ADAUSDT", failing=False)
        fake.advance_day()
        await until(lambda: feed.closed is not None and feed.closed.time == today, "day close")
        assert same(feed.closed, backtest(bars, today)), feed.closed
        assert feed.failed == set() and "ADA/USDT" in feed.coins
        assert feed.running


async def test_a_coin_delisted_while_running_misses_the_next_close(bars: Universe) -> None:
    fake = FakeExchange(universe=bars, today=TODAY)
    today = day_ms(TODAY)
    async with live(fake) as (feed, _):
        await until(lambda: feed.closed is not None, "the first closed value")
        fake.fail_symbol("ZILUSDT")
        fake.advance_day()
        await until(lambda: feed.closed is not None and feed.closed.time == today, "day close")
        want = backtest(bars, today, leave_out=("ZIL",))
        assert "ZIL" in backtest(bars, today).members
        assert same(feed.closed, want), (feed.closed, want)
        assert feed.running


async def test_dropped_sockets_reconnect_without_fetching_history_again(bars: Universe) -> None:
    fake = FakeExchange(universe=bars, today=TODAY)
    async with live(fake) as (feed, _):
        await until(lambda: feed.closed is not None, "the first closed value")
        await fake.wait_subscribed("btcusdt@miniTicker")
        mark = len(fake.rest_requests)
        assert await fake.drop_connections() >= 1
        await until(lambda: feed.stats.reconnects >= 1, "a reconnect")
        await until(lambda: feed.stats.refreshes >= 2, "the refresh after it")
        await fake.wait_subscribed("btcusdt@miniTicker")
        await fake.set_prices({"BTCUSDT": 1000.0})
        await until(lambda: feed.latest is not None and feed.latest.index == 100.0, "forming")
        assert klines_requests(fake, mark) == []  # markets and tickers only
        assert feed.running


async def test_without_a_ticker_stream_it_polls(bars: Universe) -> None:
    fake = FakeExchange(universe=bars, today=TODAY)

    def polling_client() -> Any:
        client = ccxt.pro.binance({"enableRateLimit": True})
        configure_ccxt(client, fake.ws_url, fake.rest_url)
        client.has = {**client.has, "watchTickers": False}
        return client

    async with live(fake, client_factory=polling_client, poll_every=0.2) as (feed, _):
        await until(lambda: feed.closed is not None, "the first closed value")
        await fake.set_prices({"BTCUSDT": 1000.0})
        await until(lambda: feed.latest is not None and feed.latest.index == 100.0, "polled")
        assert fake.connection_count == 0
        assert feed.running


async def test_default_candidates_are_three_times_top(bars: Universe) -> None:
    fake = FakeExchange(universe=bars, today=TODAY)
    async with live(fake, candidates=None) as (feed, _):
        await until(lambda: feed.closed is not None, "the first closed value")
        assert feed.candidates == 3 * TOP and len(feed.coins) == 3 * TOP
        assert len(klines_requests(fake)) == 3 * TOP + 1
        # these 30 busiest by 24-hour volume hold the 10 busiest by 30-day volume here
        want = backtest(bars, day_ms(TODAY) - DAY_MS)
        assert (feed.closed.index, feed.closed.members) == (want.index, want.members)


async def test_an_unreachable_exchange_is_retried_not_raised() -> None:
    config = AltseasonConfig(
        top=TOP, ws_url="ws://127.0.0.1:9/stream/ws", rest_url="http://127.0.0.1:9/api/v3"
    )
    feed = AltseasonFeed(config, lambda *_: None, timeout=5.0)
    async with feed:
        await until(lambda: feed.stats.reconnects >= 2, "two failed attempts")
        assert feed.running and feed.closed is None
    assert not feed.running


def test_the_client_is_rate_limited_and_pointed_at_the_overrides() -> None:
    config = AltseasonConfig(
        ws_url="ws://127.0.0.1:1/stream/ws", rest_url="http://127.0.0.1:1/api/v3"
    )
    client = AltseasonFeed(config, lambda *_: None)._make_client()
    assert client.enableRateLimit
    assert client.urls["api"]["public"] == "http://127.0.0.1:1/api/v3"
    assert client.urls["api"]["ws"]["spot"] == "ws://127.0.0.1:1/stream/ws"


async def test_fake_universe_rest_and_ticker_stream(bars: Universe) -> None:
    fake = FakeExchange(universe=bars, today=TODAY)
    await fake.start()
    client = ccxt.pro.binance()
    configure_ccxt(client, fake.ws_url, fake.rest_url)
    today = day_ms(TODAY)
    try:
        markets = await client.load_markets()
        assert {"ADA/USDT", "BTC/USDT", "USDC/USDT", "ETHUP/USDT"} <= set(markets)
        assert "GMT/USDT" in markets
        tickers = await client.fetch_tickers()
        ada = bars["ADAUSDT"]
        row = int(np.searchsorted(ada.time, today))
        assert tickers["ADA/USDT"]["last"] == ada.open[row]
        assert tickers["ADA/USDT"]["quoteVolume"] == pytest.approx(
            ada.close[row - 1] * ada.volume[row - 1], rel=1e-12
        )
        rows = await client.fetch_ohlcv("ADA/USDT", "1d", since=today - 3 * DAY_MS)
        assert [r[0] for r in rows] == [today - 3 * DAY_MS + i * DAY_MS for i in range(4)]
        for r, i in zip(rows[:3], range(row - 3, row), strict=True):
            assert r[1:] == [ada.open[i], ada.high[i], ada.low[i], ada.close[i], ada.volume[i]]
        assert rows[3][1] == rows[3][4] == ada.open[row] and rows[3][5] == 0.0

        watch = asyncio.ensure_future(client.watch_tickers(["ADA/USDT"]))
        await fake.wait_subscribed("adausdt@miniTicker")
        assert await fake.set_prices({"ADAUSDT": 0.123456789}, {"ADAUSDT": 5.0}) == 1
        got = await asyncio.wait_for(watch, 10)
        assert got["ADA/USDT"]["last"] == 0.123456789
        rows = await client.fetch_ohlcv("ADA/USDT", "1d", since=today)
        assert rows == [[today, ada.open[row], ada.open[row], 0.123456789, 0.123456789, 5.0]]

        every = asyncio.ensure_future(client.watch_tickers())  # !miniTicker@arr
        await fake.wait_subscribed("!miniTicker@arr")
        await fake.set_prices({"ADAUSDT": 0.5, "BTCUSDT": 30000.0})
        got = await asyncio.wait_for(every, 10)
        assert {s: t["last"] for s, t in got.items()} == {"ADA/USDT": 0.5, "BTC/USDT": 30000.0}

        fake.fail_symbol("ADAUSDT")
        with pytest.raises(ccxt.BadSymbol):
            await client.fetch_ohlcv("ADA/USDT", "1d")
        fake.advance_day()
        assert fake.today == today + DAY_MS and fake.clock_ms == fake.universe_now_ms
        tickers = await client.fetch_tickers()
        btc = bars["BTCUSDT"]
        assert tickers["BTC/USDT"]["last"] == btc.open[np.searchsorted(btc.time, today + DAY_MS)]
    finally:
        await client.close()
        await fake.stop()


def test_fake_universe_lists_only_coins_trading_that_day(bars: Universe) -> None:
    fake = FakeExchange(universe=bars, today="2022-03-01")
    assert "GMTUSDT" not in fake.universe_symbols and "ADAUSDT" in fake.universe_symbols
    fake.set_day("2022-03-10")
    assert "GMTUSDT" in fake.universe_symbols
    with pytest.raises(ValueError, match="capture"):
        FakeExchange()


async def test_fake_cli_serves_a_universe(bars: Universe) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "moodring.testing.fake_exchange",
        "--universe",
        str(ALTS_2022),
        "--universe",
        str(BTC_1D),
        "--today",
        TODAY,
        "--port",
        "0",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        port = int(await asyncio.wait_for(proc.stdout.readline(), 60))

        def tickers() -> list[dict[str, Any]]:
            url = f"http://127.0.0.1:{port}/api/v3/ticker/24hr"
            with urllib.request.urlopen(url, timeout=10) as resp:
                return json.loads(resp.read())

        got = {t["symbol"]: t for t in await asyncio.to_thread(tickers)}
        assert len(got) == 49 + 3  # and BTC, USDC, ETHUP
        ada = bars["ADAUSDT"]
        row = int(np.searchsorted(ada.time, day_ms(TODAY)))
        assert float(got["ADAUSDT"]["lastPrice"]) == ada.open[row]
    finally:
        proc.terminate()
        assert await asyncio.wait_for(proc.wait(), 30) == 0
