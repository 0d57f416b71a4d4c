"""The durable asynchronous-invocation queue: what Lambda's async queue is to Invoke with
``InvocationType=Event``, for every front-end that answers before the function runs.

Accepting: a front-end calls :meth:`AsyncQueue.enqueue` and answers its caller (202) only
after it returned: the event is committed to the store (``async_events``) by then.
Concurrent accepts are written in one transaction (a group commit), so a burst of requests
costs one commit, not one each.

Delivering: each running target (a front-end's mapping, or a function's implicit Invoke
target) has a consumer (:meth:`AsyncQueue.consume`, run by its source) that claims waiting
events with a lease of ``router.ingress.queue.lease_timeout`` seconds and puts them into the
target's pipeline, where the asynchronous delivery policy applies Lambda's semantics
(retries, maximum event age, destinations). The lease of every event this replica holds is
renewed until the event is acknowledged (deleted: delivered, or handed to a destination) or
released (the pipeline stopped without delivering it). A replica that dies holds its events
until their leases run out; then another replica, or this one restarted, claims them.
Events queued in this process wake their consumer at once; others (queued by another
replica, or released) are found within ``router.ingress.queue.poll_interval``.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Collection, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from router.abc import MetricFamily, Sink, Store
from router.aio import GroupCommit, cancel_and_wait, wait_event
from router.backoff import Backoff
from router.errors import RouterError
from router.models import MappingConfig, QueueDepth, QueuedEvent, Record
from router.secrets import redact

logger = logging.getLogger(__name__)

CLAIM_LIMIT = 100
"""Events claimed at most per look (fewer when the pipeline has less room)."""
GROUP_LIMIT = 1000
"""Events written at most per transaction."""
RENEW_BACKOFF = Backoff(base=0.5, cap=5.0)
DEPTH_INTERVAL = 5.0
"""Seconds between readings of the queue's depth for ``/metrics``."""


def function_target(name: str) -> str:
    """The queue target of a function's asynchronous Invoke calls."""
    return f"function:{name}"


def mapping_target(mapping: MappingConfig) -> str:
    """The queue target of a mapping (a front-end's events for it)."""
    return f"mapping:{mapping.uuid}"


