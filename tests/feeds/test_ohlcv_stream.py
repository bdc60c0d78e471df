"""``stream: ohlcv``: the exchange's candles instead of trades, through ccxt.pro for real."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from ccxt.base.errors import NetworkError

from moodring.feeds.ccxt import CcxtFeedConfig
from moodring.feeds.ccxt.exchange import ExchangeFeeds, ExchangeStats, candle_timeframe
from moodring.feedstate import FeedState
from moodring.market.bar import Bar
from moodring.market.builder import BarBuilder
from moodring.market.timeframe import Timeframe
from moodring.service.daemon import Daemon
from moodring.settings import Settings
from moodring.testing.fake_exchange import FakeExchange
from tests.support.captures import CAPTURES, expected_bars, recorded, settings_for, until_settled

MINUTE = 60_000
# candles of an hour ago: older ones would be refused as stale (the feed has no replay clock)
T0 = int(time.time() * 1000) // (60 * MINUTE) * 60 * MINUTE - 60 * MINUTE


def mixed_settings(fake: FakeExchange, tmp_path: Path) -> Settings:
    """test_live's settings with ETH on exchange candles and BTC on trades."""
    settings = settings_for(fake, tmp_path)
    eth = settings.feeds["eth"].model_copy(update={"stream": "ohlcv"})
    return settings.model_copy(update={"feeds": {**settings.feeds, "eth": eth}})


@dataclass
class Run:
    """What a replay left: the fake, the recorded bars and what the feeds passed on."""

    fake: FakeExchange
    record: Path
    stats: ExchangeStats | None = None
    trades: Counter[str] = field(default_factory=Counter)
    candles: Counter[str] = field(default_factory=Counter)
    closed: Counter[str] = field(default_factory=Counter)
    subscribed: set[str] = field(default_factory=set)


async def replay(tmp_path: Path, *, drop_every: float | None) -> Run:
    """Run the daemon over a replay, counting the trades and candles its feeds pass on."""
    # paused until both streams are subscribed: the replay's first minute is in both (the
    # warm-up, before the replay, has no bar to show a late subscription what it missed)
    fake = FakeExchange(CAPTURES, speed=40.0, drop_every=drop_every, start_paused=True)
    await fake.start()
    out = Run(fake, tmp_path / "record")
    daemon = Daemon(mixed_settings(fake, tmp_path), record=out.record)
    trade, candle = daemon.sink.trade, daemon.sink.candle

    def count_trade(feed: str, *args: Any) -> None:
        out.trades[feed] += 1
        trade(feed, *args)

    def count_candle(feed: str, bar: Bar, *, closed: bool, length_ms: int) -> None:
        out.candles[feed] += 1
        out.closed[feed] += closed
        candle(feed, bar, closed=closed, length_ms=length_ms)

    daemon.sink.trade = count_trade  # type: ignore[method-assign]
    daemon.sink.candle = count_candle  # type: ignore[method-assign]
    streams = ("ethusdt@trade", "ethusdt@kline_1m", "btcusdt@trade", "btcusdt@kline_1m")
    topics = ("ethusdt@kline_1m", "btcusdt@trade")  # what mixed_settings subscribes

    async def watch_subscriptions() -> None:
        while True:
            out.subscribed.update(s for s in streams if fake.subscribers(s))
            await asyncio.sleep(0.05)

    watcher = asyncio.create_task(watch_subscriptions())
    try:
        async with daemon:
            await asyncio.wait_for(fake.wait_subscribed(*topics), 30)
            fake.resume()
            await asyncio.wait_for(fake.replay_done.wait(), 120)
            await until_settled(daemon)
    finally:
        watcher.cancel()
        await fake.stop()
    out.stats = daemon.parts[0].stats
    return out


