"""Lifecycles of long-lived parts: async context managers that run their tasks in a TaskGroup.

Each part of the daemon (a feed, the dispatcher, the MQTT publisher, the HTTP endpoint …)
is used as ``async with part:``, like aiomqtt's ``Client`` or Starlette's lifespan: entering
starts it, leaving the block stops it, so whoever composes parts (an ``AsyncExitStack``)
states their start and stop order in code.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Coroutine, Iterable, Sequence
from types import TracebackType
from typing import Any, Self, TypeVar

log = logging.getLogger("moodring")

T = TypeVar("T")

# Seconds a part's tasks get to end once cancelled; then the stragglers are cancelled again
# (a cleanup that hangs, e.g. a socket's closing handshake, is cut short).
STOP_TIMEOUT = 1.5


async def first_completed(*awaitables: Awaitable[T]) -> T:
    """Run ``awaitables`` side by side until one ends; cancel the others, return its result.

    If the first to end raised, that error is raised (the others are cancelled and awaited
    either way, so nothing is left running).
    """
    tasks = [asyncio.ensure_future(aw) for aw in awaitables]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    ended = [task for task in tasks if not task.cancelled()] or tasks
    failed = [task for task in ended if not task.cancelled() and task.exception() is not None]
    return (failed or ended)[0].result()


class Component:
    """A long-lived part: ``async with part:`` runs it, leaving the block stops it.

    Entering acquires what the part needs and starts its tasks (``_setup``, which calls
    ``spawn``); they run in an ``asyncio.TaskGroup``. A failure in ``_setup`` leaves nothing
    running. Leaving winds down (``_wind_down``: work in flight gets its last chance),
    cancels the tasks, waits up to ``stop_timeout`` seconds for them (then cancels the
    stragglers again) and releases (``_teardown``). A task that fails cancels the task that
    entered the part, as in a TaskGroup, and its error comes out of ``async with`` in an
    ExceptionGroup. Like aiomqtt's ``Client``, a component is reusable but not reentrant;
    enter and leave it from one task.
    """

    stop_timeout: float = STOP_TIMEOUT
    _lifecycle_group: asyncio.TaskGroup | None = None
    _lifecycle_stopping = False
    _lifecycle_tasks: set[asyncio.Task[Any]]
    _lifecycle_lasting: tuple[asyncio.Task[Any], ...] = ()

    @property
    def name(self) -> str:
        """Return what the logs call the part."""
        return type(self).__name__

    @property
    def running(self) -> bool:
        """Return whether the part is entered and every task ``_setup`` started still runs."""
        return (
            self._lifecycle_group is not None
            and not self._lifecycle_stopping
            and not any(task.done() for task in self._lifecycle_lasting)
        )

    def spawn(self, coro: Coroutine[Any, Any, T], *, name: str | None = None) -> asyncio.Task[T]:
        """Run ``coro`` as a task of the part: it is stopped when the part stops."""
        if self._lifecycle_group is None:
            coro.close()
            raise RuntimeError(f"{self.name} is not running")
        task = self._lifecycle_group.create_task(coro, name=name or self.name)
        self._lifecycle_tasks.add(task)
        task.add_done_callback(self._lifecycle_tasks.discard)
        if self._lifecycle_stopping:
            task.cancel()  # started by a callback while stopping: it never runs
        return task

    def cancel(self) -> None:
        """Ask the part's tasks to stop (leaving the block waits for them)."""
        for task in getattr(self, "_lifecycle_tasks", ()):
            task.cancel()

    async def __aenter__(self) -> Self:
        if self._lifecycle_group is not None:
            raise RuntimeError(f"{self.name} is already running (reusable, not reentrant)")
        group = asyncio.TaskGroup()
        await group.__aenter__()
        self._lifecycle_group, self._lifecycle_tasks = group, set()
        try:
            await self._setup()
        except BaseException:
            await self._shutdown()
            raise
        self._lifecycle_lasting = tuple(self._lifecycle_tasks)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self._wind_down()
        finally:
            await self._shutdown()

    async def _setup(self) -> None:
        """Acquire what the part needs and start its tasks with ``spawn`` (may raise)."""

    async def _wind_down(self) -> None:
        """Finish the work in flight before the tasks are cancelled."""

    async def _teardown(self) -> None:
        """Release what ``_setup`` acquired, once the tasks have ended."""

    async def _shutdown(self) -> None:
        """Cancel the tasks, wait for them, leave the TaskGroup, release."""
        group = self._lifecycle_group
        if group is None:
            return
        self._lifecycle_stopping = True
        self.cancel()
        try:
            await self._await_tasks()
        finally:
            try:
                # the tasks are cancelled: this only raises the errors of tasks that failed
                await group.__aexit__(None, None, None)
            finally:
                self._lifecycle_group, self._lifecycle_stopping = None, False
                self._lifecycle_lasting = ()
                await self._teardown()

    async def _await_tasks(self) -> None:
        """Wait for the cancelled tasks; cancel again the ones still running after the bound."""
        while pending := {task for task in self._lifecycle_tasks if not task.done()}:
            _, pending = await asyncio.wait(pending, timeout=self.stop_timeout)
            if pending:
                names = ", ".join(sorted(task.get_name() for task in pending))
                log.warning(
                    "%s did not stop within %g s; cancelling it again", names, self.stop_timeout
                )
                for task in pending:
                    task.cancel()


