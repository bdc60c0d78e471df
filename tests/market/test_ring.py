"""RingBuffer and BarRing: fixed memory, time-ordered read-only windows, exact int64 times."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moodring.market.bar import Bar
from moodring.market.ring import BarRing, RingBuffer

FLOATS = st.floats(allow_nan=False, allow_infinity=True, width=64)
CAPACITY = st.integers(min_value=1, max_value=50)


def _filled(capacity: int, values: list[float]) -> RingBuffer:
    rb = RingBuffer(capacity)
    for v in values:
        rb.push(v)
    return rb


@settings(max_examples=200, deadline=None)
@given(capacity=CAPACITY, values=st.lists(FLOATS, max_size=160))
def test_len_and_window_are_the_latest_values_in_order(capacity: int, values: list[float]) -> None:
    rb = _filled(capacity, values)
    expected = np.array(values[-capacity:] if values else [], dtype=np.float64)
    assert len(rb) == min(len(values), capacity)
    assert rb.capacity == capacity
    window = rb.window()
    assert window.dtype == np.float64
    assert np.array_equal(window, expected)
    for n in range(capacity + 3):
        want = expected[len(expected) - min(n, len(expected)) :]
        assert np.array_equal(rb.window(n), want), n


@settings(max_examples=200, deadline=None)
@given(capacity=CAPACITY, values=st.lists(FLOATS, max_size=160))
def test_last_is_kth_from_the_end_and_raises_past_len(capacity: int, values: list[float]) -> None:
    rb = _filled(capacity, values)
    kept = values[-capacity:] if values else []
    for k in range(len(kept)):
        assert rb.last(k) == kept[-1 - k]
    if kept:
        assert rb.last() == kept[-1]
    for k in (len(rb), len(rb) + 1, capacity, capacity + 7):
        if k >= len(rb):
            with pytest.raises(IndexError):
                rb.last(k)


@settings(max_examples=100, deadline=None)
@given(capacity=CAPACITY, values=st.lists(FLOATS, min_size=1, max_size=120), more=st.lists(FLOATS))
def test_windows_are_read_only_views(capacity: int, values: list[float], more: list[float]) -> None:
    rb = _filled(capacity, values)
    window = rb.window()
    part = rb.window(1)
    with pytest.raises(ValueError):
        window[0] = 1.0
    with pytest.raises(ValueError):
        part[-1] = 1.0
    with pytest.raises(ValueError):
        window += 1.0
    # The window is a view into the ring's storage, not a copy. It is only valid until the
    # next push: later pushes overwrite the slots it looks at, so nothing is asserted on
    # ``window`` after the pushes below.
    assert np.shares_memory(window, rb._buf)
    assert window.base is not None
    for v in more:
        rb.push(v)
    # A fresh window after the pushes is correct again.
    expected = np.array((values + more)[-capacity:], dtype=np.float64)
    assert np.array_equal(rb.window(), expected)


def test_empty_buffer() -> None:
    rb = RingBuffer(3)
    assert len(rb) == 0
    assert rb.window().shape == (0,)
    assert rb.window(5).shape == (0,)
    with pytest.raises(IndexError):
        rb.last()


@pytest.mark.parametrize("capacity", [0, -1])
def test_capacity_must_be_positive(capacity: int) -> None:
    with pytest.raises(ValueError):
        RingBuffer(capacity)


def test_memory_does_not_grow() -> None:
    rb = RingBuffer(64)
    nbytes = rb._buf.nbytes
    buf = rb._buf
    for i in range(100_000):
        rb.push(float(i))
    assert rb.capacity == 64
    assert len(rb) == 64
    assert rb._buf is buf
    assert rb._buf.nbytes == nbytes == 2 * 64 * 8
    assert np.array_equal(rb.window(), np.arange(100_000 - 64, 100_000, dtype=np.float64))
    assert rb.last() == 99_999.0


@settings(max_examples=100, deadline=None)
@given(
    capacity=CAPACITY,
    offsets=st.lists(st.integers(min_value=0, max_value=10**9), max_size=120),
)
def test_int64_buffer_holds_times_exactly(capacity: int, offsets: list[int]) -> None:
    # 1_700_000_000_000 + odd offsets would lose digits in a float32 and the largest
    # values here are beyond 2**53 / 2**10, so any float round trip would show.
    times = [1_700_000_000_000 + o * 1_000_003 + o for o in offsets] + [2**62 + 1]
    rb = RingBuffer(capacity, np.int64)
    for t in times:
        rb.push(t)
    kept = times[-capacity:]
    window = rb.window()
    assert window.dtype == np.int64
    assert window.tolist() == kept
    last = rb.last()
    assert isinstance(last, int)
    assert last == times[-1] == 2**62 + 1


def test_int64_exact_millisecond_times() -> None:
    rb = RingBuffer(4, np.int64)
    for t in (1_700_000_000_000, 1_700_000_000_001, 1_700_000_060_000):
        rb.push(t)
    assert rb.window().tolist() == [1_700_000_000_000, 1_700_000_000_001, 1_700_000_060_000]
    assert rb.last(1) == 1_700_000_000_001


BARS = st.builds(
    Bar,
    st.integers(min_value=0, max_value=4_000_000_000_000),
    FLOATS,
    FLOATS,
    FLOATS,
    FLOATS,
    FLOATS,
)


@settings(max_examples=100, deadline=None)
@given(capacity=st.integers(min_value=1, max_value=20), bars=st.lists(BARS, max_size=60))
def test_bar_ring_push_last_round_trip(capacity: int, bars: list[Bar]) -> None:
    ring = BarRing(capacity)
    assert ring.last() is None
    for bar in bars:
        ring.push(bar)
        got = ring.last()
        assert got == bar
        assert isinstance(got, Bar)
        assert isinstance(got.time, int)
    assert len(ring) == min(len(bars), capacity)
    kept = bars[-capacity:]
    assert ring.time.window().tolist() == [b.time for b in kept]
    assert ring.time.window().dtype == np.int64
    for column in ("open", "high", "low", "close", "volume"):
        window = getattr(ring, column).window()
        assert window.dtype == np.float64
        assert np.array_equal(window, np.array([getattr(b, column) for b in kept], np.float64))


def test_bar_ring_explicit() -> None:
    ring = BarRing(2)
    a = Bar(1_700_000_000_000, 1.0, 2.0, 0.5, 1.5, 10.0)
    b = Bar(1_700_000_060_000, 1.5, 1.75, 1.25, 1.5, 0.0)
    c = Bar(1_700_000_120_000, 1.5, 3.0, 1.0, 2.5, 7.25)
    for bar in (a, b, c):
        ring.push(bar)
    assert ring.last() == c
    assert len(ring) == 2
    assert ring.time.window().tolist() == [b.time, c.time]
    assert ring.close.last(1) == 1.5


def test_negative_arguments_are_rejected() -> None:
    rb = RingBuffer(3)
    for v in (2.0, 3.0, 4.0):
        rb.push(v)
    with pytest.raises(IndexError):
        rb.last(-1)
    with pytest.raises(ValueError):
        rb.window(-1)