class AsyncQueue:
    """The queue as the router runs it; see the module's docstring. ``async with`` it for
    the life of the service (it renews leases meanwhile and releases what it still holds at
    the end)."""

    def __init__(
        self,
        store: Store,
        *,
        replica_id: str,
        lease_timeout: float = 30.0,
        poll_interval: float = 1.0,
        depth_interval: float = DEPTH_INTERVAL,
    ) -> None:
        self.store = store
        self.depth_interval = depth_interval
        self.replica_id = replica_id
        self.lease_timeout = lease_timeout
        self.poll_interval = poll_interval
        self._held: set[str] = set()
        """Ids of the events this replica claimed and has not acknowledged or released."""
        self._deleting: set[str] = set()
        """Ids being deleted (acknowledged, the delete not yet committed)."""
        self._wake: dict[str, asyncio.Event] = {}
        # PostgreSQL takes concurrent commits: a second transaction in flight halves the
        # wait of an accept; SQLite has one writer anyway.
        writers = 2 if getattr(store, "backend", "") == "postgresql" else 1
        self._inserts = GroupCommit(self._insert, GROUP_LIMIT, writers)
        self._deletes = GroupCommit(self._delete, GROUP_LIMIT)
        self._tasks: list[asyncio.Task[None]] = []
        self.accepted = 0
        """Events accepted (committed) by this replica since it started."""
        self.depths: list[QueueDepth] = []
        """The queue's depth per target as last read (every :data:`DEPTH_INTERVAL` s)."""
        self.depths_read_at: datetime | None = None

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> AsyncQueue:
        # Replica ids are stable across restarts: what this replica held when it died (kill
        # -9) is delivered again now, not when those leases run out.
        taken_back = await self.store.release_events(None, self.replica_id)
        if taken_back:
            logger.info(
                "%d queued events claimed by this replica before it restarted are delivered again",
                taken_back,
            )
        self._tasks = [
            asyncio.create_task(self._keep_leases(), name="queue-leases"),
            asyncio.create_task(self._read_depths(), name="queue-depths"),
        ]
        return self

    async def __aexit__(self, *exc: object) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            await cancel_and_wait(task, f"the queue's {task.get_name()} task", logger)
        await self._inserts.aclose()
        await self._deletes.aclose()
        held, self._held = self._held, set()
        if held:
            try:
                await self.store.release_events(held, self.replica_id)
            except (RouterError, OSError) as e:
                logger.warning(
                    "%d queued events not released (%s): other replicas take them when "
                    "their leases run out",
                    len(held),
                    redact(str(e)),
                )

    # ------------------------------------------------------------------ accepting

    async def enqueue(
        self,
        target: MappingConfig | str,
        payload: Any,
        *,
        attributes: Mapping[str, Any] | None = None,
        event_id: str | None = None,
    ) -> str:
        """Commit one event for ``target`` and return its id once it is durable.

        ``target``: a mapping (its pipeline delivers the event: a front-end's own mapping,
        such as an EventBridge rule) or a function name (its implicit target, as Lambda's
        ``Invoke`` with ``InvocationType=Event``). ``payload`` is the event: a JSON-able
        value, or JSON text / UTF-8 bytes taken as they are (not checked: the caller
        validated it). ``attributes`` (JSON-able) are kept beside it for the source that
        delivers it (the Invoke target reads ``client_context``). ``event_id`` defaults to
        a fresh UUID. Raises :class:`router.errors.StoreError` when the store cannot take
        it: answer the caller with an error then (nothing was accepted)."""
        key = (
            mapping_target(target) if isinstance(target, MappingConfig) else function_target(target)
        )
        if isinstance(payload, bytes):
            text = payload.decode()
        elif isinstance(payload, str):
            text = payload
        else:
            text = orjson.dumps(payload).decode()
        event = QueuedEvent(
            id=event_id or str(uuid.uuid4()),
            target=key,
            payload=text,
            attributes=dict(attributes or {}),
            enqueued_at=datetime.now(UTC),
        )
        await self._inserts.submit(event)
        return event.id

    async def _insert(self, events: list[QueuedEvent]) -> None:
        await self.store.enqueue_events(events)
        self.accepted += len(events)
        for target in {e.target for e in events}:
            wake = self._wake.get(target)
            if wake is not None:
                wake.set()

    # ------------------------------------------------------------------ delivering

    async def consume(self, target: str, sink: Sink, claimed: set[str]) -> None:
        """Claim the events of ``target`` and put them into ``sink`` as records, as the
        sink has room, until cancelled, adding their ids to ``claimed``. Store errors are
        raised (the caller's supervisor restarts it). The records' ``position`` is the
        event; :meth:`ack` deletes delivered ones, :meth:`release` gives ids back."""
        wake = self._wake.setdefault(target, asyncio.Event())
        while True:
            await sink.wait_for_room()
            wake.clear()
            limit = min(CLAIM_LIMIT, sink.free())
            events = await self.store.claim_events(
                target, self.replica_id, limit, self.lease_timeout
            )
            if not events:
                await wait_event(wake, self.poll_interval)
                continue
            ids = [e.id for e in events]
            self._held.update(ids)
            claimed.update(ids)
            try:
                records = await self._records(events, sink)
                await sink.put(records)
            except BaseException:
                claimed.difference_update(ids)
                await self.release(ids)
                raise

    async def _records(self, events: list[QueuedEvent], sink: Sink) -> list[Record]:
        records = []
        for event in events:
            try:
                records.append(to_record(event))
            except orjson.JSONDecodeError as e:
                # Only SQL written by hand gets here: the front-ends queue valid JSON.
                item = {"event_id": event.id, "target": event.target, "payload": event.payload}
                await sink.reject(item, f"the queued payload is not JSON: {e}")
                await self.store.delete_events([event.id])
                self._held.discard(event.id)
        return records

    async def ack(self, records: Sequence[Record]) -> None:
        """The events of ``records`` were delivered: delete them (durable on return)."""
        ids = [r.position.id for r in records]
        # Held until deleted (a failed delete is retried: keep the lease meanwhile), but not
        # "lost" when the lease keeper finds them gone.
        self._deleting.update(ids)
        try:
            await asyncio.gather(*(self._deletes.submit(i) for i in ids))
            self._held.difference_update(ids)
        finally:
            self._deleting.difference_update(ids)

    async def _delete(self, ids: list[str]) -> None:
        await self.store.delete_events(ids)

    async def release(self, ids: Collection[str]) -> None:
        """Events claimed and not delivered (their mapping stopped): any replica may claim
        them now. A store error is logged: they are claimed again when their leases run
        out."""
        self._held.difference_update(ids)
        try:
            await self.store.release_events(ids, self.replica_id)
        except (RouterError, OSError) as e:
            logger.info(
                "%d queued events not released (%s): claimed again when their leases run out",
                len(ids),
                redact(str(e)),
            )

    async def note_attempt(self, event: QueuedEvent, attempts: int, retry_at: float | None) -> None:
        """Remember that ``event`` (held here) met its ``attempts``-th function error and
        may be tried again at ``retry_at`` (epoch seconds; None: not again), so that a
        restart keeps its retry budget and its backoff. A store error is logged: this
        replica counts on in memory, and only a crash before the next write forgets it."""
        when = None if retry_at is None else datetime.fromtimestamp(retry_at, UTC)
        try:
            held = await self.store.record_attempt(event.id, self.replica_id, attempts, when)
        except (RouterError, OSError) as e:
            logger.warning(
                "queued event %s: its attempt %d is not recorded in the store (%s); a restart "
                "before the next write would try it more often",
                event.id,
                attempts,
                redact(str(e)),
            )
            return
        if not held:
            logger.info(
                "queued event %s: not held by this replica any more (taken over or deleted)",
                event.id,
            )

    @property
    def held(self) -> int:
        """Events this replica holds (claimed, not yet acknowledged or released)."""
        return len(self._held)

    async def _keep_leases(self) -> None:
        """Renew the leases this replica holds, three times per lease."""
        interval = self.lease_timeout / 3
        failures = 0
        while True:
            await asyncio.sleep(interval if not failures else RENEW_BACKOFF.delay(failures))
            held = set(self._held)
            if not held:
                continue
            try:
                kept = await self.store.renew_events(held, self.replica_id, self.lease_timeout)
            except (RouterError, OSError) as e:
                failures += 1
                logger.warning(
                    "cannot renew the leases of %d queued events (attempt %d): %s",
                    len(held),
                    failures,
                    redact(str(e)),
                )
                continue
            failures = 0
            # Gone: deleted meanwhile (acknowledged), or, after a long store outage, taken
            # over by another replica.
            lost = (held - kept - self._deleting) & self._held
            if lost:
                logger.warning(
                    "%d queued events were claimed by another replica after their leases ran "
                    "out here; they may be delivered twice",
                    len(lost),
                )
                self._held.difference_update(lost)

    async def _read_depths(self) -> None:
        failures = 0
        while True:
            try:
                self.depths = await self.store.queue_depths()
                self.depths_read_at = datetime.now(UTC)
                failures = 0
            except (RouterError, OSError) as e:
                failures += 1
                if failures == 1:
                    logger.info("cannot read the queue's depth: %s", redact(str(e)))
            await asyncio.sleep(self.depth_interval)

    def metrics(self, names: Mapping[str, str]) -> list[MetricFamily]:
        """The queue's metric families; ``names`` gives a mapping's name by its uuid (the
        ``target`` label is ``function NAME`` or ``mapping NAME``)."""

        def label(target: str) -> dict[str, str]:
            kind, _, key = target.partition(":")
            return {"target": f"{kind} {names.get(key, key)}"}

        now = datetime.now(UTC)
        return [
            MetricFamily(
                name="router_queue_events",
                type="gauge",
                help="Events waiting in the asynchronous queue (all replicas), per target",
                samples=[("router_queue_events", label(d.target), d.events) for d in self.depths],
            ),
            MetricFamily(
                name="router_queue_oldest_event_age_seconds",
                type="gauge",
                help="Age of the oldest event waiting in the asynchronous queue, per target",
                samples=[
                    (
                        "router_queue_oldest_event_age_seconds",
                        label(d.target),
                        max(0.0, (now - d.oldest).total_seconds()) if d.oldest else 0.0,
                    )
                    for d in self.depths
                ],
            ),
            MetricFamily(
                name="router_queue_accepted_total",
                type="counter",
                help="Events this replica committed to the asynchronous queue",
                samples=[("router_queue_accepted_total", {}, self.accepted)],
            ),
            MetricFamily(
                name="router_queue_claimed_events",
                type="gauge",
                help="Queued events this replica holds (claimed, not yet delivered)",
                samples=[("router_queue_claimed_events", {}, len(self._held))],
            ),
        ]


def to_record(event: QueuedEvent) -> Record:
    """A queued event as the pipeline's record: its own lane (events are independent), the
    decoded payload as ``data``, the event itself as ``position``, the function errors it
    met so far as ``attempts``."""
    return Record(
        lane=event.id,
        position=event,
        data=orjson.loads(event.payload),
        identifier=event.id,
        size=len(event.payload),
        arrival=event.enqueued_at.timestamp(),
        attempts=event.attempts,
    )


__all__ = [
    "AsyncQueue",
    "GroupCommit",
    "function_target",
    "mapping_target",
    "to_record",
]
