"""The pipeline of one mapping: the Sink a source puts records into, lanes, batching and
dispatch. What happens to a batch once it is cut (invoke, retry, bisect, destinations, ack)
lives in :mod:`router.pipeline.delivery`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Collection, Hashable, Mapping, Sequence
from typing import Any, Protocol

from router.abc import Destination, Invoker, Sink, Source
from router.aio import cancel_and_wait, close_logged, wait_event
from router.models import FunctionConfig, MappingConfig, Record, SourceKind
from router.pipeline.batcher import EVENT_OVERHEAD, RECORD_OVERHEAD, BatchPolicy
from router.pipeline.delivery import Abandoned, Counters, Delivery
from router.pipeline.records import rejected_record
from router.pipeline.retry import Backoff
from router.secrets import redact
from router.supervisor import RESTART_BACKOFF, Supervisor

logger = logging.getLogger(__name__)

# (record, filtered): filtered records ride along in their lane so that acks stay in order.
Entry = tuple[Record, bool]

_NO_LANE = object()

DEFAULT_CONCURRENCY = 10
UNBOUNDED = 1_000_000


class Matcher(Protocol):
    """What the pipeline needs of :class:`router.filters.Matcher`."""

    fields: frozenset[str] | None

    def matches(self, event: Any) -> bool: ...


class Lane:
    __slots__ = ("count", "entries", "key", "nbytes", "oldest", "task", "wake")

    def __init__(self, key: Hashable) -> None:
        self.key = key
        self.entries: deque[Entry] = deque()
        self.count = 0  # records to send (not filtered)
        self.nbytes = 0
        self.oldest = 0.0  # monotonic time the oldest waiting record arrived in the lane
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None


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
        traits = source.traits_for(source.settings)
        self.kind = traits.kind
        self._matcher = matcher
        self._filter_view = source.filter_viewer(matcher.fields) if matcher is not None else None
        self._report_cb = report
        self.status = "No records processed"
        self.policy = BatchPolicy(
            batch_size=max(1, mapping.batch_size), window=max(0.0, mapping.maximum_batching_window)
        )
        limit = mapping.maximum_concurrency or DEFAULT_CONCURRENCY
        # Streams run one batch per lane, as many lanes as there are. Queues bound the
        # batches in flight. Asynchronous invocations bound the invocations themselves: an
        # event waiting out a retry backoff must not hold a slot other events need.
        self._slots = asyncio.Semaphore(limit if self.kind is SourceKind.QUEUE else UNBOUNDED)
        invoke_slots = asyncio.Semaphore(limit) if self.kind is SourceKind.ASYNC else None
        self._capacity = capacity or min(100_000, max(1_000, 4 * self.policy.batch_size * 8))
        self._held = 0
        self._room = asyncio.Event()
        self._room.set()
        self._lanes: dict[Hashable, Lane] = {}
        self._batch_tasks: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()
        self._source_task: asyncio.Task[None] | None = None
        self.supervisor = Supervisor(
            f"mapping {mapping.name}", self, backoff=restart_backoff or RESTART_BACKOFF
        )
        self.counters = Counters()
        self.delivery = Delivery(
            mapping=mapping,
            function=function,
            source=source,
            invoker=invoker,
            kind=self.kind,
            on_failure=on_failure,
            on_success=on_success,
            backoff=backoff or Backoff(),
            counters=self.counters,
            stopping=self._stopping,
            report=self.report,
            done=self._done,
            invoke_slots=invoke_slots,
        )

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
            await cancel_and_wait(
                self._source_task, f"mapping {self.mapping.name}: its source", logger
            )
        # Queued records that were never dispatched are not acknowledged: the source gives
        # them again (a stream re-reads them, a queue makes them visible again).
        released: list[Record] = []
        for lane in self._lanes.values():
            released.extend(r for r, _ in lane.entries)
            self._drop(lane)
            lane.wake.set()  # a lane waiting for its batching window ends now
        if released and self.kind is SourceKind.QUEUE:
            await self._release(released)
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

    async def _release(self, records: Sequence[Record]) -> None:
        """Give queue records back to the queue now. A failure is logged: the queue makes
        them visible again when their visibility timeout ends anyway."""
        try:
            await self.source.release(records)
        except Exception as e:  # noqa: BLE001 - see above
            logger.warning(
                "mapping %s: %d records not released to the queue (%s); they come back when "
                "their visibility timeout ends",
                self.mapping.name,
                len(records),
                redact(str(e)) or type(e).__name__,
            )

    def _tasks(self) -> list[asyncio.Task[None]]:
        tasks = [lane.task for lane in self._lanes.values() if lane.task is not None]
        tasks.extend(self._batch_tasks)
        return tasks

    # ----------------------------------------------------------------- Sink

    def report(self, result: str) -> None:
        if result != self.status:
            self.status = result
            if self._report_cb is not None:
                self._report_cb(result)

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
        return max(0, self._capacity - self._held)

    async def wait_for_room(self) -> None:
        while self._held >= self._capacity:
            self._room.clear()
            await self._room.wait()

    @property
    def held(self) -> int:
        """Records taken from the source and not yet acknowledged, released or dropped."""
        return self._held

    async def put(self, records: Sequence[Record]) -> None:
        if not records:
            return
        while self._held >= self._capacity:
            self._room.clear()
            await self._room.wait()
        if self._stopping.is_set():
            # No lane would dispatch them; unacknowledged, the source gives them again.
            return
        counters = self.counters
        counters.records_in += len(records)
        self._held += len(records)
        matcher = self._matcher
        view = self._filter_view
        skip_now: list[Record] = []
        entries: list[Entry]
        if matcher is not None and view is not None:
            matches = matcher.matches
            entries = [(r, not matches(view(r))) for r in records]
            filtered = sum([f for _, f in entries])
            counters.filtered += filtered
            if filtered and self.kind is SourceKind.QUEUE:
                # Unordered queue records that do not match are deleted at once.
                skip_now = [r for r, f in entries if f and r.lane is None]
                if skip_now:
                    entries = [e for e in entries if not e[1] or e[0].lane is not None]
        else:
            entries = [(r, False) for r in records]
        # Group by lane; a source puts runs of one lane, so the lane rarely changes.
        groups: dict[Hashable, list[Entry]] = {}
        last: Any = _NO_LANE
        group: list[Entry] = []
        for entry in entries:
            key = entry[0].lane
            if key is not last:
                last = key
                found = groups.get(key)
                if found is None:
                    found = groups[key] = []
                group = found
            group.append(entry)
        lanes = self._lanes
        now = time.monotonic()
        for key, group in groups.items():
            lane = lanes.get(key)
            if lane is None:
                lane = lanes[key] = Lane(key)
            sizes = [r.size for r, f in group if not f]
            if sizes:
                if lane.count == 0:
                    lane.oldest = now
                lane.count += len(sizes)
                lane.nbytes += sum(sizes)
            lane.entries.extend(group)
            if lane.task is None:
                lane.task = asyncio.create_task(self._lane_worker(lane), name=f"lane:{lane.key}")
            lane.wake.set()
        if skip_now:
            logger.info(
                "mapping %s: %d records did not match the filter and were deleted",
                self.mapping.name,
                len(skip_now),
            )
            try:
                await self.delivery.ack(skip_now)
            except Abandoned:
                self._done(len(skip_now))
            except asyncio.CancelledError:
                # The source's receive loop was cancelled mid-delete: give the room back, and
                # let the queue redeliver (and filter) them rather than hold them forever.
                self._done(len(skip_now))
                await self._release(skip_now)
                raise

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
        if lane.entries:
            self._done(len(lane.entries))
            lane.entries.clear()
            lane.count = 0
            lane.nbytes = 0

    def _done(self, n: int) -> None:
        self._held -= n
        if self._held < self._capacity:
            self._room.set()

    def _take(self, lane: Lane) -> list[Entry]:
        entries = lane.entries
        policy = self.policy
        if lane.nbytes + EVENT_OVERHEAD + RECORD_OVERHEAD * lane.count <= policy.max_bytes:
            # Everything waiting fits in the payload limit: no record's size needs a look.
            if lane.count <= policy.batch_size:
                # One batch takes it all (filtered entries ride along).
                batch = list(entries)
                entries.clear()
                lane.count = 0
                lane.nbytes = 0
                return batch
            if lane.count == len(entries):
                # Nothing rides along: the batch is the first batch_size entries.
                popleft = entries.popleft
                batch = [popleft() for _ in range(policy.batch_size)]
                lane.count -= len(batch)
                lane.nbytes -= sum([r.size for r, _ in batch])
                lane.oldest = time.monotonic()
                return batch
        n = policy.cut(None if f else r.size for r, f in entries)
        batch = [entries.popleft() for _ in range(n)]
        for record, filtered in batch:
            if not filtered:
                lane.count -= 1
                lane.nbytes -= record.size
        if lane.count:
            lane.oldest = time.monotonic()
        return batch

    async def _lane_worker(self, lane: Lane) -> None:
        ordered = not (self.kind is SourceKind.QUEUE and lane.key is None)
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
                batch = self._take(lane)
                if not batch:
                    continue
                if not await self._acquire(batch):
                    break
                if ordered:
                    try:
                        await self._run_batch(lane, batch)
                    finally:
                        self._slots.release()
                else:
                    task = asyncio.create_task(self._run_unordered(lane, batch))
                    self._batch_tasks.add(task)
                    task.add_done_callback(self._batch_tasks.discard)
        finally:
            if self._lanes.get(lane.key) is lane and (not lane.entries or self._stopping.is_set()):
                del self._lanes[lane.key]
            lane.task = None

    async def _acquire(self, batch: list[Entry]) -> bool:
        """Take a concurrency slot for ``batch``. False when the pipeline stopped meanwhile:
        the batch was never dispatched and is handled like queued records (QUEUE: released)."""
        try:
            await self._slots.acquire()
        except asyncio.CancelledError:
            self._done(len(batch))
            raise
        if not self._stopping.is_set():
            return True
        self._slots.release()
        await self._abandon(batch)
        return False

    async def _abandon(self, batch: list[Entry]) -> None:
        """Leave ``batch`` unacknowledged; a queue gets the records back now."""
        self._done(len(batch))
        if self.kind is SourceKind.QUEUE and batch:
            await self._release([r for r, _ in batch])

    async def _run_unordered(self, lane: Lane, batch: list[Entry]) -> None:
        try:
            await self._run_batch(lane, batch)
        finally:
            self._slots.release()

    async def _run_batch(self, lane: Lane, batch: list[Entry]) -> None:
        try:
            if self.kind is SourceKind.STREAM:
                await self._run_stream_batch(batch)
            elif self.kind is SourceKind.QUEUE:
                release_rest = await self.delivery.queue(batch, ordered=lane.key is not None)
                if release_rest and lane.entries:
                    # FIFO: nothing may overtake a message that goes back to the queue.
                    rest = [r for r, _ in lane.entries]
                    self._drop(lane)
                    await self.source.release(rest)
            else:
                await self.delivery.asynchronous(batch)
        except Abandoned:
            # Stopping: the batch is not acknowledged and will be delivered again.
            await self._abandon(batch)
        except asyncio.CancelledError:
            self._done(len(batch))
            raise
        except Exception:
            logger.exception("mapping %s: batch failed unexpectedly", self.mapping.name)
            self.report("PROBLEM: internal error, see the router log")
            self._done(len(batch))
            if self.kind is SourceKind.QUEUE:
                await self._release([r for r, _ in batch])

    async def _run_stream_batch(self, batch: list[Entry]) -> None:
        """A stream lane never moves past a batch it has not finished: an unexpected error is
        retried with backoff (``delivery.stream`` removes what it acknowledged from ``batch``)."""
        attempt = 0
        while True:
            try:
                await self.delivery.stream(batch)
                return
            except (Abandoned, asyncio.CancelledError):
                raise
            except Exception:
                attempt += 1
                logger.exception("mapping %s: batch failed unexpectedly", self.mapping.name)
                self.report("PROBLEM: internal error, see the router log")
                await self.delivery.sleep(self.delivery.backoff.delay(attempt))