class Group(Component):
    """Components run as one: entered in order, stopped together, left in reverse order.

    Leaving winds every part down at once, asks every part to stop at once, then leaves
    each: the group takes as long to stop as its slowest part, not as all of them together.
    ``replace`` swaps the parts of a running group the same way (a reload).
    """

    def __init__(self, parts: Iterable[Component] = (), *, name: str = "") -> None:
        self.parts: Sequence[Component] = tuple(parts)
        self._group_label = name
        self._group_stack: contextlib.AsyncExitStack | None = None

    @property
    def name(self) -> str:
        """Return what the logs call the group."""
        return self._group_label or ", ".join(part.name for part in self.parts) or "nothing"

    @property
    def running(self) -> bool:
        """Return whether the group is entered and every part runs."""
        return self._lifecycle_group is not None and all(part.running for part in self.parts)

    def cancel(self) -> None:
        """Ask every part to stop."""
        super().cancel()
        for part in self.parts:
            part.cancel()

    async def replace(self, parts: Iterable[Component]) -> None:
        """Stop the current parts and start ``parts`` in their place (if the group runs)."""
        if self._lifecycle_group is None:
            self.parts = tuple(parts)
            return
        await self._leave()
        self.parts = tuple(parts)
        await self._enter()

    async def _setup(self) -> None:
        await self._enter()

    async def _wind_down(self) -> None:
        # the parts' own wind-downs, side by side (they touch no TaskGroup)
        await asyncio.gather(*(part._wind_down() for part in self.parts))

    async def _teardown(self) -> None:
        await self._leave(wound_down=True)

    async def _enter(self) -> None:
        stack = self._group_stack = contextlib.AsyncExitStack()
        try:
            for part in self.parts:
                await stack.enter_async_context(_Entered(part))
        except BaseException:
            await self._leave(wound_down=True)
            raise

    async def _leave(self, *, wound_down: bool = False) -> None:
        stack, self._group_stack = self._group_stack, None
        if stack is None:
            return
        if not wound_down:
            await self._wind_down()
        for part in self.parts:
            part.cancel()
        await stack.aclose()


class _Entered:
    """A part entered by a Group: leaving it skips the wind-down the group did for all."""

    def __init__(self, part: Component) -> None:
        self.part = part

    async def __aenter__(self) -> Component:
        return await self.part.__aenter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.part._shutdown()
