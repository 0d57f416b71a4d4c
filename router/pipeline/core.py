"""The pipeline of one mapping: the Sink a source puts records into (intake: filter, count,
sort into lanes), backpressure, the lanes' batching and dispatch.

What happens to a batch once it is cut is the mapping's delivery policy, chosen once from the
kind of its source (:data:`POLICIES`): :mod:`router.pipeline.stream`,
:mod:`router.pipeline.queue` or :mod:`router.pipeline.asynchronous`. The pipeline never looks
at the kind of its source itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Collection, Hashable, Mapping, Sequence
from itertools import groupby, repeat
from typing import Any, Protocol

from router import tracing
from router.abc import Destination, Invoker, Sink, Source
from router.aio import cancel_and_wait, close_logged, wait_event
from router.backoff import Backoff
from router.counters import Counters
from router.models import FunctionConfig, MappingConfig, Record, SourceKind
from router.pipeline.asynchronous import AsyncDelivery
from router.pipeline.backpressure import Backpressure
from router.pipeline.batcher import BatchPolicy
from router.pipeline.delivery import Abandoned, Delivery
from router.pipeline.destination_records import rejected_record
from router.pipeline.lanes import Entry, Lane, entry_record, record_lane, record_size
from router.pipeline.queue import QueueDelivery
from router.pipeline.status import MappingStatus
from router.pipeline.stream import StreamDelivery
from router.secrets import redact
from router.supervisor import RESTART_BACKOFF, Supervisor

logger = logging.getLogger(__name__)

POLICIES: Mapping[SourceKind, type[Delivery]] = {
    SourceKind.STREAM: StreamDelivery,
    SourceKind.QUEUE: QueueDelivery,
    SourceKind.ASYNC: AsyncDelivery,
}
"""The delivery policy of each kind of source."""


class Matcher(Protocol):
    """What the pipeline needs of :class:`router.filters.Matcher`."""

    fields: frozenset[str] | None

    def matches(self, event: Any) -> bool: ...

    def payload_check(self, field: str) -> Callable[[object], bool] | None: ...


def _payload_check(
    source: Source, matcher: Matcher | None
) -> tuple[Callable[[Record], object], Callable[[object], bool]] | None:
    """``(payload, may_match)`` when every pattern needs a string in the raw bytes the
    source decodes for the filter (:meth:`Source.filter_payload`), else None."""
    if matcher is None:
        return None
    found = source.filter_payload()
    if found is None:
        return None
    field, payload = found
    check = matcher.payload_check(field)
    return None if check is None else (payload, check)


class Pipeline(Sink):
    """Runs one mapping: its source feeds lanes, lanes feed the function.

    ``start()`` launches the source under the mapping's :class:`Supervisor` (restarted after
    every failure but a configuration error); ``stop(timeout)`` stops polling, finishes in-flight
    batches for up to ``timeout`` seconds (retry waits are abandoned: those records are not
    acknowledged and come back), then cancels what is left.
    """

    def __init__(
        self,
        *,
        mapping: MappingConfig,
        function: FunctionConfig,
        source: Source,
        invoker: Invoker,
        matcher: Matcher | None = None,
        on_failure: Destination | None = None,
        on_success: Destination | None = None,
        backoff: Backoff | None = None,
        report: Callable[[str], None] | None = None,
        capacity: int | None = None,
        restart_backoff: Backoff | None = None,
    ) -> None:
        self.mapping = mapping
        self.source = source
        self._matcher = matcher
        self._filter_view = source.filter_viewer(matcher.fields) if matcher is not None else None
        self._payload_check = _payload_check(source, matcher)
        self.mapping_status = MappingStatus(report)
        self.policy = BatchPolicy(
            batch_size=max(1, mapping.batch_size), window=max(0.0, mapping.maximum_batching_window)
        )
        self.room = Backpressure(
            capacity or min(100_000, max(1_000, 4 * self.policy.batch_size * 8))
        )
        self._lanes: dict[Hashable, Lane] = {}
        self._batch_tasks: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()
        self._source_task: asyncio.Task[None] | None = None
        self.supervisor = Supervisor(
            f"mapping {mapping.name}", self, backoff=restart_backoff or RESTART_BACKOFF
        )
        self.counters = Counters()
        policy = POLICIES[source.traits_for(source.settings).kind]
        self.delivery = policy(
            mapping=mapping,
            function=function,
            source=source,
            invoker=invoker,
            on_failure=on_failure,
            on_success=on_success,
            backoff=backoff or Backoff(),
            counters=self.counters,
            stopping=self._stopping,
            status=self.mapping_status,
            room=self.room,
        )
        self._slots = asyncio.Semaphore(self.delivery.batch_slots)

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> None:
        if self._source_task is None:
            self._source_task = asyncio.create_task(
                self._run_source(), name=f"source:{self.mapping.name}"
            )

    async def _run_source(self) -> None:
        await self.supervisor.run(lambda: self.source.run(self), stopping=self._stopping)

    async def stop(self, timeout: float = 30.0) -> None:
        """Stop polling, let in-flight batches finish (up to ``timeout``), then cancel."""
        self._stopping.set()
        if self._source_task is not None:
            what = f"mapping {self.mapping.name}: its source"
            await cancel_and_wait(self._source_task, what, logger)
        # Queued records that were never dispatched are not acknowledged: the source gives
        # them again (a stream re-reads them, a queue makes them visible again).
        released: list[Record] = []
        for lane in self._lanes.values():
            released.extend(r for r, _ in lane.entries)
            self._drop(lane)
            lane.wake.set()  # a lane waiting for its batching window ends now
        if released:
            await self.delivery.give_back(released)
        tasks = [t for t in self._tasks() if not t.done()]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=timeout)
            for task in pending:
                task.cancel()
            if pending:
                logger.warning(
                    "mapping %s: %d batches still running after %.1fs, abandoned",
                    self.mapping.name,
                    len(pending),
                    timeout,
                )
                await asyncio.wait(pending)
        await close_logged(self.source.aclose, f"mapping {self.mapping.name}: its source", logger)

    def _tasks(self) -> list[asyncio.Task[None]]:
        tasks = [lane.task for lane in self._lanes.values() if lane.task is not None]
        tasks.extend(self._batch_tasks)
        return tasks

    # ----------------------------------------------------------------- Sink

    @property
    def status(self) -> str:
        """The mapping's ``last_processing_result`` as last reported."""
        return self.mapping_status.result

    def report(self, result: str) -> None:
        self.mapping_status.report(result)

    async def reject(self, item: Mapping[str, Any], reason: str) -> None:
        self.counters.rejected += 1
        logger.warning(
            "mapping %s: skipped what the source could not turn into an event (%s): %s",
            self.mapping.name,
            reason,
            redact(" ".join(f"{key}={value}" for key, value in item.items())),
        )
        destination = self.delivery.on_failure
        if destination is None:
            return
        record = rejected_record(function_arn=self.delivery.arn, reason=reason, item=item)
        with contextlib.suppress(Abandoned):
            # Abandoned: the router stops while the destination is down; a source that starts
            # again finds the item again and rejects it again.
            await self.delivery.send(destination, record, "on-failure")

    def free(self) -> int:
        return self.room.free()

    async def wait_for_room(self) -> None:
        await self.room.wait_for_room()

    @property
    def held(self) -> int:
        """Records taken from the source and not yet acknowledged, released or dropped."""
        return self.room.held

    async def put(self, records: Sequence[Record]) -> None:
        if not records:
            return
        room = self.room
        if room.full():
            await room.wait_for_room()
        if self._stopping.is_set():
            # No lane would dispatch them; unacknowledged, the source gives them again.
            return
        counters = self.counters
        counters.records_in += len(records)
        room.take(len(records))
        matcher = self._matcher
        view = self._filter_view
        settled: list[Record] = []
        entries: list[Entry]
        filtered = 0
        if matcher is not None and view is not None:
            matches = matcher.matches
            check = self._payload_check
            if check is None:
                entries = [(r, not r.unfiltered and not matches(view(r))) for r in records]
            else:
                # A record whose raw bytes cannot match is dropped before its view is built.
                payload, may_match = check
                entries = [
                    (r, not r.unfiltered and not (may_match(payload(r)) and matches(view(r))))
                    for r in records
                ]
            filtered = sum([f for _, f in entries])
            counters.filtered += filtered
            if filtered:
                entries, settled = self.delivery.sort_filtered(entries)
        else:
            entries = list(zip(records, repeat(False)))
        # Group by lane: a source puts runs of one lane (a fetched partition, a shard), each
        # found and sliced in C.
        groups: dict[Hashable, list[Entry]] = {}
        lanes_of = list(map(record_lane, map(entry_record, entries)))
        if lanes_of and lanes_of.count(lanes_of[0]) == len(lanes_of):
            groups[lanes_of[0]] = entries
        else:
            start = 0
            for key, run in groupby(lanes_of):
                end = start + len(list(run))
                found = groups.get(key)
                if found is None:
                    groups[key] = entries[start:end]
                else:
                    found += entries[start:end]
                start = end
        lanes = self._lanes
        now = time.monotonic()
        for key, group in groups.items():
            lane = lanes.get(key)
            if lane is None:
                lane = lanes[key] = Lane(key)
            if filtered:
                sizes = [r.size for r, f in group if not f]
            else:
                sizes = list(map(record_size, map(entry_record, group)))
            if sizes:
                if lane.count == 0:
                    lane.oldest = now
                lane.count += len(sizes)
                lane.nbytes += sum(sizes)
            lane.entries.extend(group)
            if lane.task is None:
                lane.task = asyncio.create_task(self._lane_worker(lane), name=f"lane:{lane.key}")
            lane.wake.set()
        if settled:
            await self.delivery.delete_filtered(settled)

    async def revoke(self, lanes: Collection[Hashable], timeout: float) -> None:
        tasks: list[asyncio.Task[None]] = []
        for key in lanes:
            lane = self._lanes.get(key)
            if lane is None:
                continue
            self._drop(lane)
            if lane.task is not None and not lane.task.done():
                lane.wake.set()
                tasks.append(lane.task)
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=timeout)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)
        # A worker cancelled above may leave entries behind; they belong to the next owner.
        for key in lanes:
            lane = self._lanes.get(key)
            if lane is not None and (lane.task is None or lane.task.done()):
                self._drop(lane)
                del self._lanes[key]

    # ----------------------------------------------------------------- lanes

    def _drop(self, lane: Lane) -> None:
        """Forget the queued (not dispatched) entries of a lane."""
        dropped = lane.clear()
        if dropped:
            self.room.give(len(dropped))

    async def _lane_worker(self, lane: Lane) -> None:
        ordered = self.delivery.ordered(lane.key)
        try:
            while lane.entries and not self._stopping.is_set():
                if lane.count:
                    wait = self.policy.wait_time(
                        lane.count, lane.nbytes, lane.oldest, time.monotonic()
                    )
                    if wait > 0:
                        lane.wake.clear()
                        await wait_event(lane.wake, wait)
                        continue
                # When the batch's first record was read (its span starts there).
                read_at = time.time() - (time.monotonic() - lane.oldest)
                batch = lane.take(self.policy)
                if not batch:
                    continue
                if not await self._acquire(batch):
                    break
                if ordered:
                    try:
                        await self._run_batch(lane, batch, read_at)
                    finally:
                        self._slots.release()
                else:
                    task = asyncio.create_task(self._run_unordered(lane, batch, read_at))
                    self._batch_tasks.add(task)
                    task.add_done_callback(self._batch_tasks.discard)
        finally:
            if self._lanes.get(lane.key) is lane and (not lane.entries or self._stopping.is_set()):
                del self._lanes[lane.key]
            lane.task = None

    async def _acquire(self, batch: list[Entry]) -> bool:
        """Take a concurrency slot for ``batch``. False when the pipeline stopped meanwhile:
        the batch was never dispatched and is handled like queued records (given back)."""
        try:
            await self._slots.acquire()
        except asyncio.CancelledError:
            self.room.give(len(batch))
            raise
        if not self._stopping.is_set():
            return True
        self._slots.release()
        await self._abandon(batch)
        return False

    async def _abandon(self, batch: list[Entry]) -> None:
        """Leave ``batch`` unacknowledged; a queue gets the records back now."""
        self.room.give(len(batch))
        if batch:
            await self.delivery.give_back([r for r, _ in batch])

    async def _run_unordered(self, lane: Lane, batch: list[Entry], read_at: float) -> None:
        try:
            await self._run_batch(lane, batch, read_at)
        finally:
            self._slots.release()

    async def _deliver(self, lane: Lane, batch: list[Entry], read_at: float) -> None:
        """Deliver ``batch`` in its span (see :mod:`router.tracing`)."""
        if not tracing.enabled():
            await self.delivery.deliver_from(lane, batch)
            return
        first = next(([r] for r, filtered in batch if not filtered), [])
        upstream = self.source.invocation_fields(first).get("trace_id", "") if first else ""
        mapping = self.mapping
        with tracing.batch_span(mapping.name, mapping.source.type, len(batch), upstream, read_at):
            await self.delivery.deliver_from(lane, batch)

    async def _run_batch(self, lane: Lane, batch: list[Entry], read_at: float) -> None:
        try:
            await self._deliver(lane, batch, read_at)
        except Abandoned:
            # Stopping: the batch is not acknowledged and will be delivered again.
            await self._abandon(batch)
        except asyncio.CancelledError:
            self.room.give(len(batch))
            raise
        except Exception:
            logger.exception("mapping %s: batch failed unexpectedly", self.mapping.name)
            self.report("PROBLEM: internal error, see the router log")
            self.room.give(len(batch))
            await self.delivery.give_back([r for r, _ in batch])
