"""Feed health: checks on every trade, bad-frame counts, rate-limited complaints."""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Callable

log = logging.getLogger("moodring.feeds")

# A trade stamped further than this from the local clock is not believed.
MAX_SKEW_MS = 10 * 60_000
# A trade stamped further than this before the local clock is too old to use.
MAX_AGE_MS = 7 * 86_400_000
# One log line per feed and reason at most this often (seconds); counts go on regardless.
LOG_EVERY = 60.0


class BadFrames:
    """Counts of skipped frames by (feed, reason), with one log line a minute per reason."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.counts: Counter[tuple[str, str]] = Counter()
        self._clock = clock
        self._logged: dict[tuple[str, str], tuple[float, int]] = {}

    def add(self, feed: str, reason: str, detail: str = "") -> None:
        """Count a skipped frame; log it unless this reason was logged in the last minute."""
        key = (feed, reason)
        self.counts[key] += 1
        now = self._clock()
        last, count_then = self._logged.get(key, (-math.inf, 0))
        if now - last >= LOG_EVERY:
            since = self.counts[key] - count_then - 1
            more = f" (+{since} more since the last report)" if since > 0 else ""
            log.warning("%s: bad frame skipped: %s %s%s", feed, reason, detail[:200], more)
            self._logged[key] = (now, self.counts[key])

    def total(self, feed: str | None = None) -> int:
        """Return how many frames were skipped (for one feed, or all)."""
        return sum(n for (f, _), n in self.counts.items() if feed is None or f == feed)


def trade_problem(t_ms: object, price: object, amount: object, now_ms: int) -> str | None:
    """Return why a trade cannot be used (missing field, bad number, odd time), or None."""
    if (
        type(t_ms) is int
        and type(price) is float
        and type(amount) is float
        and 0.0 < price < math.inf
        and 0.0 <= amount < math.inf
        and now_ms - MAX_AGE_MS <= t_ms <= now_ms + MAX_SKEW_MS
    ):
        return None  # the usual trade, every check below passed at once
    if t_ms is None or price is None or amount is None:
        return "missing field"
    if not isinstance(t_ms, int) or isinstance(t_ms, bool):
        return "bad timestamp"
    if not isinstance(price, int | float) or not isinstance(amount, int | float):
        return "bad number"
    if math.isnan(price) or math.isinf(price):
        return "price not finite"
    if price <= 0:
        return "price not positive"
    if math.isnan(amount) or math.isinf(amount) or amount < 0:
        return "bad amount"
    if t_ms > now_ms + MAX_SKEW_MS:
        return "timestamp in the future"
    if t_ms < now_ms - MAX_AGE_MS:
        return "timestamp too old"
    return None
