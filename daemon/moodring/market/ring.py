"""Fixed-capacity numpy ring buffers whose windows come out in time order without copying."""

from __future__ import annotations

import numpy as np

from moodring.market.bar import Bar


class RingBuffer:
    """The latest ``capacity`` values of one series, O(1) push, contiguous window views.

    Every value is stored twice, at ``i`` and ``i + capacity``, so that any window of the
    latest ``n`` values is one contiguous slice: reads never copy or wrap.
    """

    __slots__ = ("_buf", "_capacity", "_next", "_size")

    def __init__(self, capacity: int, dtype: type = np.float64) -> None:
        if capacity <= 0:
            raise ValueError("capacity must be positive")
        self._capacity = capacity
        self._buf: np.ndarray = np.zeros(2 * capacity, dtype=dtype)
        self._next = 0
        self._size = 0

    @property
    def capacity(self) -> int:
        """Return the most values the buffer holds."""
        return self._capacity

    def __len__(self) -> int:
        return self._size

    def push(self, value: float) -> None:
        """Append a value, evicting the oldest once full."""
        i = self._next
        self._buf[i] = value
        self._buf[i + self._capacity] = value
        i += 1
        self._next = 0 if i == self._capacity else i
        if self._size < self._capacity:
            self._size += 1

    def window(self, n: int | None = None) -> np.ndarray:
        """Return a read-only view of the latest ``n`` values (all by default), oldest first."""
        if n is not None and n < 0:
            raise ValueError("window length must not be negative")
        size = self._size if n is None else min(n, self._size)
        end = self._next + self._capacity
        view = self._buf[end - size : end]
        view.flags.writeable = False
        return view

    def last(self, back: int = 0) -> float:
        """Return the value ``back`` pushes ago (0 is the latest)."""
        if not 0 <= back < self._size:
            raise IndexError(f"no value {back} pushes back in a ring of {self._size}")
        value: float = self._buf[self._next + self._capacity - 1 - back].item()
        return value


class BarRing:
    """The latest ``capacity`` closed bars as columns: open time int64 ms, OHLCV float64."""

    __slots__ = ("close", "high", "low", "open", "time", "volume")

    def __init__(self, capacity: int) -> None:
        self.time = RingBuffer(capacity, np.int64)
        self.open = RingBuffer(capacity)
        self.high = RingBuffer(capacity)
        self.low = RingBuffer(capacity)
        self.close = RingBuffer(capacity)
        self.volume = RingBuffer(capacity)

    def __len__(self) -> int:
        return len(self.time)

    def push(self, bar: Bar) -> None:
        """Append a closed bar."""
        self.time.push(bar.time)
        self.open.push(bar.open)
        self.high.push(bar.high)
        self.low.push(bar.low)
        self.close.push(bar.close)
        self.volume.push(bar.volume)

    def last(self) -> Bar | None:
        """Return the latest closed bar, if any."""
        if not len(self):
            return None
        return Bar(
            int(self.time.last()),
            self.open.last(),
            self.high.last(),
            self.low.last(),
            self.close.last(),
            self.volume.last(),
        )
