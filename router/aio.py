"""Waiting with a timeout without losing a cancellation; stopping tasks and closing
resources without hiding what failed.

On Python 3.11, ``asyncio.wait_for(awaitable, timeout)`` returns the awaitable's result when
the awaitable finishes in the same loop iteration as the task is cancelled: the cancellation
is lost (CPython gh-86296, fixed in 3.12). A loop like ``while True: await wait_for(
event.wait(), 5)`` then keeps running after ``task.cancel()``, and whoever awaits the task
waits forever. ``asyncio.timeout`` counts cancellations and has no such race, so the router
waits through these helpers instead.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")


async def wait_event(event: asyncio.Event, timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for ``event``; True when it is set."""
    if event.is_set():
        return True
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        return False
    return True


async def get_within(queue: asyncio.Queue[T], timeout: float) -> T:
    """``queue.get()`` that raises TimeoutError after ``timeout`` seconds."""
    async with asyncio.timeout(timeout):
        return await queue.get()


async def cancel_and_wait(task: asyncio.Task[Any], what: str, logger: logging.Logger) -> None:
    """Cancel ``task`` and wait until it ends. An exception it ends with instead of the
    cancellation is logged with ``what`` it was; a cancellation of the caller itself
    propagates."""
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise
    except Exception:
        logger.exception("%s failed while stopping", what)


async def close_logged(
    close: Callable[[], Awaitable[None]], what: str, logger: logging.Logger
) -> None:
    """Await ``close()``; a failure is logged, naming ``what`` was closed, and not raised (a
    close that fails must not keep what comes after it from closing)."""
    try:
        await close()
    except Exception:
        logger.exception("closing %s failed", what)
