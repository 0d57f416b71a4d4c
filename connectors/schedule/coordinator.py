"""One coordinator per replica and store for all of the replica's schedules.

Every :class:`connectors.schedule.source.ScheduleSource` of a replica registers with the
coordinator of its store. The coordinator holds the replica's one liveness lease
(``schedules:<replica>``, renewed every ``lease_ttl / 3`` with the shortest ``lease_ttl`` of
its schedules) and runs one recovery pass after each renewal: one query reads the pending
fires of every schedule, and it re-delivers those this replica left pending in an earlier
life, and those of a replica whose lease has expired (taking that lease over while it does).

It also batches the schedules' store work: claims made at the same moment are one
transaction (:meth:`router.abc.Store.claim_fires`), the catch-up reads of schedules starting
together are one query each, and checkpoint updates (``since``, ``delivered`` and the deletion
of pending rows) made together are one transaction. A batch is sent once every caller that
was ready in the same turn of the event loop has added to it, and while it is in the store
the next one fills: a group commit. A failed batch fails each of its callers, who retry
through their mapping's supervisor as before.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Awaitable, Callable, Collection, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Generic, TypeVar

from router import logs
from router.abc import Sink, Store
from router.errors import StoreError

if TYPE_CHECKING:
    from connectors.schedule.source import ScheduleSource

logger = logging.getLogger(__name__)
warnings = logs.LimitedLogger(logger)

PENDING_PREFIX = "fire:"
LEASE_PREFIX = "schedules:"
STORE_RETRY = 5.0
"""Seconds between renewals while the store is unavailable (at most)."""

I = TypeVar("I")  # noqa: E741 - the item of a batch
R = TypeVar("R")


class Batcher(Generic[I, R]):
    """Group commit: calls made while a batch is being sent are sent together next."""

    def __init__(self, send: Callable[[list[I]], Awaitable[list[R]]]) -> None:
        self._send = send
        self._queue: list[tuple[I, asyncio.Future[R]]] = []
        self._task: asyncio.Task[None] | None = None

    async def __call__(self, item: I) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        if self._task is None:
            self._task = asyncio.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        try:
            await asyncio.sleep(0)  # every caller woken in the same turn joins the batch
            while self._queue:
                batch, self._queue = self._queue, []
                try:
                    results = await self._send([item for item, _ in batch])
                except Exception as e:  # noqa: BLE001 - handed to every caller
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(e)
                    continue
                for (_, future), result in zip(batch, results, strict=True):
                    if not future.done():
                        future.set_result(result)
        finally:
            self._task = None
            for _, future in self._queue:
                future.cancel()
            self._queue = []


Read = tuple[dict[str, str], datetime | None]
"""A schedule's checkpoints and its last claimed fire."""
Update = tuple[str, Mapping[str, str], Collection[str]]
"""Checkpoints of one schedule to write, and keys to delete."""


