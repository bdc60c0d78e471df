"""Reconnect delays: capped exponential backoff with full jitter."""

from __future__ import annotations

import random


class Backoff:
    """Delays of ``initial`` doubling up to ``cap`` seconds, each drawn in [d/2, d]."""

    def __init__(self, initial: float = 1.0, cap: float = 60.0, rng: random.Random | None = None):
        self.initial = initial
        self.cap = cap
        self.attempt = 0
        self._rng = rng or random.Random()

    def next(self) -> float:
        """Return the delay before the next attempt."""
        # the exponent stops growing once past the cap: 2**attempt would overflow a float
        delay = min(self.cap, self.initial * 2.0 ** min(self.attempt, 64))
        self.attempt += 1
        return delay / 2 + self._rng.random() * delay / 2

    def reset(self) -> None:
        """Start again from ``initial`` (after a healthy connection)."""
        self.attempt = 0
