"""The fake Yahoo against the real client code: streamer, decoder, chart history, calendar.

The equity bars replayed here are synthesised (``moodring.testing.equity_bars``): real
intraday ^RUT bars are not in ../shared/data, so each day of the real daily ^RUT file is cut
into NYSE-session 5m bars that follow the path of real Binance ETHUSDT 5m bars, opening and
closing where the real day did. The stretch is Thanksgiving week 2024: a holiday (Thu 28th)
and a half day (Fri 29th, close 13:00 New York).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import struct
import sys
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from websockets.asyncio.client import connect

from moodring.backtest.csvfile import load_csv
from moodring.feeds.yahoo.history import HistoryError, fetch_history
from moodring.feeds.yahoo.stream import PRICING_FIELDS, YahooStreamer, decode_pricing, parse_pricing
from moodring.market.calendar import MarketCalendar
from moodring.market.frame import BarFrame
from moodring.testing import equity_bars, fake_yahoo
from moodring.testing.equity_bars import session_bars, write_csv
from moodring.testing.fake_yahoo import FakeYahoo, encode_pricing, pricing_frame
from tests.support.paths import DATA
from tests.support.wait import until
from tests.support.yahoo import RUT_FIELDS, RecordingSink, fast_backoff, pricing

RUT_CSV = DATA / "daily" / "yahoo_alitalbi" / "RUT.csv"
ETH_5M = (
    DATA
    / "intraday"
    / "binance_5m_gapless"
    / "binance_spot_ETHUSDT-5m_20230320-20230328_v2.10.0.csv"
)
CALENDAR = MarketCalendar()
FIVE_MIN = 300_000

# yfinance's tests/test_live.py: a real streamer message and the fields it decodes to.
YFINANCE_MESSAGE = (
    "CgdCVEMtVVNEFYoMuUcYwLCVgIplIgNVU0QqA0NDQzApOAFFPWrEP0iAgOrxvANVx/25R12csrRHZYD8skR9/"
    "7i0R7ABgIDq8bwD2AEE4AGAgOrxvAPoAYCA6vG8A/IBA0JUQ4ECAAAAwPrjckGJAgAA2P5ZT3tC"
)


def day_ms(text: str) -> int:
    day = date.fromisoformat(text)
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()) * 1000


def at(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


def real_daily(start: str, end: str) -> BarFrame:
    return load_csv(RUT_CSV).bars.between(day_ms(start), day_ms(end))


@pytest.fixture(scope="module")
def thanksgiving() -> tuple[BarFrame, BarFrame]:
    """Real daily ^RUT of 2024-11-25..12-02 and its synthesised 5m session bars."""
    daily = real_daily("2024-11-25", "2024-12-03")
    return daily, session_bars(daily, load_csv(ETH_5M).bars)


@contextlib.asynccontextmanager
async def serving(fake: FakeYahoo) -> AsyncIterator[FakeYahoo]:
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


def f32(values: np.ndarray) -> np.ndarray:
    return values.astype(np.float32).astype(np.float64)


def bars_of_trades(trades: list[tuple[str, int, float, float]], length: int) -> BarFrame:
    """Aggregate (feed, time, price, amount) trades into bars of ``length`` ms."""
    t = np.array([x[1] for x in trades], dtype=np.int64)
    p = np.array([x[2] for x in trades])
    v = np.array([x[3] for x in trades])
    keys = t - t % length
    first = np.flatnonzero(np.concatenate([[True], keys[1:] != keys[:-1]]))
    last = np.concatenate([first[1:] - 1, [keys.size - 1]])
    return BarFrame(
        keys[first],
        p[first],
        np.maximum.reduceat(p, first),
        np.minimum.reduceat(p, first),
        p[last],
        np.add.reduceat(v, first),
    )


def assert_frames_equal(got: BarFrame, want: BarFrame) -> None:
    assert got.time.tolist() == want.time.tolist()
    for name in ("open", "high", "low", "close", "volume"):
        assert getattr(got, name).tolist() == getattr(want, name).tolist(), name


def get_json(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


# --- the wire format --------------------------------------------------------------------------


def test_encoder_reproduces_a_real_frame_byte_for_byte() -> None:
    raw = base64.b64decode(YFINANCE_MESSAGE)
    fields = parse_pricing(raw)
    assert encode_pricing(fields) == raw
    # the values yfinance's own test expects from this message
    assert (fields["id"], fields["time"], fields["quote_type"]) == ("BTC-USD", 1736509140000, 41)
    assert fields["day_volume"] == fields["last_size"] == fields["vol_24hr"] == 59712028672
    assert (fields["from_currency"], fields["market_cap"]) == ("BTC", 1876726640000.0)
    assert fields["price"] == struct.unpack("<f", struct.pack("<f", 94745.08))[0]


def test_encoder_round_trips_every_field() -> None:
    values: dict[str, Any] = {}
    for number, (name, kind) in PRICING_FIELDS.items():
        if kind == "string":
            values[name] = f"{name}-é"
        elif kind == "float":
            values[name] = -1.5 * number
        elif kind == "double":
            values[name] = 1e12 / 7 * number
        elif kind == "sint64":
            values[name] = -(2**62) if number == 3 else 2**40 + number
        else:
            values[name] = -number  # a negative int32 is ten bytes on the wire
    raw = encode_pricing(values)
    assert parse_pricing(raw) == values
    # tests/test_yahoo.py encodes independently from the same .proto: the bytes agree
    assert encode_pricing(RUT_FIELDS) == pricing(**RUT_FIELDS)
    assert encode_pricing({"id": "X", "price": 0.0, "time": 0, "currency": ""}) == b"\x0a\x01X"
    with pytest.raises(KeyError, match="nope"):
        encode_pricing({"nope": 1})


def test_pricing_frame_is_the_streamer_envelope() -> None:
    frame = json.loads(pricing_frame(RUT_FIELDS))
    assert frame["type"] == "pricing"
    tick = decode_pricing(frame["message"])
    assert (tick.id, tick.time_ms, tick.day_volume) == ("^RUT", 1771621200000, 5432480000)


# --- the synthesised intraday bars -------------------------------------------------------------


def test_session_bars_follow_the_real_days(thanksgiving: tuple[BarFrame, BarFrame]) -> None:
    daily, bars = thanksgiving
    assert len(daily) == 5  # no row on Thanksgiving: the market was shut
    ny = CALENDAR.tz
    local = [datetime.fromtimestamp(t / 1000, ny) for t in bars.time.tolist()]
    days = sorted({x.date() for x in local})
    assert days == [date(2024, 11, d) for d in (25, 26, 27, 29)] + [date(2024, 12, 2)]
    for row, day in enumerate(days):
        mask = np.array([x.date() == day for x in local])
        times = bars.time[mask]
        bounds = CALENDAR.session(day)
        assert bounds is not None
        assert times[0] == bounds[0] and np.all(np.diff(times) == FIVE_MIN)
        assert times[-1] + FIVE_MIN == bounds[1]  # the last bar ends at the close
        assert mask.sum() == (42 if day == date(2024, 11, 29) else 78)
        assert bars.open[mask][0] == daily.open[row] and bars.close[mask][-1] == daily.close[row]
        assert bars.high[mask].max() <= daily.high[row]
        assert bars.low[mask].min() >= daily.low[row]
        assert bars.volume[mask].sum() == daily.volume[row]
    assert local[-1].strftime("%H:%M") == "15:55"
    assert max(x for x in local if x.day == 29).strftime("%H:%M") == "12:55"
    for name in ("open", "high", "low", "close"):
        values = getattr(bars, name)
        assert np.array_equal(f32(values), values)  # they cross the float32 wire exactly
        assert np.array_equal(f32(np.round(values, 2)), values)  # cents, as Yahoo quotes
    assert np.all(bars.high >= np.maximum(bars.open, bars.close))
    assert np.all(bars.low <= np.minimum(bars.open, bars.close))
    assert np.all(bars.volume == np.round(bars.volume)) and np.all(bars.volume >= 0)
    again = session_bars(daily, load_csv(ETH_5M).bars)
    assert_frames_equal(again, bars)


def test_session_bars_take_the_shape_of_the_same_hours() -> None:
    # 2023-03-20..24: the ETH bars cover these sessions (EDT: 13:30-20:00 UTC)
    daily = real_daily("2023-03-20", "2023-03-25")
    eth = load_csv(ETH_5M).bars
    bars = session_bars(daily, eth)
    assert bars.time[0] == at("2023-03-20T13:30:00") and len(bars) == 5 * 78
    # inside a day the synthetic 5m returns move with ETH's over the same five minutes (the
    # 24th had a Binance halt), and not with ETH's of the same hours on another day
    later = eth.between(at("2023-03-27T13:30:00"), at("2023-03-27T20:00:00"))
    assert len(later) == 78
    same, other = [], []
    for day in range(4):
        mine = bars.slice(day * 78, day * 78 + 78)
        theirs = eth.between(int(mine.time[0]), int(mine.time[-1]) + FIVE_MIN)
        assert theirs.time.tolist() == mine.time.tolist()
        ours = np.diff(np.log(mine.close))
        same.append(np.corrcoef(ours, np.diff(np.log(theirs.close)))[0, 1])
        other.append(np.corrcoef(ours, np.diff(np.log(later.close)))[0, 1])
    assert min(same) > 0.4 and np.mean(same) > 0.75
    assert np.mean(np.abs(other)) < 0.2
    hourly = session_bars(daily, eth, length_ms=3_600_000)
    assert [int(t) for t in hourly.time[:7]] == [at(f"2023-03-20T{h}:30:00") for h in range(13, 20)]
    assert hourly.volume.sum() == daily.volume.sum()


def test_session_bars_refuse_what_they_cannot_make() -> None:
    daily = real_daily("2024-11-25", "2024-11-27")
    eth = load_csv(ETH_5M).bars
    with pytest.raises(ValueError, match="longer than the 1 min bars"):
        session_bars(daily, eth, length_ms=60_000)
    values = (daily.open, daily.high, daily.low, daily.close, daily.volume)
    shifted = BarFrame(daily.time + 3_600_000, *values)
    with pytest.raises(ValueError, match="00:00 UTC"):
        session_bars(shifted, eth)
    with pytest.raises(ValueError, match="no whole"):
        session_bars(daily, eth.slice(0, 20))


def test_equity_bars_cli_writes_what_the_function_makes(tmp_path: Path) -> None:
    out = tmp_path / "rut_5m.csv"
    argv = ["--daily", str(RUT_CSV), "--shape", str(ETH_5M), "--from", "2024-11-25"]
    argv += ["--to", "2024-12-03", "--out", str(out)]
    assert equity_bars.main(argv) == 0
    expected = session_bars(real_daily("2024-11-25", "2024-12-03"), load_csv(ETH_5M).bars)
    assert_frames_equal(load_csv(out).bars, expected)
    assert equity_bars.main([*argv[:4], "--interval", "1m", "--out", str(out)]) == 2


# --- the streamer, with the real client ---------------------------------------------------------


def local_day(t_ms: int) -> date:
    return CALENDAR.local_date(t_ms)


def flooded_streamer(fake: FakeYahoo, sink: RecordingSink) -> YahooStreamer:
    """Return a client for a replay still sending when the test stops the client."""
    # a socket flooded at speed 0 closes only after the client's close timeout
    return YahooStreamer("rut", "^RUT", sink, url=fake.ws_url, timeout=1.0, backoff=fast_backoff())


async def test_streamer_sends_the_bars_as_ticks_in_sessions_only(
    thanksgiving: tuple[BarFrame, BarFrame],
) -> None:
    _, bars = thanksgiving
    fake = FakeYahoo({"^RUT": bars}, tick_every=60, heartbeat_every=0)
    sink = RecordingSink()
    async with serving(fake):
        streamer = YahooStreamer("rut", "^RUT", sink, url=fake.ws_url, backoff=fast_backoff())
        async with streamer:
            await fake.wait_subscribed("^RUT")
            await asyncio.wait_for(fake.replay_done.wait(), 60)
            await until(lambda: len(sink.trades) == fake.ticks_sent, "every tick", timeout=60)
            assert fake.subscribers("^RUT") == 1
    assert fake.ticks_sent == 5 * len(bars)  # a 5m bar at one tick a minute
    assert dict(streamer.bad_frames) == {} and dict(streamer.ignored) == {}
    assert streamer.connects == 1
    times = [t for _, t, _, _ in sink.trades]
    assert times == sorted(times) and all(CALENDAR.is_open(t) for t in times)
    assert date(2024, 11, 28) not in {local_day(t) for t in times}
    half_day = [t for t in times if local_day(t) == date(2024, 11, 29)]
    assert at("2024-11-29T17:55:00") <= max(half_day) < at("2024-11-29T18:00:00")  # 13:00 EST
    assert min(half_day) == at("2024-11-29T14:30:00")
    # the client's own view of the ticks rebuilds the input bars exactly, volumes included
    assert_frames_equal(bars_of_trades(sink.trades, FIVE_MIN), bars)


async def test_tick_fields_are_a_real_streams(thanksgiving: tuple[BarFrame, BarFrame]) -> None:
    daily, bars = thanksgiving
    fake = FakeYahoo({"^RUT": bars}, tick_every=60, heartbeat_every=0)
    frames: list[dict[str, Any]] = []
    async with serving(fake), connect(fake.ws_url) as ws:
        await ws.send(json.dumps({"subscribe": ["^RUT", "NOPE"]}))
        while len(frames) < 5 * len(bars):
            frames.append(json.loads(await asyncio.wait_for(ws.recv(), 60)))
    assert {tuple(sorted(f)) for f in frames} == {("message", "type")}
    assert {f["type"] for f in frames} == {"pricing"}
    ticks = [parse_pricing(base64.b64decode(f["message"])) for f in frames]
    assert {(t["id"], t["quote_type"], t["market_hours"], t["exchange"]) for t in ticks} == {
        ("^RUT", 9, 1, "WCB")
    }
    assert {(t["currency"], t["short_name"], t["price_hint"]) for t in ticks} == {
        ("USD", "Russell 2000", 2)
    }
    by_day: dict[date, list[dict[str, Any]]] = {}
    for tick in ticks:
        by_day.setdefault(local_day(tick["time"]), []).append(tick)
    previous_close = float(bars.open[0])  # the replay's first day has no close before it
    for row, (_, day_ticks) in enumerate(sorted(by_day.items())):
        prices = [t["price"] for t in day_ticks]
        volumes = [t.get("day_volume", 0) for t in day_ticks]
        assert volumes[0] == 0 and volumes == sorted(volumes)  # cumulative, from 0 each session
        assert volumes[-1] == daily.volume[row]
        assert prices[0] == daily.open[row] and prices[-1] == daily.close[row]
        assert {t["open_price"] for t in day_ticks} == {daily.open[row]}
        assert [t["day_high"] for t in day_ticks] == list(np.maximum.accumulate(prices))
        assert [t["day_low"] for t in day_ticks] == list(np.minimum.accumulate(prices))
        assert {t["previous_close"] for t in day_ticks} == {previous_close}
        change = f32(np.array(prices) - previous_close)
        assert [t.get("change", 0.0) for t in day_ticks] == change.tolist()
        previous_close = prices[-1]
    assert [d.day for d in sorted(by_day)] == [25, 26, 27, 29, 2]


async def test_heartbeats_carry_the_clock_and_the_client_skips_them(
    thanksgiving: tuple[BarFrame, BarFrame],
) -> None:
    _, bars = thanksgiving
    start = at("2024-11-28T15:00:00")  # Thanksgiving: the clock runs, no tick comes
    fake = FakeYahoo({"^RUT": bars}, speed=1.0, start=start, heartbeat_every=0.05)
    sink = RecordingSink()
    async with serving(fake):
        async with connect(fake.ws_url) as ws:
            await ws.send(json.dumps({"subscribe": ["^RUT", "NOPE"]}))
            beats = [
                decode_pricing(json.loads(await asyncio.wait_for(ws.recv(), 30))["message"])
                for _ in range(3)
            ]
        assert {(b.id, b.quote_type, b.price) for b in beats} == {("^RUT", 7, 0.0)}
        stamps = [b.time_ms for b in beats]
        assert stamps == sorted(stamps) and start <= stamps[0] <= stamps[-1] <= fake.clock_ms
        streamer = YahooStreamer("rut", "^RUT", sink, url=fake.ws_url, backoff=fast_backoff())
        async with streamer:
            await until(lambda: streamer.ignored["control"] >= 3, "three heartbeats")
    assert sink.trades == [] and dict(streamer.bad_frames) == {} and sink.bad == []


async def test_a_replay_from_start_continues_the_history(
    thanksgiving: tuple[BarFrame, BarFrame],
) -> None:
    daily, bars = thanksgiving
    start = at("2024-11-26T15:02:30")  # 10:02:30 New York
    fake = FakeYahoo({"^RUT": bars}, start=start, tick_every=60, heartbeat_every=0)
    before = FakeYahoo({"^RUT": bars}, tick_every=60).ticks("^RUT", end_ms=start)
    sink = RecordingSink()
    async with serving(fake):
        assert fake.clock_ms == start  # no subscriber yet: the clock waits
        five = await fetch_history("^RUT", "5m", "1mo", base_url=fake.rest_url)
        day = await fetch_history("^RUT", "1d", "5d", base_url=fake.rest_url)
        streamer = flooded_streamer(fake, sink)
        async with streamer:
            await until(lambda: len(sink.trades) >= 10, "ten ticks")
    forming = at("2024-11-26T15:00:00")
    assert_frames_equal(five.slice(0, len(five) - 1), bars.between(None, forming))
    assert five.time[-1] == forming
    so_far = [t for t in before if t["time"] >= forming]
    assert [t["time"] for t in so_far] == [forming, forming + 60_000, forming + 120_000]
    row = int(np.searchsorted(bars.time, forming))
    assert five.open[-1] == bars.open[row] == so_far[0]["price"]
    assert five.close[-1] == so_far[-1]["price"]
    assert five.high[-1] == max(t["price"] for t in so_far)
    assert five.volume[-1] == so_far[-1]["day_volume"] - so_far[0]["day_volume"]
    assert day.time.tolist() == [day_ms("2024-11-25"), day_ms("2024-11-26")]
    assert (day.open[-1], day.close[-1]) == (daily.open[1], so_far[-1]["price"])
    assert day.volume[-1] == so_far[-1]["day_volume"]
    assert sink.trades[0][1] == at("2024-11-26T15:03:00")  # the first tick at or after start


async def test_loop_replays_on_the_following_sessions_around_a_holiday() -> None:
    daily = real_daily("2024-11-20", "2024-11-28")  # Wed 20th to Wed 27th: six sessions
    assert len(daily) == 6
    fake = FakeYahoo({"^RUT": daily}, loop=True, tick_every=600, heartbeat_every=0)
    sink = RecordingSink()
    end = at("2024-12-07T00:00:00")
    async with serving(fake):
        streamer = flooded_streamer(fake, sink)
        async with streamer:
            await until(
                lambda: sink.trades and sink.trades[-1][1] >= end, "a second pass", timeout=60
            )
    times = [t for _, t, _, _ in sink.trades if t < end]
    assert all(CALENDAR.is_open(t) for t in times)
    days = sorted({local_day(t) for t in times})
    first_pass = [date(2024, 11, d) for d in (20, 21, 22, 25, 26, 27)]
    second_pass = [date(2024, 11, 29)] + [date(2024, 12, d) for d in range(2, 7)]
    assert days == first_pass + second_pass  # Thanksgiving skipped, then Black Friday
    half_day = [(t, p) for _, t, p, _ in sink.trades if local_day(t) == date(2024, 11, 29)]
    assert max(t for t, _ in half_day) < at("2024-11-29T18:00:00")
    # the half day replays the first session (the 20th) squeezed into 09:30-13:00
    assert (half_day[0][1], half_day[-1][1]) == (daily.open[0], daily.close[0])
    assert len(half_day) == 21 and len([t for t in times if local_day(t) == days[0]]) == 39


async def test_speed_runs_the_clock_and_ticks_never_lead_it(
    thanksgiving: tuple[BarFrame, BarFrame],
) -> None:
    _, bars = thanksgiving
    start = at("2024-11-25T20:50:00")  # ten minutes before a close
    fake = FakeYahoo({"^RUT": bars}, speed=3000, start=start, skip_closed=True, tick_every=60)
    seen: list[tuple[int, int]] = []

    class ClockSink(RecordingSink):
        def trade(
            self, feed: str, t_ms: int, price: float, amount: float, trade_id: object
        ) -> None:
            seen.append((t_ms, fake.clock_ms))
            super().trade(feed, t_ms, price, amount, trade_id)

    sink = ClockSink()
    async with serving(fake):
        streamer = YahooStreamer("rut", "^RUT", sink, url=fake.ws_url, backoff=fast_backoff())
        async with streamer:
            await until(lambda: len(seen) >= 20, "ticks of the next session", timeout=60)
            fake.pause()
            frozen = fake.clock_ms
            await asyncio.sleep(0.2)
            assert fake.clock_ms == frozen and fake.paused
            fake.resume()
            await until(lambda: fake.clock_ms > frozen, "the clock running again", timeout=60)
    assert [t for t, _ in seen[:10]] == [start + 60_000 * k for k in range(10)]
    assert local_day(seen[-1][0]) == date(2024, 11, 26)
    assert all(t <= clock for t, clock in seen)  # the clock is the data's time


# --- the chart API, with the real fetch_history ---------------------------------------------


def session_groups(bars: BarFrame, length: int) -> BarFrame:
    """Aggregate bars into ``length`` ms bars aligned to each NYSE session's open."""
    keys = []
    for t in bars.time.tolist():
        bounds = CALENDAR.session_at(t)
        assert bounds is not None
        keys.append(bounds[0] + (t - bounds[0]) // length * length)
    k = np.array(keys, dtype=np.int64)
    first = np.flatnonzero(np.concatenate([[True], k[1:] != k[:-1]]))
    last = np.concatenate([first[1:] - 1, [k.size - 1]])
    return BarFrame(
        k[first],
        bars.open[first],
        np.maximum.reduceat(bars.high, first),
        np.minimum.reduceat(bars.low, first),
        bars.close[last],
        np.add.reduceat(bars.volume, first),
    )


async def test_chart_history_returns_the_input_bars(
    thanksgiving: tuple[BarFrame, BarFrame],
) -> None:
    daily, bars = thanksgiving
    fake = FakeYahoo({"^RUT": bars}, tick_every=60, heartbeat_every=0, autostart=False)
    async with serving(fake):  # replayed to the end without a client
        await asyncio.wait_for(fake.replay_done.wait(), 60)
        assert fake.clock_ms == at("2024-12-02T21:00:00")  # the last close
        five = await fetch_history("^RUT", "5m", "1mo", base_url=fake.rest_url)
        assert_frames_equal(five, bars)
        day = await fetch_history("^RUT", "1d", "1mo", base_url=fake.rest_url)
        assert day.time.tolist() == daily.time.tolist()  # UTC midnight of each session day
        assert (day.open.tolist(), day.close.tolist()) == (
            daily.open.tolist(),
            daily.close.tolist(),
        )
        assert day.volume.tolist() == daily.volume.tolist()
        hourly = await fetch_history("^RUT", "60m", "5d", base_url=fake.rest_url)
        expected = session_groups(bars, 3_600_000)
        assert_frames_equal(hourly, expected)
        assert hourly.time[-1] == at("2024-12-02T20:30:00")  # 15:30-16:00: Yahoo's last 60m bar
        half_day = [t for t in hourly.time.tolist() if local_day(t) == date(2024, 11, 29)]
        assert half_day[-1] == at("2024-11-29T17:30:00")  # 12:30-13:00
        minute = await fetch_history("^RUT", "1m", "1d", base_url=fake.rest_url)
        ticks = [t for t in fake.ticks("^RUT") if t["time"] >= at("2024-12-02T00:00:00")]
        assert minute.time.tolist() == [t["time"] for t in ticks]  # one tick a minute
        assert minute.close.tolist() == [t["price"] for t in ticks]
        cumulative = [t.get("day_volume", 0) for t in ticks]
        assert minute.volume.tolist() == np.diff([0, *cumulative]).tolist()
        weekly = await fetch_history("^RUT", "1wk", "1mo", base_url=fake.rest_url)
        assert weekly.time.tolist() == [day_ms("2024-11-25"), day_ms("2024-12-02")]
        assert weekly.volume.tolist() == [daily.volume[:4].sum(), daily.volume[4]]
        url = f"{fake.rest_url}/v8/finance/chart/%5ERUT?interval=5m"
        p1, p2 = day_ms("2024-11-26") // 1000, day_ms("2024-11-27") // 1000
        status, body = await asyncio.to_thread(get_json, f"{url}&period1={p1}&period2={p2}")
        result = body["chart"]["result"][0]
        assert status == 200 and result["meta"]["range"] == ""
        stamps = [t * 1000 for t in result["timestamp"]]
        assert stamps == bars.between(p1 * 1000, p2 * 1000).time.tolist()  # no live row


async def test_chart_meta_and_errors_are_yahoos(thanksgiving: tuple[BarFrame, BarFrame]) -> None:
    _, bars = thanksgiving
    fake = FakeYahoo({"^RUT": bars}, tick_every=60, heartbeat_every=0, autostart=False)
    async with serving(fake):
        await asyncio.wait_for(fake.replay_done.wait(), 60)
        base = f"{fake.rest_url}/v8/finance/chart/"
        status, body = await asyncio.to_thread(get_json, f"{base}%5ERUT?interval=60m&range=5d")
        assert status == 200 and body["chart"]["error"] is None
        result = body["chart"]["result"][0]
        meta = result["meta"]
        assert (meta["symbol"], meta["exchangeTimezoneName"], meta["timezone"]) == (
            "^RUT",
            "America/New_York",
            "EST",
        )
        assert (meta["gmtoffset"], meta["instrumentType"], meta["exchangeName"]) == (
            -18000,
            "INDEX",
            "WCB",
        )
        assert (meta["dataGranularity"], meta["range"]) == ("60m", "5d")
        close = at("2024-12-02T21:00:00") // 1000
        assert meta["currentTradingPeriod"]["regular"] == {
            "timezone": "EST",
            "start": at("2024-12-02T14:30:00") // 1000,
            "end": close,
            "gmtoffset": -18000,
        }
        ends = [day[0]["end"] for day in meta["tradingPeriods"]]
        assert len(ends) == 5 and at("2024-11-29T18:00:00") // 1000 in ends  # the half day
        assert meta["regularMarketTime"] == close
        assert meta["regularMarketPrice"] == bars.close[-1]
        # after the close Yahoo's last intraday row is the closing print, volume 0
        assert result["timestamp"][-1] == close
        quote = result["indicators"]["quote"][0]
        assert (quote["close"][-1], quote["volume"][-1]) == (bars.close[-1], 0)
        status, body = await asyncio.to_thread(get_json, f"{base}%5ERUT?interval=1d&range=5d")
        result = body["chart"]["result"][0]
        assert result["timestamp"][0] == at("2024-11-25T14:30:00") // 1000  # the 09:30 open
        assert (
            result["indicators"]["adjclose"][0]["adjclose"]
            == result["indicators"]["quote"][0]["close"]
        )
        assert "tradingPeriods" not in result["meta"]
        status, body = await asyncio.to_thread(get_json, f"{base}NOPE?interval=1d&range=5d")
        assert status == 404 and body["chart"] == {
            "result": None,
            "error": {"code": "Not Found", "description": "No data found, symbol may be delisted"},
        }
        status, body = await asyncio.to_thread(get_json, f"{base}%5ERUT?interval=7m")
        assert status == 400 and body["chart"]["error"]["code"] == "Bad Request"
        assert "interval=7m is not supported" in body["chart"]["error"]["description"]
        status, body = await asyncio.to_thread(get_json, f"{base}%5ERUT?range=forever")
        assert status == 400 and "range=forever" in body["chart"]["error"]["description"]
        status, _ = await asyncio.to_thread(get_json, f"{fake.rest_url}/v7/finance/quote")
        assert status == 404
        with pytest.raises(HistoryError) as info:
            await fetch_history("NOPE", base_url=fake.rest_url)
        assert info.value.status == 404 and "No data found" in str(info.value)


# --- the command line ---------------------------------------------------------------------------


async def test_cli_prints_the_urls_a_yahoo_feed_uses(
    tmp_path: Path, thanksgiving: tuple[BarFrame, BarFrame]
) -> None:
    _, bars = thanksgiving
    csv_path = tmp_path / "rut_5m.csv"
    write_csv(bars, csv_path)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "moodring.testing.fake_yahoo",
        "--bars",
        f"^RUT={csv_path}",
        "--speed",
        "0",
        "--tick-every",
        "60",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    sink = RecordingSink()
    try:
        assert proc.stdout is not None
        port = int(await asyncio.wait_for(proc.stdout.readline(), 60))
        urls = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode().split()
        settings = dict(item.split("=", 1) for item in urls)
        assert settings == {
            "ws_url": f"ws://127.0.0.1:{port}/?version=2",
            "rest_url": f"http://127.0.0.1:{port}",
        }
        streamer = YahooStreamer(
            "rut", "^RUT", sink, url=settings["ws_url"], timeout=1.0, backoff=fast_backoff()
        )
        async with streamer:
            await until(lambda: len(sink.trades) == 5 * len(bars), "every tick", timeout=60)
        five = await fetch_history("^RUT", "5m", "1mo", base_url=settings["rest_url"])
    finally:
        proc.terminate()
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    assert_frames_equal(five, bars)
    assert_frames_equal(bars_of_trades(sink.trades, FIVE_MIN), bars)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "give at least one --bars SYMBOL=CSV"),
        (["--bars", "rut.csv"], "expected SYMBOL=CSV"),
        (["--bars", "^RUT=/nonexistent/rut.csv"], "/nonexistent/rut.csv"),
        (["--bars", f"^RUT={RUT_CSV}", "--speed", "-1"], "--speed must be >= 0"),
        (["--bars", f"^RUT={RUT_CSV}", "--start", "soon"], "--start 'soon' is not an ISO"),
        (["--bars", f"^RUT={RUT_CSV}", "--start", "2031-01-01"], "is not before the data's end"),
        (["--bars", f"^RUT={ETH_5M}", "--bars", f"^RUT={RUT_CSV}"], "^RUT is given twice"),
    ],
)
def test_cli_mistakes_get_one_sentence(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        fake_yahoo.main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("python -m moodring.testing.fake_yahoo: error:")
