"""The SQL store: SQLAlchemy 2 async over SQLite (aiosqlite) or PostgreSQL (asyncpg).

Every write is one short transaction; the hot ones (``put_checkpoints``, ``add_stats``) are a
single pre-built upsert. SQLite allows one writer at a time, so writes from this process are
serialized with an asyncio lock (other processes wait through ``busy_timeout``).

:meth:`SQLStore.exclusive` makes every store call of the calling task inside it one
transaction, under a lock held across every process on the store: applying the YAML runs in
one, so replicas applying at once take turns and each sees what the one before it wrote.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid as uuidlib
from collections.abc import AsyncIterator, Collection, Mapping
from contextvars import ContextVar
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from router.errors import StoreError
from router.models import DeletedMapping, FailedEvent, MappingRow, StatsDelta, StatusUpdate
from router.store import tables as t
from router.store.engine import (
    PermanentStoreError,
    backend_of,
    display_url,
    make_engine,
    normalize_url,
    store_errors,
)
from router.store.fires import FireMethods
from router.store.lag import LagMethods
from router.store.notify import ChangeFeed, PgChangeFeed, PollingChangeFeed
from router.store.queue import QueueMethods

logger = logging.getLogger(__name__)

_STATS_COUNTERS = ("records_in", "filtered", "invoked", "failed")
_STATUS_KEYS = {
    "state": "state",
    "reason": "state_transition_reason",
    "last_result": "last_processing_result",
}
"""The keys of a :class:`router.models.StatusUpdate` and their columns."""
_IN_CHUNK = 500
"""Values per ``IN (...)`` list (SQLite allows 32,766 bound parameters a statement)."""
# SQLAlchemy's asyncpg connect arguments that asyncpg.connect() itself does not take.
_NOT_ASYNCPG_ARGS = (
    "prepared_statement_cache_size",
    "prepared_statement_name_func",
    "async_fallback",
    "async_creator_fn",
)


APPLY_LOCK_KEY = 0x726F7574657261  # "routera"
"""PostgreSQL advisory lock held by :meth:`SQLStore.exclusive` for its whole transaction."""

_EXCLUSIVE: ContextVar[tuple[SQLStore, AsyncConnection] | None] = ContextVar(
    "router_store_exclusive", default=None
)
"""The store and connection of the :meth:`SQLStore.exclusive` block the task is in."""


def _now() -> datetime:
    return datetime.now(UTC)


class SQLStore(QueueMethods, LagMethods, FireMethods):
    """The :class:`router.abc.Store` on SQLite or PostgreSQL.

    ``url`` is the store's URL with any password replaced by ``***`` (safe to log); the
    real one stays private. Use ``async with SQLStore(url) as store`` or call
    :meth:`start` / :meth:`aclose`.
    """

    def __init__(self, url: str, *, poll_interval: float = 1.0, echo: bool = False) -> None:
        self._url = normalize_url(url)
        self.url = display_url(self._url)
        self.backend = backend_of(self._url)
        self._poll_interval = poll_interval
        self._echo = echo
        self._engine: AsyncEngine | None = None
        self._write_lock = asyncio.Lock() if self.backend == "sqlite" else None
        self._feeds: set[ChangeFeed] = set()
        dialect_insert = postgresql.insert if self.backend == "postgresql" else sqlite.insert

        ins = dialect_insert(t.checkpoints)
        self._put_checkpoint = ins.on_conflict_do_update(
            index_elements=[t.checkpoints.c.mapping_uuid, t.checkpoints.c.key],
            set_={"value": ins.excluded.value, "updated_at": ins.excluded.updated_at},
        )
        ins = dialect_insert(t.mapping_stats)
        stats = t.mapping_stats.c
        self._add_stats = ins.on_conflict_do_update(
            index_elements=[stats.mapping_uuid],
            set_={
                **{c: stats[c] + ins.excluded[c] for c in _STATS_COUNTERS},
                "last_invoke_at": sa.func.coalesce(
                    ins.excluded.last_invoke_at, stats.last_invoke_at
                ),
                "updated_at": ins.excluded.updated_at,
            },
        )
        fires = t.schedule_fires
        ins = dialect_insert(fires)
        # The owner asking again (its first answer was lost with the connection) wins again;
        # anyone else finds the row taken.
        self._claim_fire = ins.on_conflict_do_update(
            index_elements=[fires.c.schedule_key, fires.c.scheduled_time],
            set_={"owner": ins.excluded.owner},
            where=fires.c.owner == ins.excluded.owner,
        )
        self._dialect_insert = dialect_insert

    # lifecycle

    @property
    def engine(self) -> AsyncEngine:
        """The SQLAlchemy engine (after :meth:`start`)."""
        if self._engine is None:
            raise StoreError(f"store {self.url} is not started")
        return self._engine

    async def start(self) -> None:
        """Connect and check that the schema is at this router's revision."""
        if self._engine is not None:
            return
        from router.store.migrate import check_revision, read_revision

        engine = make_engine(self._url, echo=self._echo)
        try:
            with store_errors(self._url, self.backend, "connecting"):
                async with engine.connect() as conn:
                    revision = await read_revision(conn)
            check_revision(revision, self.url)
        except BaseException:
            await engine.dispose()
            raise
        self._engine = engine
        logger.info("store %s ready (schema %s)", self.url, revision)

    async def aclose(self) -> None:
        """Close change feeds and connections. Idempotent."""
        for feed in list(self._feeds):
            await feed.aclose()
        engine, self._engine = self._engine, None
        if engine is not None:
            await engine.dispose()

    async def __aenter__(self) -> SQLStore:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    @contextlib.asynccontextmanager
    async def exclusive(self, action: str) -> AsyncIterator[None]:
        """Every call the calling task makes on this store inside the block is one
        transaction, committed at the end (rolled back on an error), under a store-wide lock:
        a PostgreSQL advisory lock (:data:`APPLY_LOCK_KEY`), on SQLite ``BEGIN IMMEDIATE``
        (the database's write lock). Another process's block waits for it; so do this
        process's other writes on SQLite. Blocks do not nest, and the calls inside must be
        made one after the other (the block has one connection)."""
        if _EXCLUSIVE.get() is not None:
            raise RuntimeError("SQLStore.exclusive blocks do not nest")
        with store_errors(self._url, self.backend, action):
            async with contextlib.AsyncExitStack() as stack:
                if self._write_lock is not None:
                    await stack.enter_async_context(self._write_lock)
                conn = await stack.enter_async_context(self.engine.connect())
                if self.backend == "sqlite":
                    # Taken at once, not at the first write: what the block reads stays true
                    # until it commits.
                    await conn.exec_driver_sql("BEGIN IMMEDIATE")
                else:
                    await conn.begin()
                    lock = sa.text("SELECT pg_advisory_xact_lock(:key)")
                    await conn.execute(lock, {"key": APPLY_LOCK_KEY})
                token = _EXCLUSIVE.set((self, conn))
                try:
                    yield
                except BaseException:
                    await conn.rollback()
                    raise
                finally:
                    _EXCLUSIVE.reset(token)
                await conn.commit()

    def _inside_exclusive(self) -> AsyncConnection | None:
        current = _EXCLUSIVE.get()
        return current[1] if current is not None and current[0] is self else None

    @contextlib.asynccontextmanager
    async def _read(self, action: str) -> AsyncIterator[AsyncConnection]:
        with store_errors(self._url, self.backend, action):
            inside = self._inside_exclusive()
            if inside is not None:
                yield inside
                return
            async with self.engine.connect() as conn:
                yield conn

    @contextlib.asynccontextmanager
    async def _autocommit(self, action: str) -> AsyncIterator[AsyncConnection]:
        """A connection whose every statement commits on its own (PostgreSQL only)."""
        with store_errors(self._url, self.backend, action):
            async with self.engine.connect() as conn:
                yield await conn.execution_options(isolation_level="AUTOCOMMIT")

    @contextlib.asynccontextmanager
    async def _write(self, action: str) -> AsyncIterator[AsyncConnection]:
        with store_errors(self._url, self.backend, action):
            inside = self._inside_exclusive()
            if inside is not None:
                yield inside
                return
            if self._write_lock is None:
                async with self.engine.begin() as conn:
                    yield conn
            else:
                async with self._write_lock, self.engine.begin() as conn:
                    yield conn

    # mappings

    async def list_mappings(self) -> list[MappingRow]:
        query = sa.select(t.event_source_mappings).order_by(t.event_source_mappings.c.name)
        async with self._read("listing mappings") as conn:
            rows = (await conn.execute(query)).all()
        return [_mapping_row(r._mapping) for r in rows]

    async def get_mapping(self, uuid: str) -> MappingRow | None:
        return await self._get_one(
            t.event_source_mappings.c.uuid == uuid, f"reading mapping {uuid}"
        )

    async def get_mappings(self, uuids: Collection[str]) -> list[MappingRow]:
        """The rows of the mappings among ``uuids`` that exist, in one query."""
        if not uuids:
            return []
        mappings = t.event_source_mappings
        rows: list[MappingRow] = []
        wanted = sorted(uuids)
        async with self._read(f"reading {len(wanted)} mappings") as conn:
            for start in range(0, len(wanted), _IN_CHUNK):
                chunk = wanted[start : start + _IN_CHUNK]
                query = sa.select(mappings).where(mappings.c.uuid.in_(chunk))
                rows.extend(_mapping_row(r._mapping) for r in (await conn.execute(query)).all())
        return rows

    async def get_mapping_by_name(self, name: str) -> MappingRow | None:
        return await self._get_one(
            t.event_source_mappings.c.name == name, f"reading mapping {name!r}"
        )

    async def _get_one(self, where: sa.ColumnElement[bool], action: str) -> MappingRow | None:
        async with self._read(action) as conn:
            row = (await conn.execute(sa.select(t.event_source_mappings).where(where))).first()
        return None if row is None else _mapping_row(row._mapping)

    async def create_mapping(self, row: MappingRow) -> None:
        """Insert ``row``. An empty ``uuid`` is filled in (on ``row`` too), as are missing
        ``created_at`` / ``updated_at``. A deleted mapping of the same name is forgotten: its
        checkpoints and stats go to ``row`` if it has that mapping's uuid, else they go."""
        await self.create_mappings([row])

    async def create_mappings(self, rows: Collection[MappingRow]) -> None:
        """:meth:`create_mapping` of many rows, in one transaction of a few statements."""
        if not rows:
            return
        now = _now()
        for row in rows:
            if not row.uuid:
                row.uuid = str(uuidlib.uuid4())
            row.created_at = row.created_at or now
            row.updated_at = row.updated_at or now
        names = sorted({row.name for row in rows})
        uuids = {row.name: row.uuid for row in rows}
        deleted = t.deleted_mappings
        try:
            async with self._write(f"creating {len(rows)} mapping(s)") as conn:
                for start in range(0, len(names), _IN_CHUNK):
                    chunk = names[start : start + _IN_CHUNK]
                    found = await conn.execute(
                        sa.select(deleted.c.name, deleted.c.uuid).where(deleted.c.name.in_(chunk))
                    )
                    for name, gone in found.all():
                        if gone != uuids[name]:
                            await self._delete_kept(conn, gone)
                    mine = [uuids[name] for name in chunk]
                    await conn.execute(
                        sa.delete(deleted).where(
                            deleted.c.name.in_(chunk) | deleted.c.uuid.in_(mine)
                        )
                    )
                await conn.execute(
                    sa.insert(t.event_source_mappings), [row.columns() for row in rows]
                )
        except StoreError as e:
            if isinstance(e.__cause__, exc.IntegrityError):
                if len(rows) == 1:
                    [row] = rows
                    what = f"mapping {row.name!r} ({row.uuid}): a mapping with that name or uuid"
                else:
                    what = (
                        f"mappings {', '.join(names)}: a mapping with one of these names or uuids"
                    )
                raise PermanentStoreError(
                    f"store {self.url}: cannot create {what} already exists"
                ) from e.__cause__
            raise

    async def update_mapping(self, row: MappingRow) -> None:
        """Write every configuration column of ``row`` (including ``enabled``, ``origin``
        and ``config_hash``); state and results are left alone."""
        values: dict[str, Any] = {name: getattr(row, name) for name in t.CONFIG_COLUMNS}
        values["updated_at"] = _now()
        mappings = t.event_source_mappings
        async with self._write(f"updating mapping {row.name!r}") as conn:
            result = await conn.execute(
                sa.update(mappings).where(mappings.c.uuid == row.uuid).values(values)
            )
        if result.rowcount == 0:
            raise PermanentStoreError(
                f"store {self.url}: cannot update mapping {row.name!r}: no mapping has uuid "
                f"{row.uuid} (deleted meanwhile?)"
            )

    async def retire_mapping(self, uuid: str) -> None:
        """Delete the mapping but keep its checkpoints and stats, remembered by its name in
        ``deleted_mappings`` (see :meth:`list_deleted_mappings`). Retiring a missing mapping
        does nothing."""
        mappings, deleted = t.event_source_mappings, t.deleted_mappings
        async with self._write(f"deleting mapping {uuid}") as conn:
            found = (
                await conn.execute(
                    sa.select(mappings.c.name, mappings.c.source_type).where(
                        mappings.c.uuid == uuid
                    )
                )
            ).first()
            if found is None:
                return
            await conn.execute(sa.delete(deleted).where(deleted.c.name == found.name))
            await conn.execute(
                sa.insert(deleted).values(
                    name=found.name, uuid=uuid, source_type=found.source_type, deleted_at=_now()
                )
            )
            await conn.execute(sa.delete(mappings).where(mappings.c.uuid == uuid))
            if self.backend == "sqlite":
                await conn.execute(
                    sa.delete(t.mapping_versions).where(t.mapping_versions.c.uuid == uuid)
                )

    async def list_deleted_mappings(self) -> list[DeletedMapping]:
        query = sa.select(t.deleted_mappings).order_by(t.deleted_mappings.c.name)
        async with self._read("listing deleted mappings") as conn:
            rows = (await conn.execute(query)).all()
        return [DeletedMapping(**{str(k): v for k, v in r._mapping.items()}) for r in rows]

    async def purge_deleted_mappings(self, before: datetime) -> list[str]:
        """Forget the mappings deleted before ``before``, with their checkpoints and stats;
        returns their names."""
        deleted = t.deleted_mappings
        async with self._write("purging deleted mappings") as conn:
            rows = (
                await conn.execute(
                    sa.select(deleted.c.name, deleted.c.uuid).where(deleted.c.deleted_at < before)
                )
            ).all()
            for row in rows:
                await self._delete_kept(conn, row.uuid)
                await conn.execute(sa.delete(deleted).where(deleted.c.uuid == row.uuid))
        return sorted(row.name for row in rows)

    @staticmethod
    async def _delete_kept(conn: AsyncConnection, uuid: str) -> None:
        await conn.execute(sa.delete(t.checkpoints).where(t.checkpoints.c.mapping_uuid == uuid))
        await conn.execute(sa.delete(t.mapping_stats).where(t.mapping_stats.c.mapping_uuid == uuid))
        await conn.execute(sa.delete(t.mapping_lag).where(t.mapping_lag.c.mapping_uuid == uuid))

    async def delete_mapping(self, uuid: str) -> None:
        """Delete the mapping with its checkpoints and stats (failed events stay for
        inspection). Deleting a missing mapping does nothing."""
        async with self._write(f"deleting mapping {uuid}") as conn:
            await conn.execute(sa.delete(t.checkpoints).where(t.checkpoints.c.mapping_uuid == uuid))
            await conn.execute(
                sa.delete(t.mapping_stats).where(t.mapping_stats.c.mapping_uuid == uuid)
            )
            await conn.execute(sa.delete(t.mapping_lag).where(t.mapping_lag.c.mapping_uuid == uuid))
            await conn.execute(
                sa.delete(t.event_source_mappings).where(t.event_source_mappings.c.uuid == uuid)
            )
            if self.backend == "sqlite":
                # The vanishing counter row is itself seen as a change by the poller.
                await conn.execute(
                    sa.delete(t.mapping_versions).where(t.mapping_versions.c.uuid == uuid)
                )

    async def set_mapping_status(
        self,
        uuid: str,
        *,
        state: str | None = None,
        reason: str | None = None,
        last_result: str | None = None,
    ) -> None:
        values: dict[str, Any] = {}
        if state is not None:
            values["state"] = state
        if reason is not None:
            values["state_transition_reason"] = reason
        if last_result is not None:
            values["last_processing_result"] = last_result
        if not values:
            return
        values["updated_at"] = _now()
        await self._update_mapping_columns(uuid, values, "setting status of")

    async def set_mapping_statuses(self, statuses: Mapping[str, StatusUpdate]) -> None:
        """Write the status of many mappings in one transaction (``state``,
        ``state_transition_reason``, ``last_processing_result``: the keys each one sets)."""
        groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        now = _now()
        for uuid, status in statuses.items():
            values = {
                _STATUS_KEYS[key]: value for key, value in status.items() if value is not None
            }
            if values:
                columns = tuple(sorted(values))
                bound = {f"_{c}": value for c, value in values.items()}
                groups.setdefault(columns, []).append({"_uuid": uuid, **bound, "_at": now})
        if not groups:
            return
        mappings = t.event_source_mappings
        async with self._write(f"setting status of {len(statuses)} mappings") as conn:
            for columns, rows in groups.items():
                query = (
                    sa.update(mappings)
                    .where(mappings.c.uuid == sa.bindparam("_uuid"))
                    .values(
                        {c: sa.bindparam(f"_{c}") for c in columns}
                        | {"updated_at": sa.bindparam("_at")}
                    )
                )
                await conn.execute(query, rows)

    async def set_enabled(self, uuid: str, enabled: bool) -> None:
        await self._update_mapping_columns(
            uuid, {"enabled": enabled, "updated_at": _now()}, "enabling" if enabled else "disabling"
        )

    async def _update_mapping_columns(self, uuid: str, values: dict[str, Any], verb: str) -> None:
        mappings = t.event_source_mappings
        async with self._write(f"{verb} mapping {uuid}") as conn:
            await conn.execute(sa.update(mappings).where(mappings.c.uuid == uuid).values(values))

    # checkpoints

    async def get_checkpoints(self, mapping_uuid: str) -> dict[str, str]:
        c = t.checkpoints.c
        query = sa.select(c.key, c.value).where(c.mapping_uuid == mapping_uuid)
        async with self._read(f"reading checkpoints of {mapping_uuid}") as conn:
            rows = (await conn.execute(query)).all()
        return {row[0]: row[1] for row in rows}

    async def put_checkpoints(self, mapping_uuid: str, values: Mapping[str, str]) -> None:
        if not values:
            return
        now = _now()
        params = [
            {"mapping_uuid": mapping_uuid, "key": key, "value": value, "updated_at": now}
            for key, value in values.items()
        ]
        async with self._write(f"writing checkpoints of {mapping_uuid}") as conn:
            await conn.execute(self._put_checkpoint, params)

    async def checkpoint_owners(self, uuids: Collection[str], prefix: str) -> set[str]:
        """Which of the mappings ``uuids`` have a checkpoint whose key starts with
        ``prefix`` (one query)."""
        if not uuids:
            return set()
        c = t.checkpoints.c
        found: set[str] = set()
        wanted = sorted(uuids)
        pattern = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        async with self._read("reading checkpoints") as conn:
            for start in range(0, len(wanted), _IN_CHUNK):
                chunk = wanted[start : start + _IN_CHUNK]
                query = (
                    sa.select(c.mapping_uuid)
                    .distinct()
                    .where(c.mapping_uuid.in_(chunk), c.key.like(pattern, escape="\\"))
                )
                found.update(row[0] for row in (await conn.execute(query)).all())
        return found

    async def delete_checkpoints(self, mapping_uuid: str, keys: Collection[str]) -> None:
        if not keys:
            return
        c = t.checkpoints.c
        query = sa.delete(t.checkpoints).where(
            c.mapping_uuid == mapping_uuid, c.key.in_(list(keys))
        )
        async with self._write(f"deleting checkpoints of {mapping_uuid}") as conn:
            await conn.execute(query)

    # schedules

    async def claim_fire(
        self,
        schedule_key: str,
        scheduled_time: datetime,
        owner: str,
        *,
        pending: Mapping[str, str] | None = None,
    ) -> bool:
        now = _now()
        params = {
            "schedule_key": schedule_key,
            "scheduled_time": scheduled_time,
            "fired_at": now,
            "owner": owner,
        }
        async with self._write(f"claiming fire of {schedule_key!r}") as conn:
            result = await conn.execute(self._claim_fire, params)
            won = result.rowcount == 1
            if won and pending:
                # One transaction: the claim commits with its pending checkpoints or not at
                # all, so a crash between the two statements loses neither.
                rows = [
                    {"mapping_uuid": schedule_key, "key": k, "value": v, "updated_at": now}
                    for k, v in pending.items()
                ]
                await conn.execute(self._put_checkpoint, rows)
        return won

    async def last_fire(self, schedule_key: str) -> datetime | None:
        c = t.schedule_fires.c
        query = sa.select(sa.func.max(c.scheduled_time)).where(c.schedule_key == schedule_key)
        async with self._read(f"reading fires of {schedule_key!r}") as conn:
            value = (await conn.execute(query)).scalar()
        return t.UTCDateTime().process_result_value(value, self.engine.dialect)

    async def prune_fires(self, before: datetime) -> int:
        """Delete fire rows scheduled before ``before``; returns how many went. Keep them
        longer than the longest catch-up horizon, or a catch-up could fire them again."""
        query = sa.delete(t.schedule_fires).where(t.schedule_fires.c.scheduled_time < before)
        async with self._write("pruning schedule fires") as conn:
            result = await conn.execute(query)
        return int(result.rowcount)

    # leases

    async def acquire_lease(self, key: str, owner: str, ttl: float) -> bool:
        leases = t.leases
        now: sa.ColumnElement[datetime]
        expires: sa.ColumnElement[datetime]
        if self.backend == "postgresql":
            # The database clock, not each replica's, decides when a lease has expired.
            now = sa.func.now()
            expires = now + sa.literal(timedelta(seconds=ttl), sa.Interval())
        else:
            moment = _now()
            now = sa.literal(moment, t.UTCDateTime())
            expires = sa.literal(moment + timedelta(seconds=ttl), t.UTCDateTime())
        ins = self._dialect_insert(leases).values(key=key, owner=owner, expires_at=expires)
        query = ins.on_conflict_do_update(
            index_elements=[leases.c.key],
            set_={"owner": ins.excluded.owner, "expires_at": ins.excluded.expires_at},
            where=(leases.c.owner == ins.excluded.owner) | (leases.c.expires_at < now),
        )
        async with self._write(f"acquiring lease {key!r}") as conn:
            result = await conn.execute(query)
        return result.rowcount == 1

    async def release_lease(self, key: str, owner: str) -> None:
        c = t.leases.c
        query = sa.delete(t.leases).where(c.key == key, c.owner == owner)
        async with self._write(f"releasing lease {key!r}") as conn:
            await conn.execute(query)

    # stats and failed events

    async def add_stats(self, mapping_uuid: str, delta: StatsDelta) -> None:
        if not delta and delta.last_invoke is None:
            return
        params = {
            "mapping_uuid": mapping_uuid,
            "records_in": delta.records_in,
            "filtered": delta.filtered,
            "invoked": delta.invoked,
            "failed": delta.failed,
            "last_invoke_at": delta.last_invoke,
            "updated_at": _now(),
        }
        async with self._write(f"adding stats of {mapping_uuid}") as conn:
            await conn.execute(self._add_stats, params)

    async def add_stats_many(self, deltas: Mapping[str, StatsDelta]) -> None:
        """:meth:`add_stats` of many mappings in one transaction."""
        now = _now()
        params = [
            {
                "mapping_uuid": uuid,
                "records_in": delta.records_in,
                "filtered": delta.filtered,
                "invoked": delta.invoked,
                "failed": delta.failed,
                "last_invoke_at": delta.last_invoke,
                "updated_at": now,
            }
            for uuid, delta in deltas.items()
            if delta or delta.last_invoke is not None
        ]
        if not params:
            return
        async with self._write(f"adding stats of {len(params)} mappings") as conn:
            await conn.execute(self._add_stats, params)

    async def get_stats(self, mapping_uuid: str) -> dict[str, Any]:
        """``records_in``, ``filtered``, ``invoked``, ``failed`` (0 if none yet),
        ``last_invoke_at`` and ``updated_at`` (None if none yet)."""
        s = t.mapping_stats
        query = sa.select(s).where(s.c.mapping_uuid == mapping_uuid)
        async with self._read(f"reading stats of {mapping_uuid}") as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            return {**dict.fromkeys(_STATS_COUNTERS, 0), "last_invoke_at": None, "updated_at": None}
        # Plain str keys: SQLAlchemy's are ``quoted_name`` (a str subclass JSON encoders
        # such as orjson refuse).
        values = {str(key): value for key, value in row._mapping.items()}
        values.pop("mapping_uuid")
        return values

    async def add_failed_event(self, event: FailedEvent) -> int:
        values = {
            "mapping_uuid": event.mapping_uuid,
            "function_name": event.function_name,
            "condition": event.condition,
            "payload": event.payload,
            "created_at": event.created_at or _now(),
            "replayed_at": event.replayed_at,
        }
        async with self._write(f"recording a failed event of {event.mapping_uuid}") as conn:
            result = await conn.execute(sa.insert(t.failed_events).values(values))
        key = result.inserted_primary_key
        assert key is not None
        return int(key[0])

    async def list_failed_events(
        self, *, mapping_uuid: str | None = None, include_replayed: bool = False
    ) -> list[FailedEvent]:
        f = t.failed_events
        query = sa.select(f).order_by(f.c.id)
        if mapping_uuid is not None:
            query = query.where(f.c.mapping_uuid == mapping_uuid)
        if not include_replayed:
            query = query.where(f.c.replayed_at.is_(None))
        async with self._read("listing failed events") as conn:
            rows = (await conn.execute(query)).all()
        return [FailedEvent(**r._mapping) for r in rows]

    async def mark_replayed(self, ids: Collection[int]) -> None:
        if not ids:
            return
        f = t.failed_events
        query = sa.update(f).where(f.c.id.in_(list(ids))).values(replayed_at=_now())
        async with self._write("marking failed events replayed") as conn:
            await conn.execute(query)

    # changes

    def changes(self) -> ChangeFeed:
        """A feed of changed mapping uuids; see :mod:`router.store.notify`. Configuration
        and checkpoint writes are reported, whoever made them (this store included); status
        writes (``set_mapping_status``) are not."""
        feed: ChangeFeed
        if self.backend == "postgresql":
            feed = PgChangeFeed(self._asyncpg_connect_kwargs(), self.url, self._feeds.discard)
        else:
            feed = PollingChangeFeed(
                self._read_versions, self.url, self._poll_interval, self._feeds.discard
            )
        self._feeds.add(feed)
        return feed

    def _asyncpg_connect_kwargs(self) -> dict[str, Any]:
        engine = self.engine
        args, kwargs = engine.dialect.create_connect_args(engine.url)
        assert not args
        for name in _NOT_ASYNCPG_ARGS:
            kwargs.pop(name, None)
        return dict(kwargs)

    async def _read_versions(self) -> dict[str, int]:
        v = t.mapping_versions.c
        async with self._read("polling for changes") as conn:
            rows = (await conn.execute(sa.select(v.uuid, v.version))).all()
        return {row[0]: row[1] for row in rows}


def _mapping_row(values: sa.RowMapping) -> MappingRow:
    return MappingRow(**{str(name): value for name, value in values.items()})


__all__ = ["SQLStore"]
