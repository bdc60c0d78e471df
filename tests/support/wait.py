"""Waiting for a condition in async tests, bounded only to turn a hang into a failure."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable


async def until(
    condition: Callable[[], bool | Awaitable[bool]],
    what: str | Callable[[], str] = "the condition",
    *,
    timeout: float = 30.0,
) -> None:
    """Wait until ``condition()`` (awaited if need be) holds; fail naming ``what`` on time-out.

    ``what`` may be a function: it is called at the time-out, to say the state then.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await _holds(condition):
        if loop.time() > deadline:
            said = what() if callable(what) else what
            raise AssertionError(f"timed out after {timeout:g} s waiting for {said}")
        await asyncio.sleep(0.01)


async def _holds(condition: Callable[[], bool | Awaitable[bool]]) -> bool:
    """Return what ``condition()`` says, awaiting it if it must be."""
    result = condition()
    return await result if inspect.isawaitable(result) else result
