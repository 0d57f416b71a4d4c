"""A recording Sink for testing sources without the core pipeline.

It behaves like the pipeline's sink as far as a source can tell: bounded room (``free()``),
``put`` waiting while full, records of a put kept in order. Tests take records out with
``get`` and decide themselves whether to ack or release them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Collection, Hashable, Sequence

from router.models import Record
from tests.sources.fakes import SupervisedSink


class RecordingSink(SupervisedSink):
    def __init__(self, capacity: int = 1000) -> None:
        super().__init__()
        self.capacity = capacity
        self.held = 0
        """Records put and not yet ``done``: what the pipeline would still be holding."""
        self.records: list[Record] = []
        self.puts = 0
        self.max_held = 0
        self._queue: asyncio.Queue[Record] = asyncio.Queue()
        self._room = asyncio.Condition()

    async def put(self, records: Sequence[Record]) -> None:
        async with self._room:
            await self._room.wait_for(lambda: self.held < self.capacity)
            self.held += len(records)
            self.max_held = max(self.max_held, self.held)
        self.puts += 1
        for r in records:
            self.records.append(r)
            self._queue.put_nowait(r)

    def free(self) -> int:
        return max(self.capacity - self.held, 0)

    async def wait_for_room(self) -> None:
        return None

    async def revoke(self, lanes: Collection[Hashable], timeout: float) -> None:
        return None

    async def done(self, count: int) -> None:
        """The pipeline finished with ``count`` records (acked or released)."""
        async with self._room:
            self.held -= count
            self._room.notify_all()

    async def get(self, count: int, timeout: float = 20.0) -> list[Record]:
        """The next ``count`` records put, waiting up to ``timeout`` for them."""
        deadline = time.monotonic() + timeout
        out: list[Record] = []
        while len(out) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"got {len(out)} of {count} records in {timeout}s")
            out.append(await asyncio.wait_for(self._queue.get(), remaining))
        return out

    def pending(self) -> int:
        return self._queue.qsize()
