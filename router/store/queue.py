"""The store's half of the asynchronous-invocation queue (table ``async_events``).

A replica claims events by writing its lease on them: on PostgreSQL with ``SELECT ... FOR
UPDATE SKIP LOCKED``, so replicas claiming at the same moment never take the same event nor
wait for each other; on SQLite the single writer does the same in one ``UPDATE ...
RETURNING``. An event whose lease expired (its replica died) is claimed again. The lease
clock is the database's on PostgreSQL (replicas' clocks may differ), the router's on SQLite.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from router.models import QueueDepth, QueuedEvent
from router.store import tables as t

_EVENTS = t.async_events
_C = _EVENTS.c


def _queued(values: Any) -> QueuedEvent:
    return QueuedEvent(**{str(k): v for k, v in values.items()})


class QueueMethods:
    """The queue methods of :class:`router.store.SQLStore` (see
    :class:`router.abc.Store`)."""

    if TYPE_CHECKING:
        backend: str

        def _read(self, action: str) -> AbstractAsyncContextManager[AsyncConnection]: ...
        def _write(self, action: str) -> AbstractAsyncContextManager[AsyncConnection]: ...
        def _autocommit(self, action: str) -> AbstractAsyncContextManager[AsyncConnection]: ...

    def _one_statement(self, action: str) -> AbstractAsyncContextManager[AsyncConnection]:
        """Where a write of one statement runs: on PostgreSQL in autocommit (the statement is
        atomic on its own; no BEGIN / COMMIT round trips), on SQLite under the writer's
        lock."""
        if self.backend == "postgresql":
            return self._autocommit(action)
        return self._write(action)

    def _lease_clock(self, lease: float) -> tuple[Any, Any]:
        """(now, now + lease) as SQL expressions."""
        if self.backend == "postgresql":
            now = sa.func.now()
            return now, now + sa.literal(timedelta(seconds=lease), sa.Interval())
        moment = datetime.now(UTC)
        return (
            sa.literal(moment, t.UTCDateTime()),
            sa.literal(moment + timedelta(seconds=lease), t.UTCDateTime()),
        )

    async def enqueue_events(self, events: Sequence[QueuedEvent]) -> None:
        if not events:
            return
        rows = [
            {
                "id": e.id,
                "target": e.target,
                "payload": e.payload,
                "attributes": e.attributes,
                "enqueued_at": e.enqueued_at,
                "deliveries": 0,
                "lease_owner": None,
                "lease_expires_at": None,
                "attempts": e.attempts,
                "retry_at": e.retry_at,
            }
            for e in events
        ]
        # One multi-row INSERT on PostgreSQL (SQLAlchemy's insertmanyvalues).
        async with self._one_statement(f"queueing {len(rows)} events") as conn:
            await conn.execute(sa.insert(_EVENTS), rows)

    async def claim_events(
        self, target: str, owner: str, limit: int, lease: float
    ) -> list[QueuedEvent]:
        if limit <= 0:
            return []
        now, expires = self._lease_clock(lease)
        claimable = sa.and_(
            _C.target == target,
            sa.or_(_C.lease_expires_at.is_(None), _C.lease_expires_at < now),
            sa.or_(_C.retry_at.is_(None), _C.retry_at <= now),
        )
        if self.backend == "sqlite":
            # An idle target is looked at without the writer's lock.
            async with self._read(f"looking for queued events of {target}") as conn:
                found = (await conn.execute(sa.select(_C.id).where(claimable).limit(1))).first()
            if found is None:
                return []
        free = sa.select(_C.id).where(claimable)
        free = free.order_by(_C.enqueued_at).limit(limit)
        if self.backend == "postgresql":
            free = free.with_for_update(skip_locked=True)
        query = (
            sa.update(_EVENTS)
            .where(_C.id.in_(free.scalar_subquery()))
            .values(lease_owner=owner, lease_expires_at=expires, deliveries=_C.deliveries + 1)
            .returning(*_EVENTS.c)
        )
        async with self._one_statement(f"claiming queued events of {target}") as conn:
            rows = (await conn.execute(query)).all()
        events = [_queued(r._mapping) for r in rows]
        events.sort(key=lambda e: e.enqueued_at)
        return events

    async def renew_events(self, ids: Collection[str], owner: str, lease: float) -> set[str]:
        if not ids:
            return set()
        _, expires = self._lease_clock(lease)
        query = (
            sa.update(_EVENTS)
            .where(_C.id.in_(list(ids)), _C.lease_owner == owner)
            .values(lease_expires_at=expires)
            .returning(_C.id)
        )
        async with self._one_statement(f"renewing the leases of {len(ids)} queued events") as conn:
            rows = (await conn.execute(query)).all()
        return {row[0] for row in rows}

    async def release_events(self, ids: Collection[str] | None, owner: str) -> int:
        if ids is not None and not ids:
            return 0
        query = sa.update(_EVENTS).where(_C.lease_owner == owner)
        if ids is not None:
            query = query.where(_C.id.in_(list(ids)))
        query = query.values(lease_owner=None, lease_expires_at=None)
        what = "every queued event" if ids is None else f"{len(ids)} queued events"
        async with self._one_statement(f"releasing {what} of {owner}") as conn:
            result = await conn.execute(query)
        return int(result.rowcount)

    async def delete_events(self, ids: Collection[str]) -> None:
        if not ids:
            return
        query = sa.delete(_EVENTS).where(_C.id.in_(list(ids)))
        async with self._one_statement(f"deleting {len(ids)} delivered events") as conn:
            await conn.execute(query)

    async def record_attempt(
        self, event_id: str, owner: str, attempts: int, retry_at: datetime | None
    ) -> bool:
        query = (
            sa.update(_EVENTS)
            .where(_C.id == event_id, _C.lease_owner == owner)
            .values(attempts=attempts, retry_at=retry_at)
        )
        async with self._one_statement(f"counting an attempt of queued event {event_id}") as conn:
            result = await conn.execute(query)
        return bool(result.rowcount)

    async def queue_depths(self) -> list[QueueDepth]:
        query = (
            sa.select(_C.target, sa.func.count(), sa.func.min(_C.enqueued_at))
            .group_by(_C.target)
            .order_by(_C.target)
        )
        async with self._read("counting queued events") as conn:
            rows = (await conn.execute(query)).all()
            dialect = conn.dialect
        convert = t.UTCDateTime()
        # SQLite hands an aggregate back as text, without the column's type.
        return [
            QueueDepth(
                target=target,
                events=int(count),
                oldest=convert.process_result_value(oldest, dialect),
            )
            for target, count, oldest in rows
        ]

    async def list_events(
        self, *, target: str | None = None, limit: int = 100
    ) -> list[QueuedEvent]:
        query = sa.select(_EVENTS).order_by(_C.enqueued_at, _C.id).limit(limit)
        if target is not None:
            query = query.where(_C.target == target)
        async with self._read("listing queued events") as conn:
            rows = (await conn.execute(query)).all()
        return [_queued(r._mapping) for r in rows]

    async def purge_events(self, *, target: str | None = None) -> int:
        query = sa.delete(_EVENTS)
        if target is not None:
            query = query.where(_C.target == target)
        async with self._write("purging queued events") as conn:
            result = await conn.execute(query)
        return int(result.rowcount)


__all__ = ["QueueMethods"]
