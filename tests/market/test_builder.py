"""BarBuilder (trades and candles), Join/RatioSeries and resample against independent models."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moodring.market.bar import Bar
from moodring.market.builder import BarBuilder
from moodring.market.frame import BarFrame
from moodring.market.resample import resample
from moodring.market.series import Join, RatioSeries
from moodring.market.timeframe import Timeframe

MINUTE = 60_000
DAY = 86_400_000
T0 = 1_722_470_400_000  # 2024-08-01 00:00 UTC, a Thursday


# --------------------------------------------------------------------------------------
# Independent reference: plain loop over trades (and clock ticks), no moodring code.
# --------------------------------------------------------------------------------------


class RefBars:
    """OHLCV bars from trades, written from the specification only."""

    def __init__(self, tf_ms: int, fill_gaps: bool) -> None:
        self.tf = tf_ms
        self.fill_gaps = fill_gaps
        self.closed: list[tuple[int, float, float, float, float, float]] = []
        self.cur: list | None = None  # [time, open, high, low, close, volume]
        self.seen: set[object] = set()
        self.duplicates = 0
        self.late = 0

    def _last_closed_time(self) -> int | None:
        return self.closed[-1][0] if self.closed else None

    def _close(self) -> None:
        assert self.cur is not None
        self.closed.append(tuple(self.cur))
        self.cur = None

    def _flat_until(self, stop: int) -> None:
        """Append flat bars for every open time g after the last closed bar with g < stop."""
        if not self.closed:
            return
        last_t, c = self.closed[-1][0], self.closed[-1][4]
        for g in range(last_t + self.tf, stop, self.tf):
            self.closed.append((g, c, c, c, c, 0.0))

    def trade(self, t: int, price: float, amount: float, trade_id: object | None) -> None:
        if trade_id is not None:
            if trade_id in self.seen:
                self.duplicates += 1
                return
            self.seen.add(trade_id)
        start = t - t % self.tf
        cur = self.cur
        if cur is not None and start == cur[0]:
            cur[2] = max(cur[2], price)
            cur[3] = min(cur[3], price)
            cur[4] = price
            cur[5] = cur[5] + amount
            return
        last = self._last_closed_time()
        if (cur is not None and start < cur[0]) or (last is not None and start <= last):
            self.late += 1
            return
        if cur is not None:
            self._close()
        if self.fill_gaps:
            self._flat_until(start)
        self.cur = [start, price, price, price, price, amount]

    def advance(self, now: int) -> None:
        if self.cur is not None and now >= self.cur[0] + self.tf:
            self._close()
        if self.fill_gaps and self.cur is None:
            # Only intervals that have fully elapsed: g + tf <= now.
            self._flat_until(now - self.tf + 1)


def _bars(rows) -> list[tuple]:
    return [tuple(r) for r in rows]


# --------------------------------------------------------------------------------------
# Trade stream strategies: mostly increasing times, some late trades, duplicate ids.
# --------------------------------------------------------------------------------------

TRADE_TFS = ["1m", "5m", "1h"]
PRICES = st.floats(min_value=0.01, max_value=1e5, allow_nan=False, allow_infinity=False)
AMOUNTS = st.floats(min_value=0.0, max_value=1e3, allow_nan=False, allow_infinity=False)


@st.composite
def trade_events(draw, tf_ms: int, with_ticks: bool = False) -> list[tuple]:
    clock = draw(st.integers(min_value=1_600_000_000_000, max_value=1_800_000_000_000))
    n = draw(st.integers(min_value=0, max_value=60))
    used_ids: list[int] = []
    next_id = 0
    events: list[tuple] = []
    kinds = ["same"] * 6 + ["next"] * 3 + ["gap"] + ["late"] + (["tick"] * 2 if with_ticks else [])
    for _ in range(n):
        kind = draw(st.sampled_from(kinds))
        if kind == "same":
            clock += draw(st.integers(min_value=0, max_value=tf_ms // 5))
        elif kind == "next":
            clock += draw(st.integers(min_value=0, max_value=2 * tf_ms))
        elif kind == "gap":
            clock += draw(st.integers(min_value=tf_ms, max_value=6 * tf_ms))
        if kind == "tick":
            events.append(("tick", clock + draw(st.integers(min_value=0, max_value=3 * tf_ms))))
            continue
        t = clock - draw(st.integers(min_value=1, max_value=3 * tf_ms)) if kind == "late" else clock
        id_kind = draw(st.sampled_from(["new", "new", "new", "none", "dup"]))
        if id_kind == "dup" and used_ids:
            trade_id: int | None = draw(st.sampled_from(used_ids))
        elif id_kind == "none":
            trade_id = None
        else:
            trade_id = next_id
            next_id += 1
            used_ids.append(trade_id)
        events.append(("trade", t, draw(PRICES), draw(AMOUNTS), trade_id))
    return events


@st.composite
def trade_case(draw, with_ticks: bool = False):
    tf = Timeframe.parse(draw(st.sampled_from(TRADE_TFS)))
    events = draw(trade_events(tf.ms, with_ticks))
    fill_gaps = draw(st.booleans())
    capacity = draw(st.integers(min_value=1, max_value=8))
    return tf, events, fill_gaps, capacity


def _ring_rows(builder: BarBuilder) -> list[tuple]:
    ring = builder.bars
    cols = [ring.time, ring.open, ring.high, ring.low, ring.close, ring.volume]
    return list(zip(*(c.window().tolist() for c in cols), strict=True))


# --------------------------------------------------------------------------------------
# BarBuilder from trades
# --------------------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(case=trade_case())
def test_trades_match_reference(case) -> None:
    tf, events, fill_gaps, capacity = case
    builder = BarBuilder(tf, fill_gaps=fill_gaps, capacity=capacity)
    emitted: list[Bar] = []
    builder.subscribe(emitted.append)
    ref = RefBars(tf.ms, fill_gaps)
    for _, t, p, a, i in events:
        builder.add_trade(t, p, a, i)
        ref.trade(t, p, a, i)

    assert _bars(emitted) == ref.closed
    assert all(isinstance(b, Bar) for b in emitted)
    # The partial last bar is never emitted as closed: it is the forming bar.
    forming = builder.forming()
    if ref.cur is None:
        assert forming is None
    else:
        assert forming is not None
        assert tuple(forming) == tuple(ref.cur)
        assert all(b.time < forming.time for b in emitted)
    assert builder.duplicates == ref.duplicates
    assert builder.late == ref.late
    # Closed bars are strictly increasing and aligned.
    times = [b.time for b in emitted]
    assert times == sorted(set(times))
    assert all(t % tf.ms == 0 for t in times)
    # The ring holds the last `capacity` closed bars.
    assert _ring_rows(builder) == ref.closed[-capacity:]
    assert builder.bars.last() == (tuple(ref.closed[-1]) if ref.closed else None)


@settings(max_examples=120, deadline=None)
@given(case=trade_case(with_ticks=True))
def test_trades_and_clock_ticks_match_reference(case) -> None:
    tf, events, fill_gaps, capacity = case
    builder = BarBuilder(tf, fill_gaps=fill_gaps, capacity=capacity)
    emitted: list[Bar] = []
    builder.subscribe(emitted.append)
    ref = RefBars(tf.ms, fill_gaps)
    for event in events:
        if event[0] == "tick":
            forming_before = builder.forming()
            n_before = len(emitted)
            builder.advance(event[1])
            ref.advance(event[1])
            if forming_before is not None and event[1] < forming_before.time + tf.ms:
                # Never closes early, and nothing is emitted while a bar is still forming.
                assert builder.forming() == forming_before
                assert len(emitted) == n_before
        else:
            _, t, p, a, i = event
            builder.add_trade(t, p, a, i)
            ref.trade(t, p, a, i)
        assert _bars(emitted) == ref.closed
    forming = builder.forming()
    assert (tuple(forming) if forming else None) == (tuple(ref.cur) if ref.cur else None)
    assert builder.duplicates == ref.duplicates
    assert builder.late == ref.late
    assert _ring_rows(builder) == ref.closed[-capacity:]


def test_advance_closes_at_bar_end_and_fills_elapsed_intervals() -> None:
    tf = Timeframe.parse("1m")
    b = BarBuilder(tf, fill_gaps=True, capacity=10)
    out: list[Bar] = []
    b.subscribe(out.append)
    t = T0 + 7 * MINUTE
    b.add_trade(t + 5_000, 10.0, 1.0, 1)
    b.add_trade(t + 6_000, 12.0, 2.0, 2)
    b.add_trade(t + 7_000, 9.0, 0.5, 3)
    b.add_trade(t + 8_000, 11.0, 0.25, 4)
    forming = Bar(t, 10.0, 12.0, 9.0, 11.0, 3.75)
    assert b.forming() == forming
    b.advance(t + MINUTE - 1)
    assert out == [] and b.forming() == forming
    b.advance(t + MINUTE)
    assert out == [forming]
    assert b.forming() is None
    # 2 min 59.999 s later: only the minute [t+1m, t+2m) has fully elapsed.
    b.advance(t + 3 * MINUTE - 1)
    assert out == [forming, Bar(t + MINUTE, 11.0, 11.0, 11.0, 11.0, 0.0)]
    b.advance(t + 3 * MINUTE)
    assert out[-1] == Bar(t + 2 * MINUTE, 11.0, 11.0, 11.0, 11.0, 0.0)
    assert len(out) == 3
    b.advance(t + 3 * MINUTE)  # idempotent
    assert len(out) == 3
    # A trade inside an interval that was already filled is late.
    b.add_trade(t + 2 * MINUTE + 1, 50.0, 1.0, 5)
    assert b.late == 1 and len(out) == 3 and b.forming() is None
    # The next trade starts a new bar; the gap before it is filled on arrival.
    b.add_trade(t + 5 * MINUTE + 1, 13.0, 1.0, 6)
    assert out[3:] == [
        Bar(t + 3 * MINUTE, 11.0, 11.0, 11.0, 11.0, 0.0),
        Bar(t + 4 * MINUTE, 11.0, 11.0, 11.0, 11.0, 0.0),
    ]
    assert b.forming() == Bar(t + 5 * MINUTE, 13.0, 13.0, 13.0, 13.0, 1.0)


def test_advance_without_fill_gaps_emits_no_flat_bars() -> None:
    tf = Timeframe.parse("5m")
    b = BarBuilder(tf, fill_gaps=False)
    out: list[Bar] = []
    b.subscribe(out.append)
    b.advance(T0 + DAY)  # nothing yet
    assert out == []
    b.add_trade(T0 + 1, 1.0, 1.0)
    b.advance(T0 + 5 * MINUTE - 1)
    assert out == []
    b.advance(T0 + DAY)
    assert out == [Bar(T0, 1.0, 1.0, 1.0, 1.0, 1.0)]
    b.add_trade(T0 + 2 * DAY, 2.0, 3.0)
    b.advance(T0 + 3 * DAY)
    assert out == [Bar(T0, 1.0, 1.0, 1.0, 1.0, 1.0), Bar(T0 + 2 * DAY, 2.0, 2.0, 2.0, 2.0, 3.0)]


def test_duplicates_and_late_explicit() -> None:
    b = BarBuilder(Timeframe.parse("1m"), fill_gaps=False)
    out: list[Bar] = []
    b.subscribe(out.append)
    b.add_trade(T0 + 10, 5.0, 1.0, "a")
    b.add_trade(T0 + 10, 5.0, 1.0, "a")  # duplicate
    b.add_trade(T0 + MINUTE, 6.0, 1.0, "b")  # closes the first bar
    b.add_trade(T0 + 20, 7.0, 1.0, "c")  # late: its bar is closed
    b.add_trade(T0 + MINUTE + 5, 4.0, 2.0, None)
    b.add_trade(T0 + MINUTE + 5, 4.0, 2.0, None)  # no id: never a duplicate
    assert b.duplicates == 1
    assert b.late == 1
    assert out == [Bar(T0, 5.0, 5.0, 5.0, 5.0, 1.0)]
    assert b.forming() == Bar(T0 + MINUTE, 6.0, 6.0, 4.0, 4.0, 5.0)


def test_a_builder_without_a_window_of_ids_takes_a_repeated_id() -> None:
    # for a feed that drops repeats before they reach its builders
    b = BarBuilder(Timeframe.parse("1m"), fill_gaps=False, dedupe_window=0)
    b.add_trade(T0 + 10, 5.0, 1.0, "a")
    b.add_trade(T0 + 20, 5.0, 1.0, "a")
    assert b.duplicates == 0 and b.forming() == Bar(T0, 5.0, 5.0, 5.0, 5.0, 2.0)


# --------------------------------------------------------------------------------------
# BarBuilder from candles vs resample
# --------------------------------------------------------------------------------------


@st.composite
def minute_candles(draw):
    start_minute = draw(st.integers(min_value=28_000_000, max_value=29_000_000))
    n = draw(st.integers(min_value=1, max_value=50))
    steps = draw(st.lists(st.sampled_from([1] * 8 + [2, 3, 6, 11]), min_size=n - 1, max_size=n - 1))
    minutes = np.cumsum([start_minute, *steps])
    rows = []
    for m in minutes:
        o = draw(st.integers(min_value=100, max_value=10_000)) / 4
        c = draw(st.integers(min_value=100, max_value=10_000)) / 4
        h = max(o, c) + draw(st.integers(min_value=0, max_value=40)) / 4
        low = min(o, c) - draw(st.integers(min_value=0, max_value=40)) / 4
        v = draw(st.floats(min_value=0.0, max_value=1e4, allow_nan=False))
        # Earlier forming updates of the same candle, with values the final one replaces.
        updates = draw(
            st.lists(
                st.tuples(
                    st.floats(min_value=1.0, max_value=1e5),
                    st.floats(min_value=1.0, max_value=1e5),
                    st.floats(min_value=1e-3, max_value=1.0),
                    st.floats(min_value=1.0, max_value=1e5),
                    st.floats(min_value=0.0, max_value=1e5),
                ),
                max_size=3,
            )
        )
        rows.append((int(m) * MINUTE, o, h, low, c, v, updates))
    return rows


def _frame(rows) -> BarFrame:
    return BarFrame(
        np.array([r[0] for r in rows], dtype=np.int64),
        np.array([r[1] for r in rows], dtype=np.float64),
        np.array([r[2] for r in rows], dtype=np.float64),
        np.array([r[3] for r in rows], dtype=np.float64),
        np.array([r[4] for r in rows], dtype=np.float64),
        np.array([r[5] for r in rows], dtype=np.float64),
    )


def _frame_rows(frame: BarFrame) -> list[tuple]:
    cols = (frame.time, frame.open, frame.high, frame.low, frame.close, frame.volume)
    return list(zip(*(c.tolist() for c in cols), strict=True))


def _assert_bars_equal(got: list[tuple], want: list[tuple]) -> None:
    assert [g[:5] for g in got] == [w[:5] for w in want]
    assert np.allclose([g[5] for g in got], [w[5] for w in want], rtol=1e-12, atol=0)


@settings(max_examples=80, deadline=None)
@given(rows=minute_candles(), tf_name=st.sampled_from(["5m", "15m", "1h"]))
def test_closed_minute_candles_match_resample(rows, tf_name: str) -> None:
    tf = Timeframe.parse(tf_name)
    builder = BarBuilder(tf, fill_gaps=False, capacity=200)
    emitted: list[Bar] = []
    builder.subscribe(emitted.append)
    for t, o, h, low, c, v, updates in rows:
        for uo, uh, ul, uc, uv in updates:
            hi = max(uo, uh, uc)
            builder.add_candle(t, uo, hi, min(uo, ul, uc), uc, uv, closed=False, length_ms=MINUTE)
        builder.add_candle(t, o, h, low, c, v, closed=True, length_ms=MINUTE)

    want = _frame_rows(resample(_frame(rows), MINUTE, tf))
    _assert_bars_equal(_bars(emitted), want)
    assert builder.late == 0
    # The incomplete last bucket is not emitted by either, but it is the forming bar.
    last_start = tf.floor(rows[-1][0])
    complete = rows[-1][0] + MINUTE == last_start + tf.ms
    assert (bool(want) and want[-1][0] == last_start) == complete
    forming = builder.forming()
    if complete:
        assert forming is None
    else:
        bucket = [r for r in rows if tf.floor(r[0]) == last_start]
        assert forming is not None
        assert forming[:5] == (
            last_start,
            bucket[0][1],
            max(r[2] for r in bucket),
            min(r[3] for r in bucket),
            bucket[-1][4],
        )
        assert forming.volume == pytest.approx(sum(r[5] for r in bucket), rel=1e-12)


@settings(max_examples=40, deadline=None)
@given(rows=minute_candles())
def test_forming_only_candles_close_when_next_bucket_starts(rows) -> None:
    """Without closed flags a bucket closes only when a later bucket's first candle arrives."""
    tf = Timeframe.parse("5m")
    builder = BarBuilder(tf, fill_gaps=False, capacity=200)
    emitted: list[Bar] = []
    builder.subscribe(emitted.append)
    for t, o, h, low, c, v, _ in rows:
        builder.add_candle(t, o, h, low, c, v)
    want = [
        r for r in _frame_rows(resample(_frame(rows), MINUTE, tf)) if r[0] < tf.floor(rows[-1][0])
    ]
    _assert_bars_equal(_bars(emitted), want)
    assert builder.forming() is not None
    assert builder.forming().time == tf.floor(rows[-1][0])