@pytest.mark.parametrize("drop_every", [None, 1.0], ids=["steady", "dropped-every-1s"])
async def test_candle_bars_equal_bars_built_from_the_trade_frames(tmp_path, drop_every) -> None:
    run = await replay(tmp_path, drop_every=drop_every)
    fake, record, stats = run.fake, run.record, run.stats
    assert stats is not None
    if drop_every:
        assert fake.drops >= 3, "the replay should have been interrupted several times"
        assert stats.reconnects >= 2
    # eth came as candles only, btc as trades only, side by side on one client
    assert run.subscribed == {"ethusdt@kline_1m", "btcusdt@trade"}
    assert run.trades["eth"] == 0 and run.candles["eth"] > 100
    assert run.trades["btc"] > 1000
    assert stats.candles > 100 and stats.trades > 1000  # one ExchangeFeeds, one client
    # Binance's closed flag closes each minute once (a reconnect may close a few more); a
    # reconnect that outlasts a minute of replay (a loaded machine) misses all its candles,
    # and the REST repair brings that bar instead
    if not drop_every:
        assert run.closed["eth"] >= len(expected_bars(fake, "ETHUSDT")) - 1
    for feed, symbol in (("eth", "ETHUSDT"), ("btc", "BTCUSDT")):
        want = expected_bars(fake, symbol)
        got = recorded(record / f"{feed}_1m.csv")
        # a drop may swallow the replay's last frames: nothing then closes the final bar, and
        # on a loaded machine a reconnect may outlast the replay's last minutes (lost: no
        # later frame shows the gap); the bars before are all there (the index check below)
        assert len(got) >= (len(want) // 2 if drop_every else len(want)), feed
        assert len(got) <= len(want) + 1, feed  # the last, still forming, may have closed
        got = got.iloc[: len(want)]
        want = want.iloc[: len(got)]
        assert list(got.index) == list(want.index), feed
        for column in ("open", "high", "low", "close"):
            np.testing.assert_array_equal(got[column], want[column], err_msg=f"{feed} {column}")
        np.testing.assert_allclose(got["volume"], want["volume"], rtol=1e-12, err_msg=feed)


# ---------------------------------------------------------------------- unit level


class BuilderSink:
    """A feed sink that hands candles straight to bar builders and keeps what it got."""

    def __init__(self, builders: Sequence[BarBuilder]) -> None:
        self.builders = list(builders)
        self.candles: list[tuple[Bar, bool]] = []
        self.bad: list[str] = []

    def trade(self, feed: str, t_ms: int, price: float, amount: float, trade_id: object) -> None:
        raise AssertionError("an ohlcv feed passed a trade on")

    def candle(self, feed: str, bar: Bar, *, closed: bool, length_ms: int) -> None:
        self.candles.append((bar, closed))
        for builder in self.builders:
            builder.add_candle(bar.time, *bar[1:], closed=closed, length_ms=length_ms)

    def history(self, feed: str, bars: Sequence[Bar], *, length_ms: int) -> None:
        pass

    def state(self, feed: str, state: FeedState, t_ms: int) -> None:
        pass

    def bad_frame(self, feed: str, reason: str, detail: str) -> None:
        self.bad.append(reason)


class NoClient:
    """A stand-in ccxt client: the unit tests call the candle handler directly."""

    has: ClassVar[dict[str, bool]] = {}
    timeframes: ClassVar[dict[str, str]] = {tf: tf for tf in ("1m", "5m", "1h", "1d", "1w", "1M")}

    async def close(self) -> None:
        pass


def candle_feeds(*timeframes: str) -> tuple[ExchangeFeeds, BuilderSink, list[list[Bar]]]:
    builders = [BarBuilder(Timeframe.parse(tf)) for tf in timeframes]
    closed: list[list[Bar]] = [[] for _ in builders]
    for builder, out in zip(builders, closed, strict=True):
        builder.subscribe(out.append)
    sink = BuilderSink(builders)
    feeds = ExchangeFeeds(
        "binance",
        {"eth": CcxtFeedConfig(symbol="ETH/USDT", stream="ohlcv")},
        sink,
        lambda name: builders,
        client_factory=NoClient,
    )
    return feeds, sink, closed


def row(t: int, o: float, h: float, low: float, c: float, v: float) -> list[float]:
    return [t, o, h, low, c, v]


def test_a_forming_candle_its_update_and_the_next_candle_close_one_bar() -> None:
    feeds, sink, (closed,) = candle_feeds("1m")
    feeds._on_candle("ETH/USDT", "1m", row(T0, 10, 11, 9, 10.5, 2.0), None)
    feeds._on_candle("ETH/USDT", "1m", row(T0, 10, 12, 8, 11.5, 5.0), None)
    assert closed == []  # no closed flag: the candle may still change
    feeds._on_candle("ETH/USDT", "1m", row(T0 + MINUTE, 11.5, 11.6, 11.4, 11.5, 0.5), None)
    assert closed == [Bar(T0, 10, 12, 8, 11.5, 5.0)]  # the final values, volume not summed
    assert sink.candles[-2] == (Bar(T0, 10, 12, 8, 11.5, 5.0), True)
    assert sink.candles[-1] == (Bar(T0 + MINUTE, 11.5, 11.6, 11.4, 11.5, 0.5), False)
    # a stale update of the closed candle changes nothing
    feeds._on_candle("ETH/USDT", "1m", row(T0, 10, 99, 1, 50, 99.0), None)
    assert closed == [Bar(T0, 10, 12, 8, 11.5, 5.0)]
    assert feeds.stats.candles == 3


def test_binances_closed_flag_closes_the_candle_at_once_and_only_once() -> None:
    feeds, sink, (closed,) = candle_feeds("1m")

    def kline(t: int, c: float, v: float, final: bool) -> dict[str, Any]:
        return {
            "e": "kline",
            "E": t + 1_000,
            "s": "ETHUSDT",
            "k": {"t": t, "T": t + MINUTE - 1, "i": "1m", "x": final},
        }

    feeds._on_candle("ETH/USDT", "1m", row(T0, 10, 11, 9, 10.5, 2.0), kline(T0, 10.5, 2, False))
    feeds._on_candle("ETH/USDT", "1m", row(T0, 10, 12, 9, 11.0, 3.0), kline(T0, 11, 3, True))
    assert closed == [Bar(T0, 10, 12, 9, 11.0, 3.0)]
    nxt = T0 + MINUTE
    feeds._on_candle("ETH/USDT", "1m", row(nxt, 11, 11, 11, 11, 1.0), kline(nxt, 11, 1, False))
    assert closed == [Bar(T0, 10, 12, 9, 11.0, 3.0)]  # not closed a second time
    assert [c for _, c in sink.candles] == [False, True, False]


def test_coarser_bars_fold_one_minute_candles_without_double_counting() -> None:
    feeds, _, (ones, fives) = candle_feeds("1m", "5m")
    assert feeds.candle_streams == [("ETH/USDT", "1m")]  # one stream serves both
    for minute in range(6):
        t = T0 // (5 * MINUTE) * 5 * MINUTE + minute * MINUTE
        feeds._on_candle("ETH/USDT", "1m", row(t, 10 + minute, 20, 5, 11 + minute, 1.0), None)
        feeds._on_candle("ETH/USDT", "1m", row(t, 10 + minute, 21, 4, 12 + minute, 2.0), None)
    assert len(ones) == 5
    start = T0 // (5 * MINUTE) * 5 * MINUTE
    assert fives == [Bar(start, 10, 21, 4, 16, 10.0)]


def test_bad_candles_are_counted_and_skipped() -> None:
    feeds, sink, (closed,) = candle_feeds("1m")
    feeds._on_candle("ETH/USDT", "1m", row(T0, 10, 11, -1, 10, 1.0), None)
    feeds._on_candle("ETH/USDT", "1m", [T0, 10, 11], None)
    feeds._on_candle("ETH/USDT", "1m", row(T0, 10, 11, 9, 10, float("nan")), None)
    assert sink.bad == ["price not positive", "missing field", "bad amount"]
    assert sink.candles == [] and closed == []


@pytest.mark.parametrize(
    ("wanted", "stream"),
    [
        (["1m"], "1m"),
        (["1m", "5m", "1h"], "1m"),
        (["5m", "15m"], "5m"),
        (["1h", "1d"], "1h"),
        (["1d", "1w"], "1d"),
        (["1w"], "1w"),
        (["3m", "5m"], "1m"),
        ([], "1m"),
    ],
)
def test_one_candle_stream_serves_every_timeframe_of_a_feed(wanted, stream) -> None:
    offered = [Timeframe.parse(tf) for tf in ("1m", "3m", "5m", "15m", "1h", "4h", "1d", "1w")]
    got = candle_timeframe([Timeframe.parse(tf) for tf in wanted], offered)
    assert got is not None and got.name == stream


def test_a_feed_no_candle_fits_watches_trades() -> None:
    assert candle_timeframe([Timeframe.parse("7m")], [Timeframe.parse("5m")]) is None


async def test_the_tap_reads_candles_and_the_closed_flag_as_ccxt_parses_them() -> None:
    # the real ccxt.pro binance parser, fed kline events by hand (no replay runs)
    fake = FakeExchange(CAPTURES, speed=0.0)
    await fake.start()
    builders = [BarBuilder(Timeframe.parse("1m"))]
    closed: list[Bar] = []
    builders[0].subscribe(closed.append)
    sink = BuilderSink(builders)
    feed = CcxtFeedConfig(
        symbol="ETH/USDT", stream="ohlcv", ws_url=fake.ws_url, rest_url=fake.rest_url
    )
    feeds = ExchangeFeeds("binance", {"eth": feed}, sink, lambda name: builders)
    client = feeds._client
    try:
        await client.load_markets()
        ws = client.client(fake.ws_url + "/0")

        def kline(t: int, c: str, v: str, final: bool) -> dict[str, Any]:
            k = {
                "t": t,
                "T": t + MINUTE - 1,
                "s": "ETHUSDT",
                "i": "1m",
                "o": "10.0",
                "h": "12.0",
                "l": "9.0",
                "c": c,
                "v": v,
                "x": final,
            }
            return {
                "stream": "ethusdt@kline_1m",
                "data": {"e": "kline", "E": t + 2_000, "s": "ETHUSDT", "k": k},
            }

        client.handle_message(ws, kline(T0, "11.0", "1.5", False))
        client.handle_message(ws, kline(T0, "11.5", "4.0", True))
        client.handle_message(ws, kline(T0 + MINUTE, "11.5", "0.1", False))
    finally:
        await client.close()
        await fake.stop()
    assert closed == [Bar(T0, 10.0, 12.0, 9.0, 11.5, 4.0)]
    assert [c for _, c in sink.candles] == [False, True, False]
    assert feeds.stats.candles == 3


class MixedClient(NoClient):
    """A stand-in client whose candle watch fails while its trade watch waits on."""

    has: ClassVar[dict[str, bool]] = {"watchOHLCVForSymbols": True}

    def __init__(self) -> None:
        self.trades_cancelled = asyncio.Event()

    async def watch_trades(self, symbol: str) -> list:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.trades_cancelled.set()
            raise
        return []

    async def watch_ohlcv_for_symbols(self, pairs: list[list[str]]) -> dict:
        await asyncio.sleep(0.01)
        raise NetworkError("kline socket closed")


async def test_a_failing_candle_watch_ends_the_trade_watch_too_so_the_client_reconnects() -> None:
    client = MixedClient()
    configs = {
        "eth": CcxtFeedConfig(symbol="ETH/USDT", stream="ohlcv"),
        "btc": CcxtFeedConfig(symbol="BTC/USDT"),
    }
    feeds = ExchangeFeeds(
        "binance", configs, BuilderSink([]), lambda name: [], client_factory=lambda: client
    )
    assert feeds.candle_streams == [("ETH/USDT", "1m")]
    with pytest.raises(NetworkError, match="kline socket"):
        await asyncio.wait_for(feeds._stream(), 10)
    assert client.trades_cancelled.is_set()
