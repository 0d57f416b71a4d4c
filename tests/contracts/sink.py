"""The sink the Source contract suite hands to a source: what the pipeline does as far as a
source can tell (bounded room, ``put`` in lane order, revokes, a real supervisor), recorded
so that a test can look at what was put and decide itself what to ack or release."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Collection, Hashable, Sequence

from router.errors import SourceError
from router.models import Record
from tests.sources.fakes import SupervisedSink


class ContractSink(SupervisedSink):
    """Keeps every record put (``records``) and every revoke (``revoked``).

    ``fail_puts`` makes that many next ``put`` calls raise :class:`SourceError` without
    keeping their records, as a source's own read failing between fetching and handing over
    would: the records were read, and nobody will ever ack them.

    ``acker`` (the source's ``ack``) acks each put as soon as it is kept, as the pipeline
    does once a function took the batch: a FIFO queue hands out a group's next messages
    only after the ones before them are deleted."""

    def __init__(
        self,
        capacity: int = 1000,
        acker: Callable[[Sequence[Record]], Awaitable[None]] | None = None,
    ) -> None:
        super().__init__()
        self.acker = acker
        self.acked: list[Record] = []
        self.capacity = capacity
        self.records: list[Record] = []
        self.revoked: list[frozenset[Hashable]] = []
        self.fail_puts = 0
        self.failed_puts: list[list[Record]] = []
        self._changed = asyncio.Condition()

    async def put(self, records: Sequence[Record]) -> None:
        if self.fail_puts > 0:
            self.fail_puts -= 1
            self.failed_puts.append(list(records))
            raise SourceError("the contract sink refused this put (injected source error)")
        async with self._changed:
            self.records.extend(records)
            self._changed.notify_all()
        if self.acker is not None:
            await self.acker(records)
            self.acked.extend(records)

    def free(self) -> int:
        return self.capacity

    async def wait_for_room(self) -> None:
        return None

    async def revoke(self, lanes: Collection[Hashable], timeout: float) -> None:
        async with self._changed:
            self.revoked.append(frozenset(lanes))
            self._changed.notify_all()

    async def wait_for(
        self, predicate: Callable[[], bool], what: str, timeout: float = 30.0
    ) -> None:
        """Wait until ``predicate()`` holds (checked on every change and every 0.1 s)."""
        deadline = time.monotonic() + timeout
        async with self._changed:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
                try:
                    async with asyncio.timeout(min(left, 0.1)):
                        await self._changed.wait()
                except TimeoutError:
                    pass