def test_candle_updates_last_wins_and_closed_candle_closes_bar() -> None:
    tf = Timeframe.parse("5m")
    b = BarBuilder(tf, fill_gaps=False)
    out: list[Bar] = []
    b.subscribe(out.append)
    t = T0 + 10 * MINUTE
    b.add_candle(t, 10.0, 11.0, 9.0, 10.5, 1.0, closed=True, length_ms=MINUTE)
    # Three updates of the 2nd candle: a spike that is later revised away, then the final.
    b.add_candle(t + MINUTE, 10.5, 99.0, 10.5, 98.0, 2.0, length_ms=MINUTE)
    b.add_candle(t + MINUTE, 10.5, 12.0, 1.0, 11.0, 3.0, length_ms=MINUTE)
    b.add_candle(t + MINUTE, 10.5, 12.0, 10.0, 11.5, 4.0, closed=True, length_ms=MINUTE)
    assert b.forming() == Bar(t, 10.0, 12.0, 9.0, 11.5, 5.0)
    b.add_candle(t + 2 * MINUTE, 11.5, 11.5, 11.0, 11.0, 1.0, closed=True, length_ms=MINUTE)
    b.add_candle(t + 3 * MINUTE, 11.0, 11.2, 10.8, 11.1, 1.0, closed=True, length_ms=MINUTE)
    # The last minute, still forming: the bar stays open.
    b.add_candle(t + 4 * MINUTE, 11.1, 11.3, 11.0, 11.2, 0.5, length_ms=MINUTE)
    assert out == []
    # A closed candle without its length cannot tell that it ends the bar.
    b.add_candle(t + 4 * MINUTE, 11.1, 11.3, 11.0, 11.25, 0.75, closed=True)
    assert out == []
    b.add_candle(t + 4 * MINUTE, 11.1, 11.4, 10.9, 11.3, 1.0, closed=True, length_ms=MINUTE)
    assert out == [Bar(t, 10.0, 12.0, 9.0, 11.3, 8.0)]
    assert b.forming() is None
    # A stale update of a candle of the closed bar is late, not a new bar.
    b.add_candle(t + 4 * MINUTE, 11.1, 11.4, 10.9, 11.35, 1.1, closed=True, length_ms=MINUTE)
    assert b.late == 1 and len(out) == 1
    # An update of an earlier minute inside the forming bar is late too.
    b.add_candle(t + 6 * MINUTE, 1.0, 1.0, 1.0, 1.0, 1.0, length_ms=MINUTE)
    b.add_candle(t + 5 * MINUTE, 2.0, 2.0, 2.0, 2.0, 2.0, length_ms=MINUTE)
    assert b.late == 2
    assert b.forming() == Bar(t + 5 * MINUTE, 1.0, 1.0, 1.0, 1.0, 1.0)


