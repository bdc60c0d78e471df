"""Stream clocks and what the crypto feed does with a frame stamped ahead, at unit level."""

from __future__ import annotations

import asyncio
import time
from typing import Any, ClassVar

import ccxt
import pytest

from moodring.feeds.ccxt import CcxtFeedConfig
from moodring.feeds.ccxt.exchange import (
    OFFSET_EVERY,
    ExchangeFeeds,
    sequence_number,
    stream_name,
)
from moodring.feeds.clock import FUTURE_MS, StreamClock
from moodring.market.bar import Bar
from moodring.market.builder import BarBuilder
from moodring.market.timeframe import Timeframe
from tests.support.wait import until

MINUTE = 60_000


class Ticks:
    """A monotonic clock a test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_one_frame_stamped_ahead_does_not_move_the_clock() -> None:
    clock = StreamClock(Ticks())
    assert clock.read(5_000) == 5_000  # no frames yet: the exchange's clock
    clock.note(10_000, frame=1)
    clock.note(10_000 + 5 * MINUTE, frame=2)  # stamped 5 minutes ahead
    assert clock.read(0) == 10_000
    clock.note(10_050, frame=3)
    assert clock.read(0) == 10_050  # the earlier of the latest two frames
    clock.note(10_100, frame=4)
    clock.note(10_150, frame=5)
    assert clock.read(0) == 10_100
    assert clock.read(20_000) == 20_000  # never behind the exchange's clock


def test_a_stream_running_ahead_moves_the_clock_frame_by_frame() -> None:
    ticks = Ticks()
    clock = StreamClock(ticks)
    for frame, t in enumerate((10_000, 70_000, 70_001, 130_000)):
        clock.note(t, frame)
    assert clock.read(0) == 70_001
    ticks.now += 2.0
    assert clock.read(0) == 72_001  # moved on by the wall time since


def test_items_of_one_frame_do_not_confirm_each_other() -> None:
    clock = StreamClock(Ticks())
    clock.note(10_000, frame=1)
    clock.note(10_010, frame=2)
    clock.note(10_000 + MINUTE, frame=3)
    clock.note(10_000 + MINUTE + 5, frame=3)
    assert clock.read(0) == 10_010


@pytest.mark.parametrize(
    ("trade_id", "number"),
    [
        ("1520538925", 1520538925),
        (17, 17),
        ("x17", None),
        ("-5", None),
        ("1_000", None),
        (None, None),
        (True, None),
        ("١٢", None),
    ],
)
def test_only_plain_numbers_are_sequence_numbers(trade_id: object, number: int | None) -> None:
    assert sequence_number(trade_id) == number


# ---------------------------------------------------------------------- the feed


class Sink:
    """A feed sink that builds bars from trades and candles and keeps what it got."""

    def __init__(self, builders: dict[str, list[BarBuilder]]) -> None:
        self.builders = builders
        self.trades: list[tuple[str, int, object]] = []
        self.bad: list[tuple[str, str]] = []

    def trade(self, feed: str, t_ms: int, price: float, amount: float, trade_id: object) -> None:
        self.trades.append((feed, t_ms, trade_id))
        for builder in self.builders[feed]:
            builder.add_trade(t_ms, price, amount, trade_id)

    def candle(self, feed: str, bar: Bar, *, closed: bool, length_ms: int) -> None:
        for builder in self.builders[feed]:
            builder.add_candle(bar.time, *bar[1:], closed=closed, length_ms=length_ms)

    def history(self, feed: str, bars: Any, *, length_ms: int) -> None:
        pass

    def state(self, feed: str, state: Any, t_ms: int) -> None:
        pass

    def bad_frame(self, feed: str, reason: str, detail: str) -> None:
        self.bad.append((feed, reason))


class Client:
    """A stand-in ccxt client: the tests call the handlers; REST klines come from ``klines``."""

    has: ClassVar[dict[str, bool]] = {}
    timeframes: ClassVar[dict[str, str]] = {"1m": "1m"}

    def __init__(self) -> None:
        self.klines: list[list[float]] = []
        self.fetched: list[int] = []
        self.options: dict[str, Any] = {}
        self.markets: dict[str, Any] = {"ETH/USDT": {}, "BTC/USDT": {}}

    async def load_markets(self, reload: bool = False, params: object = None) -> None:
        await asyncio.Event().wait()  # never connects: the tests call the handlers

    async def fetch_ohlcv(self, symbol: str, timeframe: str, since: int, limit: int) -> list:
        self.fetched.append(since)
        return [row for row in self.klines if row[0] >= since][:limit]

    async def close(self) -> None:
        pass


class Feeds:
    """An ExchangeFeeds of ``eth`` (trades or candles) and ``btc`` (trades), 1m bars each."""

    def __init__(self, eth_stream: str = "trades") -> None:
        self.builders = {f: [BarBuilder(Timeframe.parse("1m"))] for f in ("eth", "btc")}
        self.closed: list[Bar] = []
        self.builders["eth"][0].subscribe(self.closed.append)
        self.sink = Sink(self.builders)
        self.client = Client()
        configs = {
            "eth": CcxtFeedConfig(symbol="ETH/USDT", stream=eth_stream),
            "btc": CcxtFeedConfig(symbol="BTC/USDT"),
        }
        self.feeds = ExchangeFeeds(
            "binance",
            configs,
            self.sink,
            self.builders.__getitem__,
            client_factory=lambda: self.client,
        )

    def at(self, t_ms: int) -> None:
        """Set the exchange's clock (as a measured server time would)."""
        self.feeds._offset_ms = t_ms - int(time.time() * 1000)

    def trade(
        self, t_ms: int, trade_id: object, symbol: str = "ETH/USDT", price: float = 10.0
    ) -> None:
        """Receive one websocket frame holding one trade."""
        self.feeds._on_frame()
        self.feeds._on_trade(
            {
                "symbol": symbol,
                "timestamp": t_ms,
                "price": price,
                "amount": 1.0,
                "id": trade_id,
                "info": {"t": trade_id},
            }
        )

    def ids(self, feed: str = "eth") -> list[object]:
        return [i for f, _, i in self.sink.trades if f == feed]


