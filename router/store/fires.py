"""The store's batched schedule methods: many schedules' claims, catch-up reads and
checkpoint updates in one statement (or one transaction) each, for
:class:`connectors.schedule.coordinator.ScheduleCoordinator`."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from router.store import tables as t

CHUNK = 500
"""Rows or values per statement (SQLite allows 32,766 bound parameters a statement)."""

FireClaim = tuple[str, datetime, Mapping[str, str]]
"""A claim: the schedule key, the scheduled time, the checkpoints written when it wins."""


def _chunks(values: Sequence[Any]) -> list[Sequence[Any]]:
    return [values[i : i + CHUNK] for i in range(0, len(values), CHUNK)]


class FireMethods:
    """The batched schedule methods of :class:`router.store.SQLStore` (see
    :class:`router.abc.Store`)."""

    if TYPE_CHECKING:
        backend: str
        _put_checkpoint: Any

        @property
        def engine(self) -> AsyncEngine: ...

        def _read(self, action: str) -> AbstractAsyncContextManager[AsyncConnection]: ...
        def _write(self, action: str) -> AbstractAsyncContextManager[AsyncConnection]: ...

    async def claim_fires(
        self, claims: Sequence[FireClaim], owner: str
    ) -> set[tuple[str, datetime]]:
        """:meth:`claim_fire` of many (schedule, time) pairs in one transaction: the pairs
        ``owner`` won (also those it had won before and asks again), each written with its
        pending checkpoints."""
        fires = t.schedule_fires
        insert = postgresql.insert if self.backend == "postgresql" else sqlite.insert
        now = datetime.now(UTC)
        unique: dict[tuple[str, datetime], Mapping[str, str]] = {}
        for key, when, pending in claims:
            unique[key, when.astimezone(UTC)] = pending
        won: set[tuple[str, datetime]] = set()
        if not unique:
            return won
        async with self._write(f"claiming {len(unique)} schedule fires") as conn:
            for chunk in _chunks(list(unique)):
                ins = insert(fires).values(
                    [
                        {"schedule_key": k, "scheduled_time": w, "fired_at": now, "owner": owner}
                        for k, w in chunk
                    ]
                )
                query = ins.on_conflict_do_update(
                    index_elements=[fires.c.schedule_key, fires.c.scheduled_time],
                    set_={"owner": ins.excluded.owner},
                    where=fires.c.owner == ins.excluded.owner,
                ).returning(fires.c.schedule_key, fires.c.scheduled_time)
                for key, when in (await conn.execute(query)).all():
                    won.add((key, when.astimezone(UTC)))
            rows = [
                {"mapping_uuid": key, "key": k, "value": v, "updated_at": now}
                for (key, when), pending in unique.items()
                if (key, when) in won
                for k, v in pending.items()
            ]
            if rows:
                # The same transaction: a claim is never stored without its pending rows.
                await conn.execute(self._put_checkpoint, rows)
        return won

    async def last_fires(self, schedule_keys: Collection[str]) -> dict[str, datetime]:
        """:meth:`last_fire` of many schedules (those that never fired are left out)."""
        c = t.schedule_fires.c
        found: dict[str, datetime] = {}
        async with self._read(f"reading the fires of {len(schedule_keys)} schedules") as conn:
            for chunk in _chunks(sorted(schedule_keys)):
                query = (
                    sa.select(c.schedule_key, sa.func.max(c.scheduled_time))
                    .where(c.schedule_key.in_(chunk))
                    .group_by(c.schedule_key)
                )
                for key, value in (await conn.execute(query)).all():
                    when = t.UTCDateTime().process_result_value(value, self.engine.dialect)
                    if when is not None:
                        found[key] = when
        return found

    async def get_checkpoints_many(
        self, mapping_uuids: Collection[str]
    ) -> dict[str, dict[str, str]]:
        """:meth:`get_checkpoints` of many mappings (those without one are left out)."""
        c = t.checkpoints.c
        found: dict[str, dict[str, str]] = {}
        async with self._read(f"reading checkpoints of {len(mapping_uuids)} mappings") as conn:
            for chunk in _chunks(sorted(mapping_uuids)):
                query = sa.select(c.mapping_uuid, c.key, c.value).where(c.mapping_uuid.in_(chunk))
                for uuid, key, value in (await conn.execute(query)).all():
                    found.setdefault(uuid, {})[key] = value
        return found

    async def checkpoints_with_prefix(self, prefix: str) -> list[tuple[str, str, str]]:
        """Every checkpoint (mapping, key, value) whose key starts with ``prefix``, of all
        mappings, in one query."""
        c = t.checkpoints.c
        pattern = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        query = sa.select(c.mapping_uuid, c.key, c.value).where(c.key.like(pattern, escape="\\"))
        async with self._read(f"reading checkpoints {prefix}*") as conn:
            return [(u, k, v) for u, k, v in (await conn.execute(query)).all()]

    async def update_checkpoints(
        self,
        put: Mapping[str, Mapping[str, str]],
        delete: Mapping[str, Collection[str]] | None = None,
    ) -> None:
        """Write the checkpoints ``put`` and delete the keys ``delete`` of many mappings, in
        one transaction (a key in both is written)."""
        now = datetime.now(UTC)
        rows = [
            {"mapping_uuid": uuid, "key": k, "value": v, "updated_at": now}
            for uuid, values in put.items()
            for k, v in values.items()
        ]
        gone = [
            (uuid, k)
            for uuid, keys in (delete or {}).items()
            for k in keys
            if k not in put.get(uuid, {})
        ]
        if not rows and not gone:
            return
        c = t.checkpoints.c
        async with self._write(
            f"writing checkpoints of {len(put) + len(delete or {})} mappings"
        ) as conn:
            for chunk in _chunks(gone):
                pairs = sa.tuple_(c.mapping_uuid, c.key).in_(list(chunk))
                await conn.execute(sa.delete(t.checkpoints).where(pairs))
            if rows:
                await conn.execute(self._put_checkpoint, rows)


__all__ = ["CHUNK", "FireClaim", "FireMethods"]