def test_same_timeframe_closed_candle_closes_at_once() -> None:
    b = BarBuilder(Timeframe.parse("1h"), fill_gaps=False)
    out: list[Bar] = []
    b.subscribe(out.append)
    b.add_candle(T0, 1.0, 2.0, 0.5, 1.5, 3.0, length_ms=3_600_000)
    assert out == []
    b.add_candle(T0, 1.0, 2.5, 0.5, 1.75, 4.0, closed=True, length_ms=3_600_000)
    assert out == [Bar(T0, 1.0, 2.5, 0.5, 1.75, 4.0)]
    assert b.forming() is None


def test_resample_rejects_coarser_data_and_handles_empty() -> None:
    frame = _frame([(T0, 1.0, 1.0, 1.0, 1.0, 1.0), (T0 + 3_600_000, 1.0, 1.0, 1.0, 1.0, 1.0)])
    with pytest.raises(ValueError):
        resample(frame, 3_600_000, Timeframe.parse("5m"))
    empty = _frame([])
    assert len(resample(empty, MINUTE, Timeframe.parse("5m"))) == 0


# --------------------------------------------------------------------------------------
# Join and RatioSeries
# --------------------------------------------------------------------------------------


@st.composite
def two_calendars(draw):
    """Crypto: every day (a few missing); equity: weekdays only, shifted window."""
    n_a = draw(st.integers(min_value=0, max_value=40))
    shift = draw(st.integers(min_value=-20, max_value=30))
    n_b = draw(st.integers(min_value=0, max_value=40))
    missing = draw(st.sets(st.integers(min_value=0, max_value=40), max_size=4))
    days_a = [T0 + d * DAY for d in range(n_a) if d not in missing]
    days_b = [
        T0 + d * DAY
        for d in range(shift, shift + n_b)
        if datetime.fromtimestamp((T0 + d * DAY) / 1000, UTC).weekday() < 5
    ]
    order = draw(st.sampled_from(["a_first", "b_first", "interleaved"]))
    if order == "a_first":
        sides = [0] * len(days_a) + [1] * len(days_b)
    elif order == "b_first":
        sides = [1] * len(days_b) + [0] * len(days_a)
    else:
        sides = draw(st.permutations([0] * len(days_a) + [1] * len(days_b)))
    price_a = draw(st.lists(PRICES, min_size=len(days_a), max_size=len(days_a)))
    price_b = draw(st.lists(PRICES, min_size=len(days_b), max_size=len(days_b)))
    return days_a, days_b, sides, price_a, price_b


