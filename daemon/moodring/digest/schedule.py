"""When the digest is due: cron schedules in a time zone (DST as cron does it), and a runner."""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from moodring.lifecycle import Component
from moodring.settings import CHECKS

log = logging.getLogger("moodring.digest")

# asyncio.sleep runs on a monotonic clock that stands still while the machine is suspended, so
# long waits are cut into naps that re-read the wall clock.
MAX_NAP_S = 60.0

Fire = Callable[[datetime], Awaitable[object] | object]


class Schedule(Protocol):
    """A cron expression and the IANA time zone it is read in (``DigestConfig`` is one)."""

    @property
    def schedule(self) -> str:
        """Return the five-field cron expression."""
        ...

    @property
    def timezone(self) -> str:
        """Return the IANA time zone name."""
        ...


def check_schedule(expr: str) -> str:
    """Return a five-field cron expression unchanged, or raise ValueError saying what is wrong."""
    if len(expr.split()) != 5:
        raise ValueError(f"expected five cron fields (minute hour day month weekday): {expr!r}")
    try:
        CronSim(expr, datetime(2000, 1, 1, tzinfo=UTC))
    except CronSimError as exc:
        raise ValueError(f"invalid cron expression {expr!r}: {exc}") from None
    return expr


def check_timezone(name: str) -> str:
    """Return an IANA time zone name unchanged, or raise ValueError if it is unknown."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {name!r} (use an IANA name, e.g. Europe/Berlin)"
        ) from None
    return name


CHECKS.register("schedule", check_schedule)
CHECKS.register("timezone", check_timezone)


def next_fire(config: Schedule, after: datetime) -> datetime:
    """Return the first scheduled instant strictly after ``after``, in UTC.

    Wall times the clocks skip run at the change; wall times they repeat run once (as cron).
    """
    local = after.astimezone(ZoneInfo(config.timezone))
    return next(CronSim(config.schedule, local)).astimezone(UTC)


def utc_now() -> datetime:
    """Return the current time, timezone-aware in UTC."""
    return datetime.fromtimestamp(time.time(), UTC)


async def run_schedule(
    config: Schedule,
    fire: Fire,
    *,
    clock: Callable[[], datetime] = utc_now,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
) -> None:
    """Call ``fire(instant)`` at each scheduled instant until cancelled.

    Instants missed while the process slept or was suspended are folded into one call, for
    the latest of them. A ``fire`` that raises is logged and the schedule goes on.
    """
    due = next_fire(config, clock())
    while True:
        now = clock()
        if now < due:
            await sleep(min((due - now).total_seconds(), MAX_NAP_S))
            continue
        while (following := next_fire(config, due)) <= now:
            due = following
        try:
            result = fire(due)
            if inspect.isawaitable(result):
                await result
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("digest for %s failed", due.isoformat())
        due = next_fire(config, due)


class DigestSchedule(Component):
    """``async with DigestSchedule(config, fire):`` calls ``fire`` at each scheduled instant."""

    def __init__(self, config: Schedule, fire: Fire) -> None:
        self.config = config
        self.fire = fire

    async def _setup(self) -> None:
        self.spawn(run_schedule(self.config, self.fire), name="digest")
