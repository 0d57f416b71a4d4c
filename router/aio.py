"""Waiting with a timeout without losing a cancellation; stopping tasks and closing
resources without hiding what failed; writing what arrives concurrently in one call
(:class:`GroupCommit`).

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
from typing import Any, Generic, TypeVar

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


class GroupCommit(Generic[T]):
    """Writes items submitted concurrently in as few calls of ``write`` as possible: while
    ``writers`` writes run, the items that arrive wait and go together in the next one.
    ``submit`` returns once its item was written (or raises what the write raised)."""

    def __init__(
        self, write: Callable[[list[T]], Awaitable[None]], limit: int, writers: int = 1
    ) -> None:
        self._write = write
        self._limit = limit
        self._writers = writers
        self._pending: list[tuple[T, asyncio.Future[None]]] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, item: T) -> None:
        future = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if len(self._tasks) < self._writers:
            task = asyncio.create_task(self._run(), name="group-commit")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        await future

    async def _run(self) -> None:
        try:
            while self._pending:
                batch = self._pending[: self._limit]
                del self._pending[: self._limit]
                try:
                    await self._write([item for item, _ in batch])
                except Exception as e:  # noqa: BLE001 - each submitter gets the error
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(e)
                    continue
                for _, future in batch:
                    if not future.done():
                        future.set_result(None)
        finally:
            # Done with this one (an item submitted meanwhile starts another writer).
            self._tasks.discard(asyncio.current_task())  # type: ignore[arg-type,unused-ignore]

    async def aclose(self) -> None:
        if self._tasks:
            await asyncio.wait(list(self._tasks))