def _feed(builders, days, prices, sides) -> None:
    idx = [0, 0]
    for side in sides:
        i = idx[side]
        idx[side] += 1
        t, p = days[side][i], prices[side][i]
        builders[side].add_candle(t, p, p * 1.01, p * 0.99, p, 1.0, closed=True, length_ms=DAY)


@settings(max_examples=100, deadline=None)
@given(cal=two_calendars())
def test_join_is_the_inner_join_on_time(cal) -> None:
    days_a, days_b, sides, price_a, price_b = cal
    tf = Timeframe.parse("1d")
    a = BarBuilder(tf, fill_gaps=True)
    b = BarBuilder(tf, fill_gaps=False)
    ra: list[Bar] = []
    rb: list[Bar] = []
    a.subscribe(ra.append)
    b.subscribe(rb.append)
    join = Join(a, b)
    pairs: list[tuple[Bar, Bar]] = []
    join.subscribe(lambda x, y: pairs.append((x, y)))
    ratio = RatioSeries(a, b, capacity=5)
    ratios: list[Bar] = []
    ratio.subscribe(ratios.append)

    _feed((a, b), (days_a, days_b), (price_a, price_b), sides)

    assert [x.time for x in ra] == days_a
    assert [x.time for x in rb] == days_b
    by_b = {x.time: x for x in rb}
    want = [(x, by_b[x.time]) for x in ra if x.time in by_b]
    assert sorted(pairs, key=lambda p: p[0].time) == want
    # Emitted in time order with no pair twice.
    assert [p[0].time for p in pairs] == sorted({p[0].time for p in pairs})
    assert all(x.time == y.time for x, y in pairs)

    want_ratio = [Bar(x.time, *(4 * [x.close / y.close]), 0.0) for x, y in want]
    assert sorted(ratios) == want_ratio
    assert [r.close for r in ratios] == [x.close / y.close for x, y in pairs]
    assert len(ratio.bars) == min(5, len(want_ratio))
    if want_ratio:
        assert ratio.bars.last() == ratios[-1]
    assert ratio.bars.close.window().tolist() == [r.close for r in ratios[-5:]]