class ScheduleCoordinator:
    """The schedules of one replica on one store (see the module docstring)."""

    _all: weakref.WeakKeyDictionary[Store, dict[str, ScheduleCoordinator]] = (
        weakref.WeakKeyDictionary()
    )

    @classmethod
    def of(cls, store: Store, replica: str) -> ScheduleCoordinator:
        """The coordinator of ``replica`` on ``store`` (made at the first call)."""
        by_replica = cls._all.setdefault(store, {})
        if replica not in by_replica:
            by_replica[replica] = cls(store, replica)
        return by_replica[replica]

    def __init__(self, store: Store, replica: str) -> None:
        self.store = store
        self.replica = replica
        self.lease_key = LEASE_PREFIX + replica
        self._sources: dict[str, tuple[ScheduleSource, Sink]] = {}
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.claim = Batcher[tuple[str, datetime, Mapping[str, str]], bool](self._claim)
        self.read = Batcher[str, Read](self._read)
        self.update = Batcher[Update, None](self._update)

    # ------------------------------------------------------------------ registration

    async def register(self, source: ScheduleSource, sink: Sink) -> None:
        """Add ``source``; returns once the replica holds its lease."""
        self._sources[source.key] = (source, sink)
        if self._task is None:
            self._task = asyncio.create_task(self._keep_lease())
        await self._ready.wait()

    def unregister(self, source: ScheduleSource) -> None:
        """Remove ``source``; the last one out stops the renewals (the lease runs out)."""
        current = self._sources.get(source.key)
        if current is not None and current[0] is source:
            del self._sources[source.key]
        if not self._sources and self._task is not None:
            self._task.cancel()
            self._task = None
            self._ready.clear()

    async def release(self) -> None:
        """Release the lease if no schedule of this replica runs any more."""
        if not self._sources:
            await self.store.release_lease(self.lease_key, self.replica)

    @property
    def ttl(self) -> float:
        return min((s.settings.lease_ttl for s, _ in self._sources.values()), default=30.0)

    # ------------------------------------------------------------------ lease and recovery

    async def _keep_lease(self) -> None:
        store, me = self.store, self.replica
        while True:
            ttl = self.ttl
            try:
                held = await store.acquire_lease(self.lease_key, me, ttl)
                if held:
                    self._ready.set()
                elif not self._ready.is_set():
                    # Another replica is re-delivering the fires this one left pending; it
                    # releases the lease when done (or the lease simply expires).
                    logger.info("schedules: waiting for lease %s", self.lease_key)
                else:
                    warnings.warning(
                        (self.lease_key, "lease"),
                        "schedules: lease %s is held by another replica",
                        self.lease_key,
                    )
                if self._ready.is_set():
                    await self._recover(ttl)
            except StoreError as e:
                warnings.warning(
                    (self.lease_key, "store"),
                    "schedules: store unavailable while renewing the lease %s: %s",
                    self.lease_key,
                    e,
                )
                await asyncio.sleep(min(ttl / 3, STORE_RETRY))
                continue
            except Exception as e:  # noqa: BLE001 - the renewals must outlive any failure
                warnings.log(
                    logging.ERROR,
                    (self.lease_key, "error"),
                    "schedules: renewing the lease %s or re-delivering pending fires failed "
                    "(%s); trying again",
                    self.lease_key,
                    e,
                    exc_info=e,
                )
                await asyncio.sleep(min(ttl / 3, STORE_RETRY))
                continue
            await asyncio.sleep(ttl / 3)

    async def _recover(self, ttl: float) -> None:
        """Re-deliver the pending fires of this replica's earlier life, and of dead replicas
        (safe to run again after a failure half-way: fires already re-delivered are pending
        under this replica and in flight)."""
        store, me = self.store, self.replica
        by_owner: dict[str, dict[str, list[datetime]]] = {}
        for key, name, owner in await store.checkpoints_with_prefix(PENDING_PREFIX):
            if key in self._sources:
                when = datetime.fromisoformat(name[len(PENDING_PREFIX) :].replace("Z", "+00:00"))
                by_owner.setdefault(owner, {}).setdefault(key, []).append(when.astimezone(UTC))
        for owner, fires in by_owner.items():
            if owner == me:
                await self._redeliver(fires, own=True)
                continue
            lease = LEASE_PREFIX + owner
            if not await store.acquire_lease(lease, me, ttl):
                continue  # that replica is alive and delivering them
            try:
                logger.warning(
                    "schedules: replica %s stopped with %d undelivered fire(s); delivering",
                    owner,
                    sum(map(len, fires.values())),
                )
                await self._redeliver(fires, own=False)
            finally:
                await store.release_lease(lease, me)

    async def _redeliver(self, fires: dict[str, list[datetime]], *, own: bool) -> None:
        chosen: dict[str, list[datetime]] = {}
        for key, times in fires.items():
            entry = self._sources.get(key)
            if entry is None:
                continue
            source = entry[0]
            # A fire claimed ahead of its due time is not delivered before it.
            todo = sorted(
                t for t in times if (not own or not source.in_flight(t)) and source.is_due(t)
            )
            if todo:
                chosen[key] = todo
        if not chosen:
            return
        if not own:
            await self.store.update_checkpoints(
                {
                    k: {PENDING_PREFIX + _iso(t): self.replica for t in ts}
                    for k, ts in chosen.items()
                }
            )
        for key, times in chosen.items():
            entry = self._sources.get(key)
            if entry is not None:
                await entry[0].redeliver(entry[1], times)

    # ------------------------------------------------------------------ batches

    async def _claim(self, claims: list[tuple[str, datetime, Mapping[str, str]]]) -> list[bool]:
        won = await self.store.claim_fires(claims, self.replica)
        return [(key, when.astimezone(UTC)) in won for key, when, _ in claims]

    async def _read(self, keys: list[str]) -> list[Read]:
        checkpoints = await self.store.get_checkpoints_many(keys)
        last = await self.store.last_fires(keys)
        return [(checkpoints.get(k, {}), last.get(k)) for k in keys]

    async def _update(self, updates: list[Update]) -> list[None]:
        put: dict[str, dict[str, str]] = {}
        delete: dict[str, set[str]] = {}
        for key, values, gone in updates:
            for name in gone:
                put.get(key, {}).pop(name, None)
                delete.setdefault(key, set()).add(name)
            if values:
                put.setdefault(key, {}).update(values)
                delete.get(key, set()).difference_update(values)
        await self.store.update_checkpoints(put, delete)
        return [None] * len(updates)


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
