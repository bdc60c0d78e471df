"""Where the engine's alerts go in the daemon: silences first, then the durable outbox.

The outbox is written on the engine's path. When it cannot be (a full disk, an I/O error,
a read-only filesystem), alerts wait in order in a bounded queue in memory and are written
once it can again: a storage error never reaches a feed.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from moodring.delivery.dispatcher import Dispatcher
from moodring.lifecycle import Component
from moodring.rules.alert import Alert
from moodring.rules.silences import Silence, Silences
from moodring.times import format_duration, iso_time

log = logging.getLogger("moodring.delivery")

# Alerts held in memory while the outbox cannot be written; beyond, the oldest is lost.
BACKLOG = 10_000
# Seconds between attempts to write held alerts (each new alert tries too).
RETRY_EVERY = 5.0


@dataclass(frozen=True, slots=True)
class _Held:
    """An alert to write, with its rule's state; ``send`` false: only the state is saved."""

    alert: Alert
    rule_state: str | None
    send: bool


class AlertIntake(Component):
    """Takes each alert: a silenced one is logged and dropped, any other is enqueued.

    ``dispatcher`` may be replaced (a reload); alerts held in memory stay and go to the new
    one. ``held``, ``lost`` and ``problem()`` tell how the outbox is doing. ``async with
    sink:`` retries held alerts every ``RETRY_EVERY`` seconds; leaving the block writes them
    a last time (and logs the ones it cannot as lost).
    """

    def __init__(
        self,
        dispatcher: Dispatcher,
        silences: Silences,
        clock: Callable[[], float] = time.time,
        *,
        capacity: int = BACKLOG,
    ) -> None:
        self.dispatcher = dispatcher
        self._silences = silences
        self._clock = clock
        self._capacity = capacity
        self._held: deque[_Held] = deque()
        self.silenced = 0
        self.lost = 0
        self._failure: str | None = None
        self._failing_since = 0.0
        self._written_late = 0
        self._lost_before = 0
        self._silences_failing = False

    @property
    def held(self) -> int:
        """Return how many alerts wait in memory for the outbox."""
        return len(self._held)

    def problem(self) -> str | None:
        """Return why alerts cannot be written now (None while the outbox takes them)."""
        if self._failure is None:
            return None
        return (
            f"outbox {self.dispatcher.outbox.path} cannot be written ({self._failure}); "
            f"{len(self._held)} alert(s) held in memory, {self.lost} lost"
        )

    def __call__(self, alert: Alert, rule_state: str | None = None) -> None:
        """Enqueue ``alert`` (with its rule's state) unless its rule is silenced."""
        silence = self._silence(alert)
        if silence is not None:
            self.silenced += 1
            log.info(
                "silenced %s %s at %s (until %s: %s)",
                alert.rule,
                alert.state,
                iso_time(alert.time),
                iso_time(int(silence.until * 1000)),
                silence.reason or "-",
            )
            if rule_state is not None:
                self._keep(_Held(alert, rule_state, send=False))
            return
        self._keep(_Held(alert, rule_state, send=True))

    def keep_state(self, alert: Alert, rule_state: str) -> None:
        """Save the rule state of an alert that is not sent (it is too late to matter)."""
        self._keep(_Held(alert, rule_state, send=False))

    def flush(self) -> bool:
        """Write the held alerts to the outbox, oldest first; return whether none is left."""
        held = self._held
        while held:
            try:
                self._write(held[0])
            except (sqlite3.Error, OSError) as exc:
                self._failed(exc)
                return False
            held.popleft()
            if self._failure is not None:
                self._written_late += 1
        if self._failure is not None:
            self._recovered()
        return True

    async def _setup(self) -> None:
        self.spawn(self.retry(), name="outbox retry")

    async def _teardown(self) -> None:
        if not self.flush():
            log.error(
                "%d alert(s) LOST: still held in memory at exit (%s)", self.held, self.problem()
            )

    async def retry(self, every: float = RETRY_EVERY) -> None:
        """Write held alerts every ``every`` seconds until cancelled."""
        while True:
            await asyncio.sleep(every)
            if self._held:
                self.flush()

    def _keep(self, item: _Held) -> None:
        held = self._held
        if len(held) >= self._capacity:
            gone = held.popleft()
            self.lost += 1
            log.error(
                "alert %s LOST: the outbox cannot be written and %d alerts are held in memory "
                "already (%d lost so far)",
                gone.alert.key,
                self._capacity,
                self.lost,
            )
        held.append(item)
        if not self.flush() and item.send:
            log.warning(
                "alert %s held in memory (%d held): the outbox cannot be written",
                item.alert.key,
                len(held),
            )

    def _write(self, item: _Held) -> None:
        alert = item.alert
        if item.send:
            if self.dispatcher.enqueue(alert, item.rule_state):
                log.info("alert %s %s at %s queued", alert.rule, alert.state, iso_time(alert.time))
        elif item.rule_state is not None:
            self.dispatcher.outbox.save_rule_state(alert.rule, alert.time, item.rule_state)

    def _failed(self, exc: Exception) -> None:
        reason = f"{type(exc).__name__}: {exc}"
        if self._failure is None:
            self._failing_since = time.monotonic()
            self._written_late = 0
            self._lost_before = self.lost
            log.error(
                "outbox %s cannot be written (%s): alerts are held in memory (at most %d) and "
                "written once it can; retrying every %.0f s and on each alert",
                self.dispatcher.outbox.path,
                reason,
                self._capacity,
                RETRY_EVERY,
            )
        elif reason != self._failure:
            path = self.dispatcher.outbox.path
            log.error("outbox %s still cannot be written, now: %s", path, reason)
        self._failure = reason

    def _recovered(self) -> None:
        log.warning(
            "outbox %s written again after %s: %d held alert(s) saved, %d lost",
            self.dispatcher.outbox.path,
            format_duration(time.monotonic() - self._failing_since),
            self._written_late,
            self.lost - self._lost_before,
        )
        self._failure = None

    def _silence(self, alert: Alert) -> Silence | None:
        """Return the silence muting the alert's rule; an unreadable file silences nothing."""
        try:
            silence = self._silences.silenced(alert.rule, self._clock())
        except (OSError, ValueError, TypeError) as exc:
            if not self._silences_failing:
                log.error(
                    "silences %s unreadable (%s: %s): no rule is silenced until it is fixed",
                    self._silences.path,
                    type(exc).__name__,
                    exc,
                )
            self._silences_failing = True
            return None
        if self._silences_failing:
            log.warning("silences %s readable again", self._silences.path)
            self._silences_failing = False
        return silence
