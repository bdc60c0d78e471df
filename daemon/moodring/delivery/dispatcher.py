"""Deliver the outbox off the engine's path: one worker per target, in order, with backoff."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import math
import os
import random
import sqlite3
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Literal

from moodring.delivery.outbox import KEEP_DELIVERED, Delivery, Outbox
from moodring.delivery.sender import Sender, alert_fields, mask_url, routed_targets, target_id
from moodring.lifecycle import Component
from moodring.rules.alert import Alert
from moodring.settings import NotifyConfig
from moodring.times import format_duration

log = logging.getLogger("moodring.delivery")

IDLE_POLL = 60.0  # an idle worker re-reads the outbox this often even without a kick
CRASH_PAUSE = 1.0  # pause after an unexpected error in a worker (e.g. the database)
JITTER = 0.1

RenderChart = Callable[[dict], Awaitable[bytes | None]]
# called after each delivery attempt with the target's id and whether it succeeded
DeliveryListener = Callable[[str, bool], None]
# called with the target's id when one of its deliveries is given up (dead)
DeadListener = Callable[[str], None]
# what became of one delivery attempt
Outcome = Literal["sent", "failed", "dead"]


UNRECORDED = " but the outbox cannot record it yet: it is not sent again"

# Seconds between WAL checkpoints of the outbox.
CHECKPOINT_EVERY = 5.0
# A head that has failed this many times retry_max stops holding back the target's queue.
OVERTAKE_AFTER = 2.0
# Seconds between two looks for rows older than notify.max_age (a scan of the queue).
EXPIRE_EVERY = 60.0


class _Bucket:
    """A token bucket: ``rate`` tokens a minute, burst ``rate``, on an injectable clock."""

    def __init__(self, rate_per_minute: int, now: float) -> None:
        self.capacity = float(rate_per_minute)
        self.per_second = rate_per_minute / 60.0
        self.tokens = self.capacity
        self.last = now

    def take(self, now: float) -> float:
        """Take a token and return 0, or return the seconds until one is available."""
        self.tokens = min(self.capacity, self.tokens + max(0.0, now - self.last) * self.per_second)
        self.last = max(self.last, now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.per_second


class Dispatcher(Component):
    """Drain the outbox through apprise: per-target order, backoff, rate limit, charts.

    Per target, the oldest pending row (the head) holds back the rows behind it while it
    fails, until it has failed for ``OVERTAKE_AFTER`` x ``retry_max``: then the next row is
    tried right after each of its failures, and once one goes through the head is
    *overtaken* and retries behind the rest. Were the next row to fail too (the service is
    down), order is kept. A row is dead (kept, never retried, ``on_dead`` told) on a
    permanent failure (HTTP 4xx but 408/429, an unusable URL), after
    ``notify.max_attempts`` attempts, or once ``notify.max_age`` has passed since it was
    queued.

    ``async with dispatcher:`` runs one worker per target (and the outbox checkpoints);
    leaving the block gives queued alerts ``drain`` seconds, then cancels the workers:
    cancelling mid-send leaves that delivery pending, so it is sent again on the next start
    (at least once, never silently dropped). Use from the event loop thread.
    """

    def __init__(
        self,
        outbox: Outbox,
        notify: NotifyConfig,
        *,
        sender: Sender | None = None,
        render_chart: RenderChart | None = None,
        chart_dir: Path | None = None,
        clock: Callable[[], float] = time.time,
        on_result: DeliveryListener | None = None,
        on_dead: DeadListener | None = None,
        drain: float = 0.0,
    ) -> None:
        self.drain_on_exit = drain
        self._outbox = outbox
        self._on_result = on_result
        self._on_dead = on_dead
        self._notify = notify
        self._sender = sender if sender is not None else Sender(notify)
        self._render_chart = render_chart
        self._chart_dir = chart_dir if chart_dir is not None else outbox.path.parent / "charts"
        self._clock = clock
        self._urls: dict[str, str] = {}
        for target in notify.urls:
            url = target.url.get_secret_value()
            self._urls.setdefault(target_id(url), url)
        self._masked = {tid: mask_url(url) for tid, url in self._urls.items()}
        now = clock()
        self._buckets = {tid: _Bucket(notify.rate_per_minute, now) for tid in self._urls}
        self._expiry_due = dict.fromkeys(self._urls, now)
        self._locks = {tid: asyncio.Lock() for tid in self._urls}
        self._wake = {tid: asyncio.Event() for tid in self._urls}
        self._progress = asyncio.Event()
        self._charts: OrderedDict[str, asyncio.Task[Path | None]] = OrderedDict()
        self._random = random.Random()
        self._running = False
        self._sent = 0
        self._failed = 0
        # rows sent whose delivery the outbox could not record (a full disk): never resent
        self._unrecorded: set[int] = set()
        self._dead = 0

    @property
    def sent(self) -> int:
        """Return how many deliveries succeeded since start."""
        return self._sent

    @property
    def failed(self) -> int:
        """Return how many delivery attempts failed since start."""
        return self._failed

    @property
    def dead(self) -> int:
        """Return how many deliveries were given up since start."""
        return self._dead

    @property
    def queued(self) -> int:
        """Return the outbox depth (rows still to deliver; dead ones are not counted)."""
        return self._outbox.depth()

    def targets_for(self, alert: Alert) -> list[str]:
        """Return the target ids an alert is routed to."""
        ids = (target_id(t.url.get_secret_value()) for t in routed_targets(alert, self._notify))
        return list(dict.fromkeys(ids))

    @property
    def outbox(self) -> Outbox:
        """Return the outbox this dispatcher drains."""
        return self._outbox

    def enqueue(self, alert: Alert, rule_state: str | None = None) -> bool:
        """Add an alert for its routed targets and kick the workers; False if a duplicate.

        ``rule_state`` is saved with it in one transaction (see ``Outbox.add``).
        """
        added = self._outbox.add(alert, self.targets_for(alert), rule_state)
        if added:
            self.kick()
        return added

    def kick(self) -> None:
        """Wake every worker: there is new work (call after ``outbox.add``)."""
        for event in self._wake.values():
            event.set()

    async def _setup(self) -> None:
        """Start one worker per target and the checkpoints."""
        self._prepare()
        self._running = True
        for tid in self._urls:
            self.spawn(self._worker(tid), name=f"delivery to {self._masked[tid]}")
        self.spawn(self._checkpoints(), name="outbox checkpoints")

    async def _wind_down(self) -> None:
        """Give queued alerts ``drain_on_exit`` seconds (the rest stay queued)."""
        if self.drain_on_exit > 0 and not await self.drain(self.drain_on_exit):
            log.warning(
                "%d alert(s) still queued; they go out after the next start", self._outbox.depth()
            )

    async def _teardown(self) -> None:
        self._running = False

    async def _checkpoints(self, every: float = CHECKPOINT_EVERY) -> None:
        """Fold the outbox's WAL into its database now and then, off the event loop."""
        failing = False
        while True:
            await asyncio.sleep(every)
            try:
                await asyncio.to_thread(self._outbox.checkpoint)
            except Exception as exc:  # a busy or full database only delays the next one
                if not failing:
                    log.warning("outbox checkpoint failed: %s; retrying every %.0f s", exc, every)
                failing = True
                continue
            if failing:
                log.info("outbox checkpoint works again")
            failing = False

    async def drain(self, timeout: float) -> bool:
        """Deliver what is due (and falls due) within ``timeout``; return whether all is sent."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        workers: list[asyncio.Task[None]] = []
        if not self._running:
            self._prepare()
            workers = [asyncio.create_task(self._worker(tid)) for tid in self._urls]
        try:
            self.kick()
            while True:
                self._progress.clear()  # before the check, so no progress goes unseen
                remaining = deadline - loop.time()
                if self._outbox.depth() == 0 or remaining <= 0:
                    break
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(remaining):
                        await self._progress.wait()
        finally:
            for worker in workers:
                worker.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
        depth = self._outbox.depth()
        if depth:
            log.warning("drain: %d delivery(ies) still queued after %.1f s", depth, timeout)
        return depth == 0

    def _prepare(self) -> None:
        """Drop rows of targets no longer configured and prune old chart files."""
        for tid in self._outbox.targets():
            if tid not in self._urls:
                dropped = self._outbox.drop(tid)
                log.warning(
                    "dropped %d undelivered alert(s) for target %s: no longer configured",
                    dropped,
                    tid,
                )
        if self._chart_dir.is_dir():
            cutoff = time.time() - KEEP_DELIVERED
            for png in self._chart_dir.glob("*.png"):
                with contextlib.suppress(OSError):
                    if png.stat().st_mtime < cutoff:
                        png.unlink()

    async def _worker(self, tid: str) -> None:
        """Deliver one target's rows in order, forever."""
        wake = self._wake[tid]
        while True:
            wake.clear()
            try:
                wait = await self._step(tid)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("delivery worker for %s failed; retrying", self._masked[tid])
                wait = CRASH_PAUSE
            self._progress.set()
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(wait, IDLE_POLL)):
                        await wake.wait()

    async def _step(self, tid: str) -> float:
        """Try the target's next due row if allowed; return 0 or the seconds to wait."""
        async with self._locks[tid]:
            now = self._clock()
            if now >= self._expiry_due[tid]:
                self._expiry_due[tid] = now + EXPIRE_EVERY
                for row in self._outbox.expired(tid, now - self._notify.max_age):
                    age = format_duration(self._notify.max_age)
                    self._give_up(tid, row, f"not delivered within {age} (notify.max_age)", now)
            blocking = self._outbox.blocking(tid, limit=2)
            rows = self._outbox.overtaken(tid) + blocking[:1]
            if not rows:
                return math.inf
            for row in rows:
                if row.id in self._unrecorded:
                    return self._record(row.id)
            due = [row for row in rows if row.next_try <= now]
            if not due:
                return min(row.next_try for row in rows) - now
            wait = self._buckets[tid].take(now)
            if wait > 0:
                return wait
            row = min(due, key=lambda r: r.id)
            outcome = await self._attempt(tid, row)
            if row.id in self._unrecorded:
                return CRASH_PAUSE
            if outcome != "failed" or row.overtaken is not None or len(blocking) < 2:
                return 0.0
            since = row.failing_since if row.failing_since is not None else now
            if self._clock() - since < OVERTAKE_AFTER * self._notify.retry_max:
                return 0.0
            # the head has failed for long: does the target take the alert behind it?
            if self._buckets[tid].take(self._clock()) > 0.0:
                return 0.0
            if await self._attempt(tid, blocking[1], probe=True) != "sent":
                return 0.0
            # it does; unless the service has only just come back, the head is the problem
            retried = dataclasses.replace(row, attempts=row.attempts + 1)
            if (
                self._buckets[tid].take(self._clock()) > 0.0
                or await self._attempt(tid, retried) == "failed"
            ):
                self._outbox.mark_overtaken(row.id, self._clock())
                log.warning(
                    "%s to %s has failed for %s: later alerts go ahead of it while it retries",
                    row.alert.key,
                    self._masked[tid],
                    format_duration(self._clock() - since),
                    extra=alert_fields(row.alert, tid),
                )
            return 0.0

    def _record(self, delivery_id: int) -> float:
        """Mark a sent row delivered; return 0, or a pause if the outbox cannot be written."""
        try:
            self._outbox.mark_delivered(delivery_id)
        except (sqlite3.Error, OSError):
            return CRASH_PAUSE  # it stays in _unrecorded: recorded later, never sent again
        self._unrecorded.discard(delivery_id)
        return 0.0

    async def _attempt(self, tid: str, row: Delivery, *, probe: bool = False) -> Outcome:
        """Send one row and record the outcome: ``sent``, ``failed`` (to retry) or ``dead``.

        A failed probe (the row behind a long-failing head) is due again at once: it is
        tried as soon as it becomes the head.
        """
        attachment = await self._chart(row.alert)
        error = await self._sender.deliver(self._urls[tid], row.alert, attachment)
        attempt = row.attempts + 1
        now = self._clock()
        if self._on_result is not None:
            self._on_result(tid, error is None)
        if error is None:
            self._sent += 1
            self._unrecorded.add(row.id)
            wait = self._record(row.id)
            log.info(
                "sent %s to %s (attempt %d)%s",
                row.alert.key,
                self._masked[tid],
                attempt,
                UNRECORDED if wait else "",
                extra=alert_fields(row.alert, tid),
            )
            return "sent"
        self._failed += 1
        if error.permanent:
            self._give_up(tid, row, f"refused: {error}", now, attempted=True)
            return "dead"
        if attempt >= self._notify.max_attempts:
            reason = f"failed {attempt} times (notify.max_attempts), last: {error}"
            self._give_up(tid, row, reason, now, attempted=True)
            return "dead"
        delay = 0.0 if probe else self._backoff(attempt)
        self._outbox.mark_failed(row.id, str(error), now + delay, at=now)
        log.warning(
            "send %s to %s failed (attempt %d, %s): %s",
            row.alert.key,
            self._masked[tid],
            attempt,
            "tried past the failing head" if probe else f"retry in {delay:.2f} s",
            error,
            extra=alert_fields(row.alert, tid),
        )
        return "failed"

    def _give_up(
        self, tid: str, row: Delivery, reason: str, now: float, *, attempted: bool = False
    ) -> None:
        """Mark a row dead: logged, counted, kept in the outbox for ``moodring outbox``."""
        if not self._outbox.mark_dead(row.id, reason, now, attempted=attempted):
            return
        self._dead += 1
        if self._on_dead is not None:
            self._on_dead(tid)
        log.error(
            "gave up sending %s to %s: %s (kept as dead: moodring outbox --retry %d)",
            row.alert.key,
            self._masked[tid],
            reason,
            row.id,
            extra=alert_fields(row.alert, tid),
        )

    def _backoff(self, attempt: int) -> float:
        """Return the delay after a failed attempt: doubling from retry_initial, capped, ±10 %."""
        notify = self._notify
        base = min(notify.retry_max, notify.retry_initial * 2.0 ** min(attempt - 1, 60))
        return base * self._random.uniform(1.0 - JITTER, 1.0 + JITTER)

    async def _chart(self, alert: Alert) -> Path | None:
        """Return the alert's chart PNG, rendering it once; None without chart or on failure."""
        if alert.chart is None or self._render_chart is None:
            return None
        task = self._charts.get(alert.key)
        if task is None:
            render = self._render(alert)
            task = (
                self.spawn(render)
                if self._lifecycle_group is not None
                else asyncio.create_task(render)
            )
            self._charts[alert.key] = task
            while len(self._charts) > 256:
                self._charts.popitem(last=False)
        return await asyncio.shield(task)

    async def _render(self, alert: Alert) -> Path | None:
        """Render the chart to ``chart_dir/<sha256 of key>.png`` unless the file exists."""
        path = self._chart_dir / f"{hashlib.sha256(alert.key.encode()).hexdigest()}.png"
        if path.is_file():
            return path
        assert self._render_chart is not None and alert.chart is not None
        try:
            async with asyncio.timeout(self._notify.timeout or None):
                data = await self._render_chart(alert.chart)
        except Exception as exc:
            log.warning(
                "chart for %s failed (%s: %s); sending without it",
                alert.key,
                type(exc).__name__,
                exc,
            )
            return None
        if not data:
            log.warning("chart for %s rendered nothing; sending without it", alert.key)
            return None
        try:
            self._chart_dir.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_bytes(data)
            tmp.replace(path)
        except OSError as exc:
            log.warning("chart for %s not saved (%s); sending without it", alert.key, exc)
            return None
        return path