NOW = int(time.time() * 1000) // MINUTE * MINUTE - 10 * MINUTE  # a minute's start


def test_a_trade_far_ahead_contradicted_by_the_next_frame_is_skipped_and_moves_nothing() -> None:
    f = Feeds()
    f.at(NOW)
    f.trade(NOW + 1_000, "1", "BTC/USDT")
    f.trade(NOW + 1_000, "1")
    f.trade(NOW + 1_000 + 5 * MINUTE, "2")  # 5 minutes ahead: waits for the next frame
    assert f.ids() == ["1"]
    f.trade(NOW + 1_100, "2")
    f.trade(NOW + 1_100 + 30_000, "3")  # 30 s ahead
    f.trade(NOW + 1_200, "3")
    assert f.ids() == ["1", "2", "3"]
    assert f.sink.bad == [("eth", "timestamp in the future")] * 2
    assert f.feeds.clock_ms("eth") < NOW + 10_000
    assert f.feeds.clock_ms("btc") < NOW + 10_000
    assert f.feeds.stats.missed == 0 and not f.builders["eth"][0].hold_through >= 0


def test_a_jump_the_next_frame_confirms_is_followed_in_order() -> None:
    f = Feeds()
    f.at(NOW)
    for i, t in enumerate((1_000, MINUTE + 1_000, MINUTE + 1_050, MINUTE + 1_100)):
        f.trade(NOW + t, str(i))
    assert f.ids() == ["0", "1", "2", "3"] and f.sink.bad == []
    assert f.feeds.clock_ms("eth") >= NOW + MINUTE + 1_050
    assert f.feeds.clock_ms("btc") < NOW + 10_000  # another stream, another clock
    assert f.closed == [Bar(NOW, 10, 10, 10, 10, 1.0)]  # a confirmed jump needs no repair


def test_items_of_one_frame_cannot_confirm_each_other() -> None:
    f = Feeds()
    f.at(NOW)
    f.trade(NOW + 1_000, "1")
    f.feeds._on_frame()
    for trade_id in ("2", "3"):  # one frame, two trades stamped a minute ahead
        f.feeds._on_trade(
            {
                "symbol": "ETH/USDT",
                "timestamp": NOW + MINUTE,
                "price": 10.0,
                "amount": 1.0,
                "id": trade_id,
                "info": {},
            }
        )
    f.trade(NOW + 1_100, "4")
    assert f.ids() == ["1", "4"]
    assert f.sink.bad == [("eth", "timestamp in the future")] * 2


def test_a_trade_that_confirms_its_own_waiting_copy_is_taken_once() -> None:
    # the builders keep no ids of a numbered feed: the feed itself must drop the copy
    f = Feeds()
    f.at(NOW)
    f.trade(NOW + 1_000, "1")
    f.trade(NOW + 1_000 + 5 * MINUTE, "2")  # waits for the next frame
    f.trade(NOW + 1_000 + 5 * MINUTE, "2")  # re-sent: confirms the first, then is a copy
    f.trade(NOW + 1_000 + 5 * MINUTE, "3")
    assert f.ids() == ["1", "2", "3"] and f.sink.bad == []
    assert f.feeds.stats.duplicates == 1 and f.feeds.stats.trades == 3