@pytest.mark.parametrize("a_first", [True, False])
def test_join_crypto_week_vs_equity_week(a_first: bool) -> None:
    tf = Timeframe.parse("1d")
    a = BarBuilder(tf, fill_gaps=True)
    b = BarBuilder(tf, fill_gaps=False)
    join = Join(a, b)
    pairs: list[tuple[int, float, float]] = []
    join.subscribe(lambda x, y: pairs.append((x.time, x.close, y.close)))
    monday = T0 + 4 * DAY  # 2024-08-05
    crypto = [(monday + d * DAY, 100.0 + d) for d in range(14)]
    equity = [(monday + d * DAY, 10.0 + d) for d in range(3, 14) if d % 7 < 5]
    feeds = [(a, crypto), (b, equity)] if a_first else [(b, equity), (a, crypto)]
    for builder, bars in feeds:
        for t, p in bars:
            builder.add_candle(t, p, p, p, p, 1.0, closed=True, length_ms=DAY)
    want = [(monday + d * DAY, 100.0 + d, 10.0 + d) for d in (3, 4, 7, 8, 9, 10, 11)]
    assert pairs == want


def test_join_forming_needs_both_legs_at_the_same_time() -> None:
    tf = Timeframe.parse("1m")
    a = BarBuilder(tf)
    b = BarBuilder(tf)
    join = Join(a, b)
    ratio = RatioSeries(a, b)
    assert join.forming() is None
    a.add_trade(T0 + 1_000, 3000.0, 1.0, 1)
    assert join.forming() is None  # b has no forming bar
    assert ratio.forming() is None
    b.add_trade(T0 + MINUTE + 1, 60_000.0, 1.0, 1)
    assert join.forming() is None  # different bar times
    a.add_trade(T0 + MINUTE + 2, 3300.0, 1.0, 2)
    pair = join.forming()
    assert pair == (a.forming(), b.forming())
    assert pair[0].time == pair[1].time == T0 + MINUTE
    r = 3300.0 / 60_000.0
    assert ratio.forming() == Bar(T0 + MINUTE, r, r, r, r, 0.0)
    a.advance(T0 + 2 * MINUTE)
    assert join.forming() is None  # a closed its bar
    b.advance(T0 + 2 * MINUTE)
    assert join.last_time == T0 + MINUTE
    assert ratio.bars.last() == Bar(T0 + MINUTE, r, r, r, r, 0.0)


