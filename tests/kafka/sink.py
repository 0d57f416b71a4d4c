"""A recording :class:`router.abc.Sink` for source-level tests: keeps what the source puts,
lets the test acknowledge records through the source, and records revokes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Collection, Hashable, Sequence

from router.models import Record
from tests.sources.fakes import SupervisedSink


class RecordingSink(SupervisedSink):
    """Holds up to ``capacity`` unacknowledged records (``put`` waits beyond that)."""

    def __init__(self, capacity: int = 10_000) -> None:
        super().__init__()
        self.capacity = capacity
        self.records: list[Record] = []
        self.held = 0
        self.revoked: list[tuple[frozenset[Hashable], float]] = []
        self.reports: list[str] = []
        self.on_revoke: Callable[[Collection[Hashable]], None] | None = None
        self._changed = asyncio.Condition()
        self._room = asyncio.Event()
        self._room.set()

    async def put(self, records: Sequence[Record]) -> None:
        while self.held >= self.capacity:
            self._room.clear()
            await self._room.wait()
        self.held += len(records)
        async with self._changed:
            self.records.extend(records)
            self._changed.notify_all()

    def free(self) -> int:
        return max(0, self.capacity - self.held)

    async def wait_for_room(self) -> None:
        return None

    async def revoke(self, lanes: Collection[Hashable], timeout: float) -> None:
        self.revoked.append((frozenset(lanes), timeout))
        if self.on_revoke is not None:
            self.on_revoke(lanes)
        async with self._changed:
            self._changed.notify_all()

    def report(self, result: str) -> None:
        super().report(result)
        self.reports.append(result)

    def release(self, n: int) -> None:
        """The test handled ``n`` records: make room for more."""
        self.held -= n
        if self.held < self.capacity:
            self._room.set()

    async def wait_for(
        self, predicate: Callable[[], bool], timeout: float = 20.0, what: str = "condition"
    ) -> None:
        deadline = time.monotonic() + timeout
        async with self._changed:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out waiting for {what}")
                try:
                    await asyncio.wait_for(self._changed.wait(), left)
                except TimeoutError:
                    raise AssertionError(f"timed out waiting for {what}") from None

    async def wait_count(self, n: int, timeout: float = 20.0) -> list[Record]:
        await self.wait_for(lambda: len(self.records) >= n, timeout, f"{n} records")
        return self.records[:n]