def test_a_waiting_trade_goes_on_once_the_clock_catches_up() -> None:
    f = Feeds()
    f.at(NOW)
    f.trade(NOW + 1_000, "1")
    f.trade(NOW + 1_000 + FUTURE_MS + 2_000, "2")
    f.feeds.on_clock()
    assert f.ids() == ["1"]
    f.at(NOW + 3_000)  # the exchange's clock moved on; no other frame came
    f.feeds.on_clock()
    assert f.ids() == ["1", "2"] and f.sink.bad == []


async def test_a_trade_waiting_when_the_connection_drops_does_not_end_the_gap() -> None:
    # it came before the gap: taken after it, it would end the gap at its own bar, and the
    # next bar, whose trades the gap took, would be released as built instead of repaired
    f = Feeds()
    f.client.klines = [[NOW, 10, 10, 9.5, 9.5, 2.0], [NOW + MINUTE, 11, 12, 11, 12, 2.0]]
    f.at(NOW)
    f.trade(NOW + 1_000, "1")
    f.trade(NOW + 1_000 + FUTURE_MS + 2_000, "2")  # waits for the next frame
    f.feeds._gap_begins()  # the connection dropped
    f.at(NOW + 2 * MINUTE + 2_000)
    async with f.feeds:  # repairs are tasks of the running feeds
        f.trade(NOW + MINUTE + 30_000, "3")  # the first after the gap, which took the others
        await until(lambda: len(f.closed) == 1, "the first bar repaired", timeout=10)
        f.trade(NOW + 2 * MINUTE + 1_000, "4")
        assert f.ids() == ["1", "3", "4"]
        await until(lambda: len(f.closed) == 2, "the second bar", timeout=10)
    assert f.closed == [Bar(NOW, 10, 10, 9.5, 9.5, 2.0), Bar(NOW + MINUTE, 11, 12, 11, 12, 2.0)]


def test_a_numbered_feed_refuses_a_garbled_id_and_unnumbered_ones_are_not_checked() -> None:
    f = Feeds()
    f.at(NOW)
    f.trade(NOW + 1_000, "100")
    f.trade(NOW + 1_010, "x101")
    f.trade(NOW + 1_020, None)
    f.trade(NOW + 1_030, "101")
    f.trade(NOW + 1_000, "5f0c-uuid", "BTC/USDT")  # an exchange whose ids are not numbers
    f.trade(NOW + 1_010, "77aa-uuid", "BTC/USDT")
    assert f.ids() == ["100", "101"]
    assert f.sink.bad == [("eth", "bad trade id")] * 2
    assert f.ids("btc") == ["5f0c-uuid", "77aa-uuid"]
    assert f.feeds.stats.missed == 0


async def test_a_bar_closed_by_a_trade_a_little_ahead_is_released_once_its_minute_is_over() -> None:
    f = Feeds()
    f.at(NOW + 58_000)
    f.trade(NOW + 57_000, "1", price=10.0)
    f.trade(NOW + 61_000, "2", price=11.0)  # 3 s ahead: it closes its bar, maybe early
    assert f.closed == []  # held until the stream's clock has passed the minute
    f.trade(NOW + 61_100, "3", price=12.0)  # the stream goes on past it: the bar was whole
    assert f.closed == [Bar(NOW, 10, 10, 10, 10, 1.0)]
    f.at(NOW + 125_000)
    f.trade(NOW + 121_000, "4", price=13.0)
    assert f.closed[1:] == [Bar(NOW + MINUTE, 11, 12, 11, 12, 2.0)]
    assert f.client.fetched == []  # nothing came late: no REST call


async def test_a_bar_closed_early_is_repaired_from_rest_when_trades_of_it_come_late() -> None:
    f = Feeds()
    f.client.klines = [[NOW, 10, 10, 9.5, 9.5, 2.0], [NOW + MINUTE, 11, 12, 11, 12, 2.0]]
    f.at(NOW + 58_000)
    f.trade(NOW + 57_000, "1", price=10.0)
    f.trade(NOW + 61_000, "2", price=11.0)  # 3 s ahead: it closes its bar early
    f.trade(NOW + 59_500, "3", price=9.5)  # a trade of the closed bar, late
    f.trade(NOW + 61_500, "4", price=12.0)
    assert f.closed == []  # the clock confirmed 59.5 s only: the minute is not over yet
    async with f.feeds:  # the repair is a task of the running feeds
        f.trade(NOW + 62_000, "5", price=12.0)
        repairs = list(f.feeds._repairs.values())
        assert repairs and repairs[0].task is not None
        await asyncio.wait_for(repairs[0].task, 10)
    assert f.client.fetched == [NOW]
    assert f.closed == [Bar(NOW, 10, 10, 9.5, 9.5, 2.0)]  # the exchange's own bar


