"""The bar clock: closes bars whose interval has ended even when no trade comes to close them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

from moodring.feeds.source import FeedPart
from moodring.lifecycle import Component
from moodring.pipeline import Pipeline

# Trades may arrive this long after their bar ended and still count.
CLOSE_GRACE_MS = 2_000

# called with the engine and the time after each round (to pass forming values on)
RoundListener = Callable[[Pipeline, int], None]


class BarClock(Component):
    """Once a second: close the bars each feed's clock has passed, look after the feeds.

    A part with a stream clock closes its feeds' bars by each stream's time, its feeds in
    one moment (``Pipeline.deferred``), once warmed up (connected: its time is known); feeds
    on the local clock close together. ``beat`` is the monotonic time of the latest round
    (the watchdog checks it).
    """

    def __init__(
        self,
        engine: Callable[[], Pipeline],
        parts: Callable[[], Sequence[FeedPart]],
        on_round: RoundListener | None = None,
        *,
        every: float = 1.0,
    ) -> None:
        self._engine = engine
        self._parts = parts
        self._on_round = on_round
        self.every = every
        self.beat = time.monotonic()

    async def _setup(self) -> None:
        self.beat = time.monotonic()
        self.spawn(self._run(), name="bar clock")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.every)
            self.beat = time.monotonic()
            self.tick()

    def tick(self) -> None:
        """Close what the clocks have passed; tell ``on_round``."""
        engine = self._engine()
        wall: list[str] = []
        for part in self._parts():
            if not part.running:
                continue  # not started yet, or stopping
            if part.clock == "wall":
                wall.extend(part.feeds)
            elif part.warmed.is_set():  # a stream's time is told once it has connected
                with engine.deferred():  # each feed by its own stream's clock, one moment
                    for feed in part.feeds:
                        engine.advance(part.clock_ms(feed) - CLOSE_GRACE_MS, (feed,))
            part.on_clock()
        now = int(time.time() * 1000)
        if wall:
            engine.advance(now - CLOSE_GRACE_MS, wall)
        if self._on_round is not None:
            self._on_round(engine, now)
