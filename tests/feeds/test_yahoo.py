"""Yahoo feed: PricingData decoding, the streamer against a local server, chart history."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import struct
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest
from aiohttp import web
from websockets.asyncio.server import ServerConnection, serve

from moodring.feeds.streamer import EquityStreamer
from moodring.feeds.yahoo.history import HistoryError, fetch_history, parse_chart
from moodring.feeds.yahoo.stream import FrameError, YahooStreamer, decode_pricing, frame_payload
from moodring.market.calendar import MarketCalendar
from tests.support.wait import until
from tests.support.webapp import serving
from tests.support.yahoo import (
    RUT_FIELDS,
    RecordingSink,
    StubCalendar,
    b64,
    f32,
    fast_backoff,
    pricing,
    tag,
    varint,
)

# --- decoding ------------------------------------------------------------------------------


def test_decode_real_looking_rut_frame() -> None:
    frame = json.dumps({"type": "pricing", "message": b64(pricing(**RUT_FIELDS))})
    payload = frame_payload(frame)
    assert payload is not None
    tick = decode_pricing(payload)
    assert tick.id == "^RUT"
    assert tick.price == f32(2663.78)
    assert tick.time_ms == 1771621200000
    assert tick.day_volume == 5432480000
    assert (tick.quote_type, tick.market_hours) == (9, 1)
    assert tick.change_percent == f32(-0.0491)
    assert (tick.day_high, tick.day_low) == (f32(2682.42), f32(2642.07))
    assert tick.change == f32(-1.31)
    assert (tick.currency, tick.exchange, tick.short_name) == ("USD", "WCB", "Russell 2000")
    assert (tick.open_price, tick.previous_close) == (f32(2660.29), f32(2665.09))
    assert tick.price_hint == 2
    # The same message as bytes, and without base64 padding.
    assert decode_pricing(payload.encode()) == tick
    assert decode_pricing(payload.rstrip("=")) == tick


def test_decode_negative_values() -> None:
    raw = pricing(
        id="X",
        price=-3.5,
        time=-1234567890123,
        day_volume=-1,
        quote_type=-3,
        market_hours=-1,
        change=-0.25,
        market_cap=-2.5e12,
        last_size=-(2**62),
    )
    tick = decode_pricing(b64(raw))
    assert (tick.price, tick.time_ms, tick.day_volume) == (-3.5, -1234567890123, -1)
    assert (tick.quote_type, tick.market_hours) == (-3, -1)
    assert (tick.change, tick.market_cap, tick.last_size) == (-0.25, -2.5e12, -(2**62))


def test_decode_skips_unknown_fields_of_every_wire_type() -> None:
    raw = (
        tag(99, 0)
        + varint(2**63 + 5)
        + pricing(id="^RUT")
        + tag(100, 1)
        + struct.pack("<d", 1.5)
        + tag(101, 2)
        + varint(6)
        + b"\x12\x04\x00\x00\x00\x00"  # bytes that look like a price field
        + pricing(price=2000.5)
        + tag(102, 5)
        + b"\xff\xff\xff\xff"
        + tag(32, 1)  # known field the tick does not keep (circulating_supply)
        + struct.pack("<d", 7.0)
        + tag(5000, 2)
        + varint(0)
        + pricing(time=1771621200000, day_volume=42)
    )
    tick = decode_pricing(b64(raw))
    assert (tick.id, tick.price, tick.time_ms, tick.day_volume) == (
        "^RUT",
        2000.5,
        1771621200000,
        42,
    )


def test_decode_defaults_and_last_value_wins() -> None:
    empty = decode_pricing("")
    assert (empty.id, empty.price, empty.time_ms, empty.day_volume) == ("", 0.0, 0, 0)
    tick = decode_pricing(b64(pricing(price=1.0) + pricing(price=2.0)))
    assert tick.price == 2.0


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ("@@not base64@@", "base64"),
        ("abcde", "base64"),
        ("ÿÿÿÿ", "base64"),
        (b64(b"\x18\xff\xff"), "truncated"),  # time: varint never ends
        (b64(b"\x0a\x05ab"), "truncated"),  # id: 5 bytes announced, 2 present
        (b64(b"\x15\x00\x00"), "truncated"),  # price: fixed32 cut short
        (b64(tag(96, 1) + b"\x00\x00"), "truncated"),  # unknown fixed64 cut short
        (b64(tag(2, 0) + varint(5)), "wire_type"),  # price sent as a varint
        (b64(tag(1, 5) + b"\x00\x00\x00\x00"), "wire_type"),  # id sent as fixed32
        (b64(tag(9, 2) + varint(1) + b"1"), "wire_type"),  # day_volume as a string
        (b64(tag(7, 3)), "wire_type"),  # group start
        (b64(tag(70, 7)), "wire_type"),  # no such wire type
        (b64(b"\x00\x01"), "protobuf"),  # field number 0
        (b64(b"\x18" + b"\xff" * 11 + b"\x01"), "protobuf"),  # varint over 10 bytes
        (b64(tag(1, 2) + varint(2) + b"\xc3\x28"), "utf8"),
    ],
)
def test_decode_errors(payload: str, reason: str) -> None:
    with pytest.raises(FrameError) as info:
        decode_pricing(payload)
    assert info.value.reason == reason
    assert isinstance(info.value, ValueError)


def test_frame_payload_shapes() -> None:
    assert frame_payload('{"message": "CgReUlVU"}') == "CgReUlVU"
    assert frame_payload(b'{"message": "CgReUlVU"}') == "CgReUlVU"
    assert frame_payload("CgReUlVU\n") == "CgReUlVU"
    assert frame_payload('{"type": "heartbeat"}') is None
    for bad, reason in [
        ("{nope", "json"),
        ("[1, 2]", "json"),
        ('{"message": 5}', "json"),
        (b"\xff\xfe", "encoding"),
    ]:
        with pytest.raises(FrameError) as info:
            frame_payload(bad)
        assert info.value.reason == reason


# --- the streamer against a local server ----------------------------------------------------


class FakeStreamer:
    """Speaks the streamer protocol: one script of steps per connection, in order."""

    def __init__(self, *scripts: list[tuple[Any, ...]]) -> None:
        self.scripts = list(scripts)
        self.subscribes: list[Any] = []
        self.connections = 0

    async def handler(self, ws: ServerConnection) -> None:
        index = self.connections
        self.connections += 1
        script = self.scripts[index] if index < len(self.scripts) else []
        self.subscribes.append(json.loads(await ws.recv()))
        for step in script:
            if step[0] == "send":
                await ws.send(step[1])
            elif step[0] == "sleep":
                await asyncio.sleep(step[1])
            elif step[0] == "hold":  # hold up the whole event loop, as a busy machine may
                time.sleep(step[1])
            elif step[0] == "close":
                await ws.close()
                return
        with contextlib.suppress(Exception):
            async for message in ws:  # stay connected; take keep-alive subscribes
                self.subscribes.append(json.loads(message))


@contextlib.asynccontextmanager
async def streamer_server(fake: FakeStreamer) -> AsyncIterator[str]:
    async with serve(fake.handler, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        yield f"ws://127.0.0.1:{port}/?version=2"


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()) * 1000


def tick_frame(t: str, price: float, volume: int, symbol: str = "^RUT") -> str:
    raw = pricing(
        id=symbol, price=price, time=ms(t), quote_type=9, market_hours=1, day_volume=volume
    )
    return json.dumps({"type": "pricing", "message": b64(raw)})


async def test_ticks_volume_deltas_and_bad_frames() -> None:
    frames = [
        tick_frame("2026-02-19T15:00:00", 2650.5, 1_000_000),  # first of the day: 0
        tick_frame("2026-02-19T15:00:05", 2651.25, 1_500_000),  # +500 000
        tick_frame("2026-02-19T15:00:06", 5000.0, 9_000_000, symbol="^GSPC"),  # ignored
        json.dumps({"message": "@@@not-base64@@@"}),
        json.dumps({"message": b64(b"\xff\xff\xff")}),  # garbage: truncated varint
        json.dumps({"message": b64(b"\x0f\x01\x02")}),  # garbage: wire type 7
        "{this is not json",
        tick_frame("2026-02-19T15:00:07", 0.0, 1_600_000),  # price 0
        json.dumps({"message": b64(pricing(id="^RUT", price=math.nan, time=ms("2026-02-19")))}),
        json.dumps({"message": b64(pricing(id="^RUT", price=2651.0, time=1771513207))}),  # s
        tick_frame("2026-02-19T15:00:10", 2649.75, 1_400_000),  # volume backwards: 0
        json.dumps({"type": "heartbeat"}),
        b64(pricing(id="^RUT", price=2652.0, time=ms("2026-02-19T15:00:12"), day_volume=1_600_000)),
        tick_frame("2026-02-20T14:31:00", 2660.25, 300_000),  # new day: 0
        tick_frame("2026-02-20T14:31:02", 2661.5, 450_000),  # +150 000
    ]
    fake = FakeStreamer([("send", f) for f in frames])
    sink = RecordingSink()
    async with streamer_server(fake) as url:
        streamer = YahooStreamer("rut", "^RUT", sink, url=url, backoff=fast_backoff())
        async with streamer:
            await until(lambda: len(sink.trades) == 6, "six trades")
    assert fake.subscribes[0] == {"subscribe": ["^RUT"]}
    assert [(t, p, v) for _, t, p, v in sink.trades] == [
        (ms("2026-02-19T15:00:00"), 2650.5, 0.0),
        (ms("2026-02-19T15:00:05"), 2651.25, 500_000.0),
        (ms("2026-02-19T15:00:10"), 2649.75, 0.0),
        (ms("2026-02-19T15:00:12"), 2652.0, 100_000.0),
        (ms("2026-02-20T14:31:00"), 2660.25, 0.0),
        (ms("2026-02-20T14:31:02"), 2661.5, 150_000.0),
    ]
    assert {t[0] for t in sink.trades} == {"rut"}
    assert dict(streamer.bad_frames) == {
        "base64": 1,
        "truncated": 1,
        "wire_type": 1,
        "json": 1,
        "price": 2,
        "time": 1,
    }
    assert sorted(reason for reason, _ in sink.bad) == sorted(streamer.bad_frames.elements())
    assert dict(streamer.ignored) == {"symbol": 1, "control": 1}
    assert streamer.ticks == 6
    assert streamer.reconnects == 0
    assert sink.states == ["ok"]  # no calendar: always in session
    counters = streamer.counters()
    assert counters["ticks"] == 6 and counters["bad_frames"]["price"] == 2


def seen(streamer: EquityStreamer) -> int:
    """Count the frames a streamer has taken: ticks, bad frames and ignored ones."""
    return streamer.ticks + sum(streamer.bad_frames.values()) + sum(streamer.ignored.values())


async def test_heartbeats_are_control_frames_not_bad_prices() -> None:
    # Yahoo's heartbeat is a PricingData of quote type HEARTBEAT (7): no price, the symbol's id
    beat = pricing(id="^RUT", time=ms("2026-02-19T22:00:00"), quote_type=7)
    heartbeat = json.dumps({"type": "pricing", "message": b64(beat)})
    frames = [heartbeat, tick_frame("2026-02-19T15:00:00", 2650.5, 1_000_000), heartbeat]
    fake = FakeStreamer([("send", f) for f in frames])
    sink = RecordingSink()
    async with streamer_server(fake) as url:
        streamer = YahooStreamer("rut", "^RUT", sink, url=url, backoff=fast_backoff())
        async with streamer:
            await until(lambda: seen(streamer) == 3, "two heartbeats and a tick")
    assert streamer.ignored["control"] == 2
    assert [p for _, _, p, _ in sink.trades] == [2650.5]
    assert dict(streamer.bad_frames) == {} and sink.bad == []


async def test_cancelling_a_busy_streamer_ends_it() -> None:
    # asyncio.wait_for on Python 3.11 swallows a cancellation that arrives as the frame it
    # waits for comes in: under a steady stream the streamer then never stopped
    start = ms("2026-02-19T15:00:00")
    frames = [
        json.dumps({"message": b64(pricing(id="^RUT", price=2650.0 + i % 7, time=start + i))})
        for i in range(5_000)
    ]
    fake = FakeStreamer([("send", f) for f in frames])
    async with streamer_server(fake) as url:
        sink = RecordingSink()
        # timeout 1 s: closing a flooded socket waits that long for the close handshake
        streamer = YahooStreamer("rut", "^RUT", sink, url=url, timeout=1.0, backoff=fast_backoff())
        task = asyncio.create_task(streamer.run())
        await until(lambda: streamer.ticks >= 500, "a busy stream")
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=30)  # the bound turns a hang into a failure
        while not task.done():  # clean up after a failure
            task.cancel()
            await asyncio.sleep(0.01)
    assert task in done and task.cancelled()
    assert streamer.ticks < len(frames)


async def test_a_frame_that_came_while_the_loop_was_held_up_is_read_not_taken_for_silence():
    # the loop held up past the 1 s timeout as a frame came in: the frame and the time-out
    # of the read waiting for it fall due together; the frame is read, the connection kept
    frames = [tick_frame(f"2026-02-19T15:00:0{i}", 2650.0 + i, 1_000_000 + i) for i in range(3)]
    script = [("send", frames[0]), ("sleep", 0.3), ("send", frames[1]), ("hold", 1.5)]
    fake = FakeStreamer([*script, ("sleep", 0.3), ("send", frames[2])])
    async with streamer_server(fake) as url:
        sink = RecordingSink()
        streamer = YahooStreamer("rut", "^RUT", sink, url=url, timeout=1.0, backoff=fast_backoff())
        async with streamer:
            await until(lambda: streamer.ticks == 3, "three ticks")
    assert (streamer.connects, streamer.reconnects) == (1, 0)
    assert [p for _, _, p, _ in sink.trades] == [2650.0, 2651.0, 2652.0]


async def test_reconnects_after_server_close_and_keeps_counting_volume() -> None:
    fake = FakeStreamer(
        [
            ("send", tick_frame("2026-02-19T15:00:00", 2650.5, 1_000_000)),
            ("send", tick_frame("2026-02-19T15:00:01", 2651.0, 1_200_000)),
            ("close",),
        ],
        [
            ("send", tick_frame("2026-02-19T15:00:30", 2652.5, 1_250_000)),
            ("send", tick_frame("2026-02-19T15:00:31", 2653.0, 1_300_000)),
        ],
    )
    sink = RecordingSink()
    async with streamer_server(fake) as url:
        streamer = YahooStreamer("rut", "^RUT", sink, url=url, backoff=fast_backoff())
        async with streamer:
            await until(lambda: len(sink.trades) == 4, "four trades over two connections")
    assert fake.connections == 2
    assert fake.subscribes[:2] == [{"subscribe": ["^RUT"]}] * 2
    assert streamer.reconnects == 1
    assert streamer.connects == 2
    assert [(p, v) for _, _, p, v in sink.trades] == [
        (2650.5, 0.0),
        (2651.0, 200_000.0),
        (2652.5, 50_000.0),  # the day's volume mark survives the reconnect
        (2653.0, 50_000.0),
    ]


async def test_reconnects_when_no_server() -> None:
    sink = RecordingSink()
    async with streamer_server(FakeStreamer()) as url:
        pass  # the port is closed again: connections are refused
    streamer = YahooStreamer("rut", "^RUT", sink, url=url, backoff=fast_backoff(), timeout=2)
    async with streamer:
        await until(lambda: streamer.reconnects >= 3, "three reconnect attempts")
    assert streamer.connects == 0
    assert sink.trades == []


async def test_stale_in_session_forces_reconnect() -> None:
    fake = FakeStreamer(
        [("send", tick_frame("2026-02-19T15:00:00", 2650.5, 1_000_000))],  # then silence
        [],  # silent again
        [("send", tick_frame("2026-02-19T15:05:00", 2655.0, 1_100_000))],
    )
    sink = RecordingSink()
    async with streamer_server(fake) as url:
        streamer = YahooStreamer(
            "rut",
            "^RUT",
            sink,
            url=url,
            calendar=StubCalendar(True),
            stale_after=0.3,
            timeout=10.0,
            backoff=fast_backoff(),
        )
        async with streamer:
            await until(lambda: len(sink.trades) == 2, "a tick after the stale reconnects")
    assert sink.states == ["ok", "stale", "ok"]
    assert fake.connections == 3
    assert streamer.reconnects == 2
    assert [v for *_, v in sink.trades] == [0.0, 100_000.0]


async def test_silent_socket_while_closed_is_normal_then_stale_at_open() -> None:
    calendar = StubCalendar(False)
    fake = FakeStreamer([])  # connected, never a frame
    sink = RecordingSink()
    async with streamer_server(fake) as url:
        streamer = YahooStreamer(
            "rut",
            "^RUT",
            sink,
            url=url,
            calendar=calendar,
            stale_after=0.2,
            timeout=0.2,
            backoff=fast_backoff(),
        )
        async with streamer:
            await until(lambda: sink.states == ["closed"], "closed state")
            await asyncio.sleep(1.0)  # five receive timeouts of silence
            assert fake.connections == 1
            assert streamer.reconnects == 0
            assert sink.states == ["closed"]
            calendar.open = True  # the session opens; still no ticks
            await until(lambda: fake.connections >= 2, "a reconnect after the open")
            await until(lambda: "stale" in sink.states, "stale state")
    assert sink.states[:2] == ["closed", "stale"]


async def test_real_calendar_with_injected_clock() -> None:
    saturday = ms("2024-11-30T15:00:00") / 1000
    fake = FakeStreamer([])
    sink = RecordingSink()
    async with streamer_server(fake) as url:
        streamer = YahooStreamer(
            "rut",
            "^RUT",
            sink,
            url=url,
            calendar=MarketCalendar(),
            stale_after=0.1,
            timeout=0.1,
            backoff=fast_backoff(),
            clock=lambda: saturday,
        )
        async with streamer:
            await until(lambda: sink.states == ["closed"], "closed on a Saturday")
            await asyncio.sleep(0.5)
    assert sink.state_times == [ms("2024-11-30T15:00:00")]
    assert fake.connections == 1


# --- chart history --------------------------------------------------------------------------

# ^RUT daily values from shared/data/daily/yahoo_alitalbi/RUT.csv (Date,Close,High,Low,Open,Volume),
# stamped as the chart API stamps daily bars: the 09:30 New York open, in epoch seconds.
RUT_ROWS = [
    # timestamp, open, high, low, close, volume
    (1770906600, 2684.989990234375, 2692.77001953125, 2604.5, 2615.830078125, 7118700000),
    (
        1770993000,
        2620.139892578125,
        2668.2900390625,
        2610.340087890625,
        2646.699951171875,
        5718360000,
    ),
    (
        1771338600,
        2644.199951171875,
        2659.4599609375,
        2611.340087890625,
        2646.590087890625,
        5418480000,
    ),
    (1771425000, None, None, None, None, None),  # Yahoo leaves holes as nulls
    (
        1771511400,
        2648.10009765625,
        2665.219970703125,
        2637.580078125,
        2665.090087890625,
        5151690000,
    ),
    (1771597800, 2660.2900390625, 2682.419921875, 2642.070068359375, 2663.780029296875, 5432480000),
]


def chart_json(rows: list[tuple[Any, ...]], **meta: Any) -> dict[str, Any]:
    base_meta = {
        "currency": "USD",
        "symbol": "^RUT",
        "exchangeName": "WCB",
        "fullExchangeName": "Chicago Options",
        "instrumentType": "INDEX",
        "firstTradeDate": 558279000,
        "regularMarketTime": 1771621200,
        "hasPrePostMarketData": False,
        "gmtoffset": -18000,
        "timezone": "EST",
        "exchangeTimezoneName": "America/New_York",
        "regularMarketPrice": 2663.78,
        "chartPreviousClose": 2646.7,
        "priceHint": 2,
        "dataGranularity": "1d",
        "range": "6mo",
        "validRanges": ["1d", "5d", "1mo", "3mo", "6mo", "1y", "2y", "5y", "10y", "ytd", "max"],
    }
    base_meta.update(meta)
    return {
        "chart": {
            "result": [
                {
                    "meta": base_meta,
                    "timestamp": [r[0] for r in rows],
                    "indicators": {
                        "quote": [
                            {
                                "open": [r[1] for r in rows],
                                "high": [r[2] for r in rows],
                                "low": [r[3] for r in rows],
                                "close": [r[4] for r in rows],
                                "volume": [r[5] for r in rows],
                            }
                        ],
                        "adjclose": [{"adjclose": [r[4] for r in rows]}],
                    },
                }
            ],
            "error": None,
        }
    }


@pytest.fixture
async def chart_server() -> AsyncIterator[tuple[str, list[web.Request]]]:
    seen: list[web.Request] = []

    async def chart(request: web.Request) -> web.Response:
        seen.append(request)
        symbol = request.match_info["symbol"]
        if symbol == "^RUT":
            return web.json_response(chart_json(RUT_ROWS))
        if symbol == "BUSY":
            return web.Response(status=429, text="Too Many Requests\n")
        error = {
            "code": "Not Found",
            "description": "No data found, symbol may be delisted",
        }
        return web.json_response({"chart": {"result": None, "error": error}}, status=404)

    app = web.Application()
    app.router.add_get("/v8/finance/chart/{symbol}", chart)
    async with serving(app) as url:
        yield url, seen


async def test_fetch_history_daily_bars(chart_server: tuple[str, list[web.Request]]) -> None:
    base_url, seen = chart_server
    frame = await fetch_history("^RUT", base_url=base_url)
    request = seen[0]
    assert request.raw_path.startswith("/v8/finance/chart/%5ERUT?")
    assert request.query["interval"] == "1d" and request.query["range"] == "6mo"
    assert request.headers["User-Agent"].startswith("Mozilla/5.0")
    days = ["2026-02-12", "2026-02-13", "2026-02-17", "2026-02-19", "2026-02-20"]
    assert frame.time.dtype == np.int64 and frame.close.dtype == np.float64
    assert frame.time.tolist() == [ms(d) for d in days]  # UTC midnight of the New York date
    assert frame.close.tolist() == [
        2615.830078125,
        2646.699951171875,
        2646.590087890625,
        2665.090087890625,
        2663.780029296875,
    ]
    assert frame.open[-1] == 2660.2900390625
    assert frame.high[-1] == 2682.419921875
    assert frame.low[-1] == 2642.070068359375
    assert frame.volume[0] == 7118700000.0


async def test_fetch_history_errors(chart_server: tuple[str, list[web.Request]]) -> None:
    base_url, _ = chart_server
    with pytest.raises(HistoryError) as info:
        await fetch_history("NOPE", base_url=base_url)
    assert info.value.status == 404 and info.value.symbol == "NOPE"
    assert "NOPE" in str(info.value) and "404" in str(info.value)
    assert "No data found" in str(info.value)
    with pytest.raises(HistoryError) as info:
        await fetch_history("BUSY", base_url=base_url)
    assert info.value.status == 429
    assert "Too Many Requests" in str(info.value) and "BUSY" in str(info.value)


async def test_fetch_history_unreachable() -> None:
    async with streamer_server(FakeStreamer()) as url:
        port = url.split(":")[2].split("/")[0]
    with pytest.raises(HistoryError) as info:
        await fetch_history("^RUT", base_url=f"http://127.0.0.1:{port}", timeout=5)
    assert info.value.status is None


def test_parse_chart_summer_live_row_and_gmtoffset_fallback() -> None:
    rows = [
        (1719840600, 2050.6, 2053.35, 2024.41, 2030.07, 3488760000),  # 2024-07-01 13:30Z
        (1719927000, 2031.07, 2037.21, 2027.78, 2030.0, 1000),  # 2024-07-02 open
        (1719945000, 2031.07, 2037.21, 2027.78, 2033.87, 3329950000),  # same day, live row
    ]
    frame = parse_chart("^RUT", chart_json(rows, exchangeTimezoneName=None, gmtoffset=-14400))
    assert frame.time.tolist() == [ms("2024-07-01"), ms("2024-07-02")]
    assert frame.close.tolist() == [2030.07, 2033.87]
    intraday = parse_chart("^RUT", chart_json(rows), interval="5m")
    assert intraday.time.tolist() == [r[0] * 1000 for r in rows]


def test_parse_chart_errors() -> None:
    body = {"chart": {"result": None, "error": {"code": "Bad Request", "description": "x"}}}
    with pytest.raises(HistoryError, match="Bad Request"):
        parse_chart("^RUT", body)
    with pytest.raises(HistoryError, match="unexpected chart JSON"):
        parse_chart("^RUT", {"nope": 1})
    empty = parse_chart("^RUT", {"chart": {"result": [{"meta": {}}], "error": None}})
    assert len(empty) == 0


def test_parse_chart_folds_the_live_row_into_its_bar() -> None:
    # Yahoo ends an intraday answer with a zero-volume row at the last trade (mid-bar), or
    # at the close once the session is over: both belong to the bar before them
    periods = [[{"timezone": "EST", "start": 1733149800, "end": 1733173200, "gmtoffset": -18000}]]
    rows = [
        (1733172600, 2431.0, 2433.5, 2430.5, 2433.0, 1000),  # 15:50 EST
        (1733172900, 2433.0, 2434.5, 2432.0, 2434.0, 2000),  # 15:55
        (1733173200, 2434.25, 2434.25, 2434.25, 2434.25, 0),  # 16:00: the close
    ]
    after_close = parse_chart("^RUT", chart_json(rows, tradingPeriods=periods), "5m")
    assert after_close.time.tolist() == [1733172600_000, 1733172900_000]
    assert after_close.close.tolist() == [2433.0, 2434.25]
    assert after_close.high.tolist() == [2433.5, 2434.5]
    assert after_close.volume.tolist() == [1000.0, 2000.0]
    live = [*rows[:2], (1733173107, 2435.0, 2435.0, 2435.0, 2435.0, 0)]  # 15:58:27
    in_session = parse_chart("^RUT", chart_json(live, tradingPeriods=periods), "5m")
    assert in_session.time.tolist() == [1733172600_000, 1733172900_000]
    assert (in_session.high[-1], in_session.close[-1]) == (2435.0, 2435.0)
    hourly = [
        (1714764600, 887.87, 889.3, 886.0, 887.87, 2798449),  # 15:30 EDT
        (1714766400, 887.89, 887.89, 887.89, 887.89, 0),  # 16:00: the close
    ]
    edt = {"timezone": "EDT", "start": 1714743000, "end": 1714766400, "gmtoffset": -14400}
    periods_edt = [[edt]]
    frame = parse_chart("NVDA", chart_json(hourly, tradingPeriods=periods_edt), "60m")
    assert frame.time.tolist() == [1714764600_000] and frame.close.tolist() == [887.89]
