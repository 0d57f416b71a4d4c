"""Waiting helpers: a cancellation that arrives together with the awaited thing is kept."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from router.aio import get_within, wait_event


async def _cancel_as_it_completes(
    wait: Callable[[], Awaitable[object]], wake: Callable[[], None]
) -> None:
    """Run ``while True: await wait()`` in a task, then wake it and cancel it in the same
    loop iteration: the task must end cancelled instead of looping on."""

    async def forever() -> None:
        while True:
            await wait()

    task = asyncio.create_task(forever())
    await asyncio.sleep(0)  # the task is now waiting
    wake()
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=2)
    assert done, "the cancellation was lost: the task is still running"
    assert task.cancelled()


async def test_wait_event_keeps_a_cancellation_that_comes_with_the_event() -> None:
    event = asyncio.Event()

    async def wait() -> None:
        await wait_event(event, 5)
        event.clear()

    await _cancel_as_it_completes(wait, event.set)


async def test_get_within_keeps_a_cancellation_that_comes_with_an_item() -> None:
    queue: asyncio.Queue[int] = asyncio.Queue()
    await _cancel_as_it_completes(lambda: get_within(queue, 5), lambda: queue.put_nowait(1))


async def test_wait_event_times_out_and_returns_at_once_when_set() -> None:
    event = asyncio.Event()
    assert await wait_event(event, 0.01) is False
    event.set()
    assert await wait_event(event, 0) is True


async def test_get_within_times_out() -> None:
    queue: asyncio.Queue[int] = asyncio.Queue()
    with pytest.raises(TimeoutError):
        await get_within(queue, 0.01)
