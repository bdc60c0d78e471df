"""Stream clocks: each stream's exchange time, which no single frame can move."""

from __future__ import annotations

import time
from collections.abc import Callable

# A frame stamped further than this ahead of its stream's clock waits for a later frame of
# the stream to confirm the jump; a contradicted one is skipped as from the future.
FUTURE_MS = 5_000
# A frame stamped further than this ahead of its stream's clock that opens a new bar may
# have closed the previous one early: the bars it touched are repaired from REST.
EARLY_MS = 500


class StreamClock:
    """One stream's exchange time: the exchange's clock, or the stream's when it runs ahead.

    A frame's time counts only once a later frame is at least as late, so the stream's time
    is the earlier of its latest two frames' times (moved on by the wall time since): a
    replay faster than real time is followed, one frame stamped ahead is not.
    """

    __slots__ = ("_at", "_clock", "_confirmed", "_frame", "_frame_ms", "_previous_ms")

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._confirmed = -1
        self._at = 0.0
        self._frame = -1
        self._frame_ms = -1
        self._previous_ms = -1

    def read(self, now_ms: int) -> int:
        """Return the stream's time, never behind ``now_ms`` (the exchange's clock)."""
        if self._confirmed < 0:  # called for every item: ``time()`` inlined
            return now_ms
        moved = self._confirmed + int((self._clock() - self._at) * 1000)
        return moved if moved > now_ms else now_ms

    def time(self) -> int | None:
        """Return the stream's own time, ahead of or behind any other clock (None: untold)."""
        if self._confirmed < 0:
            return None
        return self._confirmed + int((self._clock() - self._at) * 1000)

    def note(self, t_ms: int, frame: int) -> None:
        """Take the time of an item (trade, candle) of frame number ``frame``."""
        if frame != self._frame:
            self._previous_ms, self._frame, self._frame_ms = self._frame_ms, frame, t_ms
        elif t_ms > self._frame_ms:
            self._frame_ms = t_ms
        else:
            return
        previous, latest = self._previous_ms, self._frame_ms
        confirmed = previous if previous < latest else latest  # min() without the call
        if confirmed > self._confirmed:
            self._confirmed, self._at = confirmed, self._clock()
