"""Test doubles for source tests: an in-memory store (the methods sources use) and a sink
that records what a source puts and lets the test acknowledge it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Collection, Hashable, Mapping, Sequence
from datetime import datetime
from typing import Any

from router.backoff import Backoff
from router.models import Record
from router.supervisor import Supervisor

FAST_RESTART = Backoff(base=0.01, cap=0.05)


class SupervisedSink:
    """The parts of ``router.abc.Sink`` every recording sink shares: a real supervisor (fast
    backoff) reporting into ``results``, and ``reject`` kept in ``rejected``."""

    def __init__(self) -> None:
        self.status = "No records processed"
        self.results: list[str] = []
        self.rejected: list[tuple[dict[str, Any], str]] = []
        self.supervisor = Supervisor("test mapping", self, backoff=FAST_RESTART)

    def report(self, result: str) -> None:
        self.status = result
        self.results.append(result)

    async def reject(self, item: Mapping[str, Any], reason: str) -> None:
        self.rejected.append((dict(item), reason))


class MemoryStore:
    """The checkpoint, schedule-fire and lease parts of ``router.abc.Store``, in memory."""

    url = "memory://"

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.checkpoints: dict[str, dict[str, str]] = {}
        self.fires: dict[tuple[str, datetime], str] = {}
        self.leases: dict[str, tuple[str, float]] = {}
        self.put_calls = 0
        self._clock = clock

    async def get_checkpoints(self, mapping_uuid: str) -> dict[str, str]:
        return dict(self.checkpoints.get(mapping_uuid, {}))

    async def put_checkpoints(self, mapping_uuid: str, values: Mapping[str, str]) -> None:
        self.put_calls += 1
        self.checkpoints.setdefault(mapping_uuid, {}).update(values)

    async def delete_checkpoints(self, mapping_uuid: str, keys: Collection[str]) -> None:
        rows = self.checkpoints.get(mapping_uuid, {})
        for key in keys:
            rows.pop(key, None)

    async def claim_fire(
        self,
        schedule_key: str,
        scheduled_time: datetime,
        owner: str,
        *,
        pending: Mapping[str, str] | None = None,
    ) -> bool:
        await asyncio.sleep(0)
        if (schedule_key, scheduled_time) in self.fires:
            won = self.fires[(schedule_key, scheduled_time)] == owner
        else:
            self.fires[(schedule_key, scheduled_time)] = owner
            won = True
        if won and pending:
            self.checkpoints.setdefault(schedule_key, {}).update(pending)
        return won

    async def last_fire(self, schedule_key: str) -> datetime | None:
        times = [t for key, t in self.fires if key == schedule_key]
        return max(times, default=None)

    async def acquire_lease(self, key: str, owner: str, ttl: float) -> bool:
        now = self._clock()
        held = self.leases.get(key)
        if held is not None and held[0] != owner and held[1] > now:
            return False
        self.leases[key] = (owner, now + ttl)
        return True

    async def release_lease(self, key: str, owner: str) -> None:
        held = self.leases.get(key)
        if held is not None and held[0] == owner:
            del self.leases[key]


class RecordingSink(SupervisedSink):
    """Keeps every record put; ``wait_for(n)`` waits until ``n`` records arrived."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[Record] = []
        self._changed = asyncio.Condition()

    async def put(self, records: Sequence[Record]) -> None:
        async with self._changed:
            self.records.extend(records)
            self._changed.notify_all()

    def free(self) -> int:
        return 1000

    async def wait_for_room(self) -> None:
        return None

    async def revoke(self, lanes: Collection[Hashable], timeout: float) -> None:
        return None

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[Record]:
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: len(self.records) >= count)
        return list(self.records)
