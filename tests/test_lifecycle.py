"""Components: tasks in a TaskGroup while entered, stopped on leaving; first_completed."""

from __future__ import annotations

import asyncio
import logging

import pytest

from moodring.lifecycle import Component, Group, first_completed


class Worker(Component):
    """A component with one task that runs until cancelled, noting what happens to it."""

    def __init__(self, name: str, events: list[str], *, fail: bool = False) -> None:
        self.label = name
        self.events = events
        self.fail = fail
        self.started = asyncio.Event()

    @property
    def name(self) -> str:
        return self.label

    async def _setup(self) -> None:
        self.events.append(f"{self.label} setup")
        self.spawn(self._work())

    async def _work(self) -> None:
        self.started.set()
        if self.fail:
            raise RuntimeError(f"{self.label} broke")
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.events.append(f"{self.label} cancelled")
            raise

    async def _wind_down(self) -> None:
        self.events.append(f"{self.label} wind-down")

    async def _teardown(self) -> None:
        self.events.append(f"{self.label} teardown")


async def test_first_completed_returns_the_first_result_and_cancels_the_rest() -> None:
    cancelled = asyncio.Event()

    async def slow() -> str:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "slow"

    async def quick() -> str:
        await asyncio.sleep(0)
        return "quick"

    assert await first_completed(slow(), quick()) == "quick"
    assert cancelled.is_set()  # awaited, not left running


async def test_first_completed_raises_the_first_failure() -> None:
    async def broken() -> None:
        raise ValueError("watch failed")

    with pytest.raises(ValueError, match="watch failed"):
        await first_completed(asyncio.Event().wait(), broken())


async def test_a_component_runs_its_tasks_while_entered_and_stops_them_on_leaving() -> None:
    events: list[str] = []
    worker = Worker("w", events)
    async with worker:
        await asyncio.wait_for(worker.started.wait(), 10)
        assert worker.running
        with pytest.raises(RuntimeError, match="already running"):
            await worker.__aenter__()
    assert not worker.running
    assert events == ["w setup", "w wind-down", "w cancelled", "w teardown"]
    async with worker:  # reusable
        await asyncio.wait_for(worker.started.wait(), 10)
    assert events[-1] == "w teardown" and events.count("w setup") == 2


async def test_a_failing_task_stops_the_block_and_its_error_comes_out() -> None:
    events: list[str] = []
    with pytest.raises(ExceptionGroup) as caught:
        async with Worker("w", events, fail=True):
            await asyncio.sleep(30)  # cancelled by the failure
    assert [str(e) for e in caught.value.exceptions] == ["w broke"]
    assert events[-1] == "w teardown"


async def test_a_task_that_swallows_its_cancel_is_cancelled_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    swallowed = asyncio.Event()

    class Stubborn(Component):
        stop_timeout = 0.05

        async def _setup(self) -> None:
            self.spawn(self._work(), name="stubborn")

        async def _work(self) -> None:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                swallowed.set()  # a cancel lost, as asyncio.wait_for can lose one on 3.11
            await asyncio.Event().wait()

    async with Stubborn():
        await asyncio.sleep(0)
    assert swallowed.is_set()
    assert "stubborn did not stop within 0.05 s; cancelling it again" in caplog.text


async def test_a_group_winds_all_parts_down_before_stopping_them_in_reverse() -> None:
    events: list[str] = []
    group = Group([Worker("a", events), Worker("b", events)])
    async with group:
        assert events == ["a setup", "b setup"]
        events.clear()
    assert events[:2] == ["a wind-down", "b wind-down"]
    assert set(events[2:4]) == {"a cancelled", "b cancelled"}  # both asked to stop at once
    assert events[4:] == ["b teardown", "a teardown"]


async def test_a_group_replaces_its_parts_while_running() -> None:
    events: list[str] = []
    old, new = Worker("old", events), Worker("new", events)
    async with Group([old]) as group:
        await group.replace([new])
        assert not old.running and new.running
        stopped = ["old wind-down", "old cancelled", "old teardown"]
        assert events == ["old setup", *stopped, "new setup"]
    assert events[-1] == "new teardown"


async def test_a_failed_setup_leaves_nothing_running(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    events: list[str] = []
    first = Worker("first", events)

    class Broken(Component):
        async def _setup(self) -> None:
            raise OSError("port taken")

    with pytest.raises(OSError, match="port taken"):
        async with Group([first, Broken()]):
            pass
    assert not first.running and events[-1] == "first teardown"