# --------------------------------------------------------------------------------------
# Timeframe
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "name", "ms"),
    [
        ("1m", "1m", 60_000),
        ("5m", "5m", 300_000),
        ("15m", "15m", 900_000),
        ("1h", "1h", 3_600_000),
        ("4h", "4h", 14_400_000),
        ("1d", "1d", 86_400_000),
        ("1w", "1w", 604_800_000),
        ("2d", "2d", 172_800_000),
    ],
)
def test_timeframe_parse(text: str, name: str, ms: int) -> None:
    tf = Timeframe.parse(text)
    assert tf.name == name == str(tf)
    assert tf.ms == ms


@pytest.mark.parametrize("text", ["0m", "1x", "", "m", "-1m", "1.5h", "h1"])
def test_timeframe_parse_errors(text: str) -> None:
    with pytest.raises(ValueError):
        Timeframe.parse(text)


def _ms(*args: int) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp() * 1000)


def test_week_floor_is_monday_midnight_utc() -> None:
    week = Timeframe.parse("1w")
    assert week.floor(_ms(2024, 1, 3)) == _ms(2024, 1, 1)
    assert week.floor(_ms(2024, 1, 3, 13, 45)) == _ms(2024, 1, 1)
    assert week.floor(_ms(2024, 1, 1)) == _ms(2024, 1, 1)
    assert week.floor(_ms(2024, 1, 1) - 1) == _ms(2023, 12, 25)
    assert week.floor(_ms(2024, 1, 7, 23, 59)) == _ms(2024, 1, 1)
    assert Timeframe.parse("1d").floor(_ms(2024, 1, 3, 13, 45)) == _ms(2024, 1, 3)
    assert Timeframe.parse("4h").floor(_ms(2024, 1, 3, 13, 45)) == _ms(2024, 1, 3, 12)


