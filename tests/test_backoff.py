"""Reconnect backoff: doubling, capped, jittered, and never overflowing."""

from __future__ import annotations

import random

from moodring.backoff import Backoff


def test_delays_double_up_to_the_cap_with_jitter() -> None:
    backoff = Backoff(1.0, 60.0, rng=random.Random(3))
    delays = [backoff.next() for _ in range(10)]
    for n, delay in enumerate(delays):
        full = min(60.0, 2.0**n)
        assert full / 2 <= delay <= full
    backoff.reset()
    assert backoff.next() <= 1.0


def test_thousands_of_attempts_stay_at_the_cap() -> None:
    backoff = Backoff(0.001, 60.0)
    for _ in range(5000):
        delay = backoff.next()
    assert 30.0 <= delay <= 60.0