def test_a_candle_stream_follows_event_times_two_frames_agree_on() -> None:
    f = Feeds(eth_stream="ohlcv")
    f.at(NOW)

    def kline(t: int, event_ms: int) -> None:
        f.feeds._on_frame()
        raw = {"e": "kline", "E": event_ms, "k": {"t": t, "x": False}}
        f.feeds._on_candle("ETH/USDT", "1m", [t, 10, 11, 9, 10, 1.0], raw)

    kline(NOW + MINUTE, NOW + MINUTE + 1_000)
    assert f.feeds.clock_ms("eth") < NOW + 10_000  # one frame moves nothing
    kline(NOW + MINUTE, NOW + MINUTE + 2_000)
    assert f.feeds.clock_ms("eth") >= NOW + MINUTE + 1_000
    kline(NOW + 9 * MINUTE, NOW + 9 * MINUTE)  # 8 minutes ahead, then contradicted
    kline(NOW + MINUTE, NOW + MINUTE + 3_000)
    assert f.sink.bad == [("eth", "timestamp in the future")]
    assert f.feeds.clock_ms("eth") < NOW + 2 * MINUTE


@pytest.mark.parametrize(
    ("frame", "feed"),
    [
        ('{"stream":"ethusdt@trade","data":{"e":"trade","E":', "eth"),  # cut short
        (b'{"stream":"btcusdt@trade","data":{"e":"trade","p":"NaN"}}', "btc"),
        ('{"topic":"publicTrade.ETHUSDT","data":[{"T":', "eth"),  # a Bybit topic
        ({"stream": "trade::BTC/USDT"}, "btc"),  # a ccxt message hash
        ('{"e":"trade","E":1,"s":"ETHUSDT","p":"x"}', "eth"),  # a raw (unwrapped) event
        ('{"stream":"xrpusdt@trade","data":{}}', "binance"),  # no feed of that market
        ("not json at all", "binance"),
        (b"\xff\xfe", "binance"),
    ],
)
def test_a_bad_frame_counts_against_the_feed_its_stream_names(frame: object, feed: str) -> None:
    f = Feeds()
    f.feeds._bad_frame("unreadable frame (ValueError)", frame)
    assert f.sink.bad == [(feed, "unreadable frame (ValueError)")]


def test_stream_names_are_read_from_text_that_does_not_parse() -> None:
    assert stream_name('{"stream":"ethusdt@kline_1m","data":{"k":') == "ethusdt@kline_1m"
    assert stream_name({"topic": "publicTrade.BTCUSDT"}) == "publicTrade.BTCUSDT"
    assert stream_name("[1, 2, 3]") is None


async def test_a_cancel_that_comes_as_a_watch_answers_stops_the_feed() -> None:
    # asyncio.wait_for on 3.11 returns the answer and loses a cancel that comes with it
    f = Feeds()
    answered = asyncio.Event()
    calls = 0

    async def watch() -> None:
        nonlocal calls
        calls += 1
        await (answered.wait() if calls == 1 else asyncio.Event().wait())

    keep = asyncio.create_task(f.feeds._keep(watch))
    await asyncio.sleep(0.01)
    answered.set()  # the watch answers and the cancel comes in the same loop iteration
    keep.cancel()
    await asyncio.wait({keep}, timeout=10)
    assert keep.cancelled() and calls == 1


def test_a_thin_streams_trade_at_the_time_busy_streams_show_is_on_time() -> None:
    f = Feeds()
    f.at(NOW)  # the offset measured at connect: the exchange's clock has stepped since
    f.trade(NOW + 1_000, "1", price=10.0)  # ETH trades thinly
    for i, t in enumerate((59_000, 60_500, 61_000)):  # BTC trades on, a minute later
        f.trade(NOW + t, str(i), "BTC/USDT")
    f.trade(NOW + 60_900, "2", price=11.0)  # ETH's next trade closes its bar: on time
    assert f.ids() == ["1", "2"] and f.sink.bad == []
    assert f.closed == [Bar(NOW, 10, 10, 10, 10, 1.0)]  # at once: neither waiting nor held
    assert f.client.fetched == []


async def test_the_clock_offset_is_kept_when_the_exchange_stops_telling_its_time() -> None:
    f = Feeds()
    replay_ms = NOW - 400 * 24 * 60 * MINUTE  # a replay: the exchange's clock is a year behind
    told = [replay_ms]

    async def load_markets(reload: bool = False, params: object = None) -> None:
        pass

    async def fetch_time() -> int:
        if told:
            return told.pop()
        raise ccxt.RequestTimeout("binance GET /api/v3/time timed out")

    f.client.load_markets = load_markets  # type: ignore[method-assign]
    f.client.fetch_time = fetch_time  # type: ignore[attr-defined]
    await f.feeds._connect()
    assert abs(f.feeds.now_ms() - replay_ms) < 60_000
    f.feeds._offset_at = -OFFSET_EVERY  # due to be measured again at this reconnect
    await f.feeds._connect()
    assert abs(f.feeds.now_ms() - replay_ms) < 60_000, "the local clock is not the exchange's"