@settings(max_examples=200, deadline=None)
@given(
    t=st.integers(min_value=0, max_value=4_102_444_800_000),
    name=st.sampled_from(["1m", "5m", "15m", "1h", "4h", "1d", "2d", "1w"]),
)
def test_floor_contains_t_and_weeks_start_monday(t: int, name: str) -> None:
    tf = Timeframe.parse(name)
    f = tf.floor(t)
    assert f <= t < f + tf.ms
    assert tf.floor(f) == f
    if name == "1w":
        d = datetime.fromtimestamp(f / 1000, UTC)
        assert (d.weekday(), d.hour, d.minute, d.second, d.microsecond) == (0, 0, 0, 0, 0)
    else:
        assert f % tf.ms == 0


def test_weekly_bars_open_on_monday() -> None:
    b = BarBuilder(Timeframe.parse("1w"), fill_gaps=True)
    out: list[Bar] = []
    b.subscribe(out.append)
    b.add_trade(_ms(2024, 1, 3, 12), 1.0, 1.0, 1)  # Wednesday
    b.add_trade(_ms(2024, 1, 7, 23, 59), 2.0, 1.0, 2)  # Sunday, same week
    assert b.forming() == Bar(_ms(2024, 1, 1), 1.0, 2.0, 1.0, 2.0, 2.0)
    b.add_trade(_ms(2024, 1, 22), 3.0, 1.0, 3)  # Monday two weeks later
    assert out == [
        Bar(_ms(2024, 1, 1), 1.0, 2.0, 1.0, 2.0, 2.0),
        Bar(_ms(2024, 1, 8), 2.0, 2.0, 2.0, 2.0, 0.0),
        Bar(_ms(2024, 1, 15), 2.0, 2.0, 2.0, 2.0, 0.0),
    ]


def test_dedupe_memory_is_bounded_by_the_window() -> None:
    b = BarBuilder(Timeframe.parse("1m"), dedupe_window=8)
    for i in range(1_000):
        b.add_trade(T0 + i, 1.0, 1.0, i)
        b.add_trade(T0 + i, 1.0, 1.0, i)
    assert b.duplicates == 1_000
    assert len(b._seen_ids) <= 8
    # An id within the window is still a duplicate; one far outside it is forgotten.
    b.add_trade(T0 + 1_000, 1.0, 1.0, 995)
    assert b.duplicates == 1_001
    b.add_trade(T0 + 1_000, 1.0, 1.0, 3)
    assert b.duplicates == 1_001


# --------------------------------------------------------------------------------------
# Real data: Binance ETHUSDT trades (hftbacktest capture) vs pandas groupby
# --------------------------------------------------------------------------------------


def _read_trades(path: Path, limit: int) -> list[tuple[int, float, float, int]]:
    trades = []
    with gzip.open(path, "rt") as f:
        for line in f:
            _, _, payload = line.partition(" ")
            msg = json.loads(payload)
            if not str(msg.get("stream", "")).endswith("@trade"):
                continue
            d = msg["data"]
            trades.append((int(d["T"]), float(d["p"]), float(d["q"]), int(d["t"])))
            if len(trades) == limit:
                break
    return trades


@pytest.fixture(scope="module")
def eth_trades(data_dir: Path) -> list[tuple[int, float, float, int]]:
    trades = _read_trades(data_dir / "ws/hftbacktest_binance_spot/ethusdt_20240808.gz", 3_000)
    assert len(trades) == 3_000
    return trades


@pytest.mark.parametrize("replay", ["each_twice", "stream_twice"])
def test_real_eth_trades_match_pandas_groupby(eth_trades, replay: str) -> None:
    df = pd.DataFrame(eth_trades, columns=["T", "p", "q", "t"])
    assert df["T"].is_monotonic_increasing  # so nothing is late
    g = df.groupby(df["T"] // MINUTE * MINUTE, sort=True).agg(
        open=("p", "first"),
        high=("p", "max"),
        low=("p", "min"),
        close=("p", "last"),
        volume=("q", "sum"),
    )
    # Fill empty minutes the way a 24/7 kline does (there are none in this slice).
    full = g.reindex(range(int(g.index[0]), int(g.index[-1]) + 1, MINUTE))
    flat = full["volume"].isna()
    full["close"] = full["close"].ffill()
    for col in ("open", "high", "low"):
        full.loc[flat, col] = full.loc[flat, "close"]
    full.loc[flat, "volume"] = 0.0
    want = list(full.itertuples(name=None))

    builder = BarBuilder(Timeframe.parse("1m"), fill_gaps=True, capacity=16)
    emitted: list[Bar] = []
    builder.subscribe(emitted.append)
    if replay == "each_twice":
        feed = [tr for tr in eth_trades for _ in range(2)]
    else:
        feed = eth_trades + eth_trades
    for t, p, q, i in feed:
        builder.add_trade(t, p, q, i)

    assert builder.duplicates == len(eth_trades)
    assert builder.late == 0
    # All minutes but the last are closed; the last is still forming.
    assert len(emitted) == len(want) - 1 >= 2
    _assert_bars_equal(_bars(emitted), want[:-1])
    forming = builder.forming()
    assert forming is not None
    _assert_bars_equal([tuple(forming)], want[-1:])
    assert builder.bars.last() == emitted[-1]


def test_advance_never_fills_between_candles() -> None:
    """Missing candles are data gaps whatever the clock does; only trade intervals fill."""
    tf = Timeframe.parse("5m")
    for with_clock in (False, True):
        builder = BarBuilder(tf, fill_gaps=True)
        closed: list[Bar] = []
        builder.subscribe(closed.append)
        builder.add_candle(0, 1.0, 1.0, 1.0, 1.0, 1.0, closed=True, length_ms=300_000)
        if with_clock:
            builder.advance(1_500_000)
        builder.add_candle(1_500_000, 2.0, 2.0, 2.0, 2.0, 1.0, closed=True, length_ms=300_000)
        assert [b.time for b in closed] == [0, 1_500_000]


def test_hold_and_settle_replace_gap_bars_with_the_exchanges_own() -> None:
    """Bars a disconnection overlapped are held, then settled from REST klines, in order."""
    m = 60_000
    builder = BarBuilder(Timeframe.parse("1m"), fill_gaps=True)
    out: list[Bar] = []
    builder.subscribe(out.append)
    builder.add_trade(0 * m + 1, 10.0, 1.0, 1)
    builder.add_trade(1 * m + 1, 11.0, 1.0, 2)
    builder.add_trade(2 * m + 1, 12.0, 1.0, 3)  # bar 2 forming when the socket drops
    builder.hold()  # disconnected: hold everything
    builder.add_trade(5 * m + 30_000, 15.0, 1.0, 9)  # first live trade: bar 5 is partial
    builder.hold(5 * m)
    assert [b.time // m for b in out] == [0, 1]  # 2 (partial) and flat 3, 4 are held
    builder.add_trade(6 * m + 1, 16.0, 1.0, 10)  # bar 5 closes: held too
    builder.add_trade(7 * m + 1, 17.0, 1.0, 11)  # bar 6 closes while the repair is in flight
    assert builder.holding and [b.time // m for b in out] == [0, 1]
    # the feed fetches klines up to the suspect bar 5; a later one (7) must not be emitted
    rest = [Bar(t * m, 10.0 + t, 10.5 + t, 9.5 + t, 10.2 + t, 7.0) for t in (2, 3, 4, 5, 7)]
    builder.settle(rest)
    assert [b.time // m for b in out] == [0, 1, 2, 3, 4, 5, 6]  # 7 is forming: not from REST
    assert out[2:6] == rest[:4]  # the exchange's bars replaced the partial and flat ones
    assert out[6] == Bar(6 * m, 16.0, 16.0, 16.0, 16.0, 1.0)  # closed after the gap: own bar
    assert not builder.holding and builder.hold_through == -1
    assert builder.forming().time == 7 * m
    builder.add_trade(8 * m + 1, 18.0, 1.0, 12)
    assert out[-1].time == 7 * m  # no longer held


def test_settle_inserts_bars_that_never_formed_here() -> None:
    m = 60_000
    builder = BarBuilder(Timeframe.parse("1m"), fill_gaps=False)
    out: list[Bar] = []
    builder.subscribe(out.append)
    builder.add_trade(0 * m + 1, 10.0, 1.0, None)
    builder.hold()
    builder.add_trade(3 * m + 1, 13.0, 1.0, None)  # closes bar 0 (held); 1, 2 never formed
    builder.hold(3 * m)
    builder.add_trade(4 * m + 1, 14.0, 1.0, None)  # closes bar 3 (held)
    rest = [Bar(t * m, t, t, t, t, 1.0) for t in range(0, 5)]
    builder.settle(rest)
    assert [b.time // m for b in out] == [0, 1, 2, 3]
    assert out == rest[:4]
