"""Kafka as a source: Lambda's self-managed Apache Kafka event source mapping.

One consumer group per mapping; one lane per partition (or, with ``parallelization_factor``,
up to N lanes per partition by record key). Offsets are committed only up to the contiguous
prefix of records the core acknowledged (delivered, filtered out or handed to a destination),
asynchronously and coalesced; a rebalance waits for in-flight batches of the revoked
partitions and commits what was acknowledged before the partitions go.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Collection, Hashable, Mapping, Sequence
from operator import attrgetter
from typing import TYPE_CHECKING, Any, ClassVar

from connectors.kafka.membership import (
    group_instance_id,
    static_join_limit,
    static_membership_supported,
)
from connectors.kafka.offsets import (
    PartitionOffsets,
    ResetPlan,
    ResetTarget,
    mirror_rows,
    plan_resets,
)
from connectors.kafka.records import (
    batch_info,
    build_event,
    filter_viewer,
    identifiers,
    kafka_view,
    record_converter,
    trace_fields,
)
from connectors.kafka.settings import KafkaSourceSettings, describe
from router import logs
from router.abc import MetricFamily, Sink, Source, SourceContext, SourceTraits
from router.errors import SourceError
from router.models import Record, SourceKind

if TYPE_CHECKING:
    from aiokafka import AIOKafkaConsumer, TopicPartition

logger = logging.getLogger(__name__)
warnings = logs.LimitedLogger(logger)
"""Warnings repeated on every attempt while the broker is away, per group and cause."""

_RETRY_BACKOFF = 1.0
_LANE = attrgetter("lane")
_POSITION = attrgetter("position")
_OFFSET = attrgetter("offset")
"""The offset of a client's record (parsed, or a ConsumerRecord)."""
_VALUE = attrgetter("data.value")
"""The value bytes of a record's client record (what the filter view decodes)."""


class KafkaSource(Source):
    """Reads the topics of one mapping through a consumer group (see module docstring)."""

    Settings: ClassVar[type[KafkaSourceSettings]] = KafkaSourceSettings
    requires: ClassVar[Mapping[str, str]] = {"aiokafka": "kafka"}
    traits: ClassVar[SourceTraits] = SourceTraits(
        kind=SourceKind.STREAM,
        filter_view=kafka_view,
        batch_size_default=100,
        batch_size_max=10_000,
        window_default=0.5,
        starting_positions=("TRIM_HORIZON", "LATEST", "AT_TIMESTAMP"),
        starting_position_default="LATEST",
        retry_default=-1,
        retry_cap_with_destination=10,
        supports=frozenset(
            {
                "bisect_batch_on_function_error",
                "maximum_retry_attempts",
                "maximum_record_age",
                "function_response_types",
                "destination_config",
                "filter_criteria",
                "parallelization_factor",
                "starting_position",
                "starting_position_timestamp",
            }
        ),
    )

    settings: KafkaSourceSettings

    def __init__(self, settings: KafkaSourceSettings, context: SourceContext) -> None:
        super().__init__(settings, context)
        mapping = context.mapping
        self._bootstrap = settings.bootstrap
        self._slots = max(1, mapping.parallelization_factor)
        self._convert = record_converter(self._slots)
        self._group_id = settings.consumer_group_id or mapping.uuid or mapping.name
        self._instance_id = (
            group_instance_id(context.replica_id, mapping.uuid or mapping.name)
            if settings.static_membership
            else None
        )
        """Static membership (see connectors.kafka.membership); None: a dynamic member."""
        self._membership_told = False
        self._position: str
        if settings.starting_position is not None:
            self._position = settings.starting_position
            stamp = settings.starting_position_timestamp
        else:
            self._position = mapping.starting_position or "LATEST"
            stamp = mapping.starting_position_timestamp
        self._start_ms = int(stamp.timestamp() * 1000) if stamp is not None else None
        self._consumer: AIOKafkaConsumer | None = None
        self._sink: Sink | None = None
        self._offsets: dict[TopicPartition, PartitionOffsets] = {}
        self._wake = asyncio.Event()
        self._commit_lock = asyncio.Lock()
        self._commit_task: asyncio.Task[None] | None = None
        self._resets: ResetPlan | None = None
        self._reset_keys: tuple[str, ...] = ()
        self._foreign: dict[TopicPartition, int] = {}
        """Reset offsets of partitions another member owns, still to be committed."""
        self._mirrored: dict[tuple[str, int], int] = {}
        self._mirror_due = 0.0
        self._closed = False

    # -- the Source contract ------------------------------------------------------------

    async def run(self, sink: Sink) -> None:
        from connectors.kafka.client import KafkaError

        self._sink = sink
        await self._close_consumer()  # a previous run that ended with an error
        self._resets = await self._load_resets()
        consumer = await self._join()
        self._commit_task = asyncio.create_task(self._commit_loop(), name="kafka-commit")
        settings = self.settings
        convert = self._convert
        offsets = self._offsets
        heard = time.monotonic()  # when the cluster last answered
        unreachable = False
        try:
            while True:
                free = sink.free()
                if free <= 0:
                    # Wait for room before fetching, never inside put(): a rebalance may
                    # revoke the partition while we wait, and a record fetched before it
                    # must not be queued after it.
                    await sink.wait_for_room()
                    continue
                limit = min(settings.max_poll_records, free)
                fetched = await consumer.getmany(timeout_ms=1000, max_records=limit)
                if not fetched:
                    if time.monotonic() - heard >= settings.probe_interval:
                        problem = await self._probe(consumer)
                        heard = time.monotonic()
                        if problem is not None:
                            unreachable = True
                            sink.report(f"PROBLEM: {problem}")
                        elif unreachable:
                            unreachable = False
                            sink.report("OK")
                    continue
                heard = time.monotonic()
                unreachable = False
                out: list[Record] = []
                for tp, messages in fetched.items():
                    tracker = offsets.get(tp)
                    if tracker is None:
                        continue  # revoked while the fetch was on its way
                    tracker.fetched(map(_OFFSET, messages))
                    out.extend(convert(tp.topic, tp.partition, messages))
                if out:
                    await sink.put(out)
        except KafkaError as e:
            # Cancellation keeps the consumer: acks of in-flight batches still commit until
            # aclose(). An error ends this consumer; the router calls run() again. Its
            # partitions are given up first (closing does not call the rebalance listener),
            # so records queued in lanes are not delivered again by the next consumer.
            with contextlib.suppress(Exception):
                await self._revoked(set(self._offsets))
            await self._close_consumer()
            raise SourceError(f"kafka {self._bootstrap}: {describe(e)}") from e

    async def _join(self) -> AIOKafkaConsumer:
        """Start a consumer and join the group: as a static member while the cluster
        handles it (see connectors.kafka.membership), else as a dynamic one. Raises
        SourceError when the cluster cannot be reached."""
        from connectors.kafka.client import KafkaError, hand_out_parsed_records

        consumer = self._consumer = self._new_consumer()  # the listener may run during start
        try:
            if self._instance_id is None:
                await consumer.start()
            else:
                consumer = await self._join_static(consumer)
        except (KafkaError, OSError) as e:
            self._consumer = None
            with contextlib.suppress(Exception):
                await consumer.stop()
            raise SourceError(
                f"kafka {self._bootstrap}: cannot join group {self._group_id!r}: {describe(e)}"
            ) from e
        if not hand_out_parsed_records(consumer):
            logger.debug("kafka %s: the consumer hands out ConsumerRecords", self._bootstrap)
        if not self._membership_told:
            self._membership_told = True
            session = self.settings.session_timeout_ms
            if self._instance_id is None:
                logger.info(
                    "kafka group %s: dynamic member: a restarted replica gets its partitions "
                    "back once its old session (%d ms) expired",
                    self._group_id,
                    session,
                )
            else:
                logger.info(
                    "kafka group %s: static member %s: restarted within %d ms, a replica gets "
                    "its partitions back at once",
                    self._group_id,
                    self._instance_id,
                    session,
                )
        return consumer

    async def _join_static(self, consumer: AIOKafkaConsumer) -> AIOKafkaConsumer:
        session = self.settings.session_timeout_ms
        limit = static_join_limit(session)
        try:
            async with asyncio.timeout(limit):
                await consumer.start()
        except TimeoutError:
            problem = (
                f"could not join as static member {self._instance_id} within {limit:.0f}s (a "
                "cluster that does not handle static membership, e.g. tansu 0.6.0 when the "
                "group's last leader was another static member that is gone)"
            )
        else:
            if static_membership_supported(consumer) is not False:
                return consumer
            # aiokafka dropped the instance id: a dynamic member that would not leave the
            # group when it stops. Joined again as what it is.
            problem = "the cluster does not support static membership (JoinGroup v5, Kafka 2.3+)"
        logger.warning(
            "kafka group %s: %s; joining as a dynamic member: a restarted replica waits for "
            "its old session (%d ms) to expire (static_membership: false skips this attempt)",
            self._group_id,
            problem,
            session,
        )
        self._instance_id = None
        self._membership_told = True
        self._consumer = None
        with contextlib.suppress(Exception):
            await consumer.stop()
        consumer = self._consumer = self._new_consumer()
        await consumer.start()
        return consumer

    async def _probe(self, consumer: AIOKafkaConsumer) -> str | None:
        """Ask the cluster for its metadata; a description of the failure, or None."""
        from connectors.kafka.client import KafkaError

        try:
            async with asyncio.timeout(self.settings.request_timeout_ms / 1000):
                await consumer.topics()
        except (KafkaError, OSError, TimeoutError) as e:
            warnings.warning(
                (self._bootstrap, "unreachable"),
                "kafka %s: cluster unreachable: %s",
                self._bootstrap,
                describe(e),
                cause="unreachable",
            )
            return f"kafka {self._bootstrap}: cluster unreachable: {describe(e)}"
        return None

    def metrics(self) -> list[MetricFamily]:
        """``router_lane_lag`` per owned partition: its end offset (the high watermark of the
        latest fetch) minus the next offset to acknowledge (the first one fetched and not
        yet acknowledged, or the one after the last fetched)."""
        consumer = self._consumer
        if consumer is None:
            return []
        name = self.context.mapping.name
        samples: list[tuple[str, Mapping[str, str], float]] = []
        for tp, tracker in list(self._offsets.items()):
            end = consumer.highwater(tp)
            done = tracker.committable
            if done is None:
                done = tracker.committed
            if end is None or done is None:
                continue  # nothing fetched from it yet
            lane = f"{tp.topic}:{tp.partition}"
            samples.append(("router_lane_lag", {"mapping": name, "lane": lane}, max(0, end - done)))
        return [
            MetricFamily(
                name="router_lane_lag",
                type="gauge",
                help="Records behind the end of each lane (Kafka: partition end offset minus "
                "the next offset to acknowledge)",
                samples=samples,
            )
        ]

    def build_event(self, records: Sequence[Record]) -> dict[str, Any]:
        return build_event(self._bootstrap, records)

    def invocation_fields(self, records: Sequence[Record]) -> Mapping[str, str]:
        return trace_fields(records)

    async def ack(self, records: Sequence[Record]) -> None:
        # Records come in runs of one lane (a batch is one lane): one tracker call per run.
        lanes = list(map(_LANE, records))
        if lanes and lanes.count(lanes[0]) == len(lanes):
            # The usual case, the batch of one lane: its offsets in one pass in C.
            if self._ack_run(lanes[0], list(map(_POSITION, records))):
                self._wake.set()
            return
        lane: Any = None
        run: list[int] = []
        changed = False
        for record in records:
            if record.lane is not lane:
                if run and self._ack_run(lane, run):
                    changed = True
                lane = record.lane
                run = []
            run.append(record.position)
        if run and self._ack_run(lane, run):
            changed = True
        if changed:
            self._wake.set()

    def _ack_run(self, lane: tuple[Any, ...], offsets: list[int]) -> bool:
        # A lane is (topic, partition) or (topic, partition, slot); TopicPartition is a
        # (topic, partition) tuple.
        tracker = self._offsets.get(lane if len(lane) == 2 else lane[:2])
        return tracker is not None and tracker.ack_run(offsets)

    def identifiers(self, records: Sequence[Record]) -> list[str]:
        return identifiers(records)

    def filter_viewer(self, fields: frozenset[str] | None) -> Callable[[Record], Any]:
        return filter_viewer(fields)

    def filter_payload(self) -> tuple[str, Callable[[Record], object]]:
        return "value", _VALUE

    def batch_info(self, records: Sequence[Record]) -> dict[str, Any]:
        return batch_info(self._bootstrap, records)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._close_consumer()

    # -- consumer lifecycle -------------------------------------------------------------

    def _new_consumer(self) -> AIOKafkaConsumer:
        from connectors.kafka.client import AIOKafkaConsumer, Rebalance

        s = self.settings
        consumer = AIOKafkaConsumer(
            group_id=self._group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest" if self._position == "TRIM_HORIZON" else "latest",
            session_timeout_ms=s.session_timeout_ms,
            heartbeat_interval_ms=s.heartbeat_interval_ms,
            max_poll_interval_ms=s.max_poll_interval_ms,
            rebalance_timeout_ms=s.rebalance_timeout_ms or s.max_poll_interval_ms,
            fetch_max_wait_ms=s.fetch_max_wait_ms,
            max_partition_fetch_bytes=s.max_partition_fetch_bytes,
            max_poll_records=s.max_poll_records,
            group_instance_id=self._instance_id,
            **s.client_kwargs(),
        )
        consumer.subscribe(topics=list(s.topics), listener=Rebalance(self._revoked, self._assigned))
        return consumer

    async def _close_consumer(self) -> None:
        from connectors.kafka.client import KafkaError

        consumer = self._consumer
        if consumer is None:
            return
        task, self._commit_task = self._commit_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        try:
            await self._commit(None, timeout=self.settings.close_timeout)
            await self._mirror(force=True)
        finally:
            self._consumer = None
            self._offsets.clear()
            try:
                async with asyncio.timeout(self.settings.close_timeout):
                    await consumer.stop()
            except asyncio.CancelledError:
                # With the broker gone, aiokafka's stop() lets the CancelledError of its own
                # fetch task escape. Only a cancellation of this task goes on.
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise
                logger.warning("kafka %s: closing the consumer was cut short", self._bootstrap)
            except (KafkaError, OSError, TimeoutError) as e:
                logger.warning("kafka %s: closing the consumer: %s", self._bootstrap, describe(e))

    # -- commits ------------------------------------------------------------------------

    async def _commit_loop(self) -> None:
        interval = self.settings.commit_interval
        while True:
            await self._wake.wait()
            self._wake.clear()
            if not await self._commit(None):
                await asyncio.sleep(_RETRY_BACKOFF)
                self._wake.set()
                continue
            await self._mirror(force=False)
            if interval:
                await asyncio.sleep(interval)

    async def _commit(
        self, partitions: Collection[TopicPartition] | None, timeout: float | None = None
    ) -> bool:
        """Commit the acknowledged prefix of ``partitions`` (all when None). False when a
        retriable failure should be tried again later. ``timeout`` defaults to the request
        timeout: with the coordinator gone the client would retry for ever."""
        from connectors.kafka.client import CommitFailedError, IllegalStateError, KafkaError

        consumer = self._consumer
        if consumer is None:
            return True
        # One deadline for waiting on a commit already running (a revoke's, say) and for
        # this one.
        limit = timeout or self.settings.request_timeout_ms / 1000
        deadline = asyncio.get_running_loop().time() + limit
        try:
            async with asyncio.timeout_at(deadline):
                await self._commit_lock.acquire()
        except TimeoutError as e:
            return self._commit_failed(e)
        try:
            pending: dict[TopicPartition, tuple[PartitionOffsets, int]] = {}
            for tp, tracker in self._offsets.items():
                if partitions is not None and tp not in partitions:
                    continue
                target = tracker.committable
                if target is not None and tracker.dirty:
                    pending[tp] = (tracker, target)
            if not pending:
                return await self._commit_foreign(consumer, deadline)
            try:
                async with asyncio.timeout_at(deadline):
                    await consumer.commit({tp: target for tp, (_, target) in pending.items()})
            except (CommitFailedError, IllegalStateError) as e:
                # The group is rebalancing: the revoke callback commits for these partitions.
                logger.info("kafka group %s: commit skipped: %s", self._group_id, describe(e))
                return True
            except (KafkaError, TimeoutError) as e:
                return self._commit_failed(e)
            for tp, (tracker, target) in pending.items():
                tracker.committed = target
                self._mirrored[(tp.topic, tp.partition)] = target
            return await self._commit_foreign(consumer, deadline)
        finally:
            self._commit_lock.release()

    def _commit_failed(self, error: Exception) -> bool:
        warnings.warning(
            (self._group_id, "commit"),
            "kafka group %s: commit failed: %s",
            self._group_id,
            describe(error),
            cause="commit",
        )
        if self._sink is not None:
            self._sink.report(f"PROBLEM: kafka offset commit failed: {describe(error)}")
        return False

    async def _commit_foreign(self, consumer: AIOKafkaConsumer, deadline: float) -> bool:
        """Commit reset offsets of partitions this member does not own. aiokafka's public
        ``commit`` refuses those, so this goes through the group coordinator directly."""
        from connectors.kafka.client import KafkaError, OffsetAndMetadata

        if not self._foreign:
            return True
        subscription = consumer._subscription.subscription
        assignment = subscription.assignment if subscription is not None else None
        if assignment is None:
            return False
        offsets = dict(self._foreign)
        try:
            async with asyncio.timeout_at(deadline):
                await consumer._coordinator.commit_offsets(
                    assignment, {tp: OffsetAndMetadata(o, "") for tp, o in offsets.items()}
                )
        except (KafkaError, TimeoutError) as e:
            warnings.warning(
                (self._group_id, "commit"),
                "kafka group %s: committing a reset: %s",
                self._group_id,
                describe(e),
                cause="commit",
            )
            return False
        for tp, offset in offsets.items():
            if self._foreign.get(tp) == offset:
                del self._foreign[tp]
            self._mirrored[(tp.topic, tp.partition)] = offset
        return True

    async def _mirror(self, *, force: bool) -> None:
        """Copy committed offsets into the store (``<topic>:<partition>`` rows), at most once
        per ``checkpoint_interval``, and drop reset rows once they were applied."""
        now = time.monotonic()
        if not force and now < self._mirror_due:
            return
        self._mirror_due = now + self.settings.checkpoint_interval
        rows = mirror_rows(self._mirrored)
        reset_keys: tuple[str, ...] = ()
        if not self._foreign:  # a reset row goes once its offsets are all committed
            reset_keys, self._reset_keys = self._reset_keys, ()
        if not rows and not reset_keys:
            return
        store = self.context.store
        uuid = self.context.mapping.uuid
        try:
            if rows:
                await store.put_checkpoints(uuid, rows)
            if reset_keys:
                await store.delete_checkpoints(uuid, reset_keys)
        except Exception as e:  # noqa: BLE001 - the copy is informational; commits are the truth
            if reset_keys:
                self._reset_keys = reset_keys
            logger.warning("kafka mapping %s: copying offsets to the store: %s", uuid, describe(e))
        else:
            self._mirrored.clear()

    # -- resets and rebalances --------------------------------------------------------

    async def _load_resets(self) -> ResetPlan | None:
        uuid = self.context.mapping.uuid
        if not uuid:
            return None
        try:
            rows = await self.context.store.get_checkpoints(uuid)
        except Exception as e:
            raise SourceError(f"kafka mapping {uuid}: reading checkpoints: {describe(e)}") from e
        plan = plan_resets(rows, self.settings.topics)
        for problem in plan.problems:
            logger.warning("kafka mapping %s: ignoring %s", uuid, problem)
        return plan if plan or plan.keys else None

    async def _assigned(self, assigned: Collection[TopicPartition]) -> None:
        from connectors.kafka.client import TopicPartition

        consumer = self._consumer
        for tp in assigned:
            self._offsets[tp] = PartitionOffsets()
        if consumer is None or not assigned:
            return
        targets: dict[TopicPartition, ResetTarget] = {}
        plan, self._resets = self._resets, None
        if plan:
            # Other replicas may own some partitions of the topics: the reset is committed
            # for every partition (the group accepts commits from any current member), so it
            # holds whoever reads them next.
            everything = set(assigned)
            for topic in self.settings.topics:
                everything.update(
                    TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()
                )
            for tp in everything:
                target = plan.target(tp.topic, tp.partition)
                if target is not None:
                    targets[tp] = target
        # A group without a committed offset starts at its starting position; that position
        # is committed at once, so a restart (or a crash before the first acknowledged
        # record) does not start again at a later "LATEST" and skip what came in between.
        if self._position in ("AT_TIMESTAMP", "LATEST"):
            for tp in assigned:
                if tp in targets or await consumer.committed(tp) is not None:
                    continue
                if self._position == "LATEST":
                    targets[tp] = ResetTarget(latest=True)
                elif self._start_ms is not None:
                    targets[tp] = ResetTarget(timestamp_ms=self._start_ms)
        if targets:
            for tp, offset in (await self._resolve(consumer, targets)).items():
                if tp not in assigned:
                    self._foreign[tp] = offset
                    continue
                consumer.seek(tp, offset)
                # Starting from a committed offset makes the position survive a crash that
                # comes before the first acknowledged record.
                self._offsets[tp] = PartitionOffsets(start=offset)
            self._wake.set()
        if plan is not None and plan.keys:
            self._reset_keys = plan.keys
            self._mirror_due = 0.0
            self._wake.set()
        logger.info("kafka group %s: assigned %s", self._group_id, sorted(assigned))

    async def _resolve(
        self, consumer: AIOKafkaConsumer, targets: Mapping[TopicPartition, ResetTarget]
    ) -> dict[TopicPartition, int]:
        found: dict[TopicPartition, int] = {}
        stamps = {tp: t.timestamp_ms for tp, t in targets.items() if t.timestamp_ms is not None}
        need_end = [tp for tp, t in targets.items() if t.latest or t.timestamp_ms is not None]
        need_start = [tp for tp, t in targets.items() if t.earliest]
        ends = await consumer.end_offsets(need_end) if need_end else {}
        starts = await consumer.beginning_offsets(need_start) if need_start else {}
        times = await consumer.offsets_for_times(stamps) if stamps else {}
        for tp, target in targets.items():
            if target.offset is not None:
                found[tp] = target.offset
            elif target.earliest:
                found[tp] = starts[tp]
            elif target.latest:
                found[tp] = ends[tp]
            else:
                hit = times.get(tp)
                # No record at or after the time: start at the end. (Some brokers answer
                # timestamp -1 instead of no entry.)
                found[tp] = ends[tp] if hit is None or hit.timestamp < 0 else hit.offset
        return found

    async def _revoked(self, revoked: Collection[TopicPartition]) -> None:
        if not revoked:
            return
        sink = self._sink
        if sink is not None:
            lanes: list[Hashable] = []
            for tp in revoked:
                if self._slots > 1:
                    lanes.extend((tp.topic, tp.partition, s) for s in range(self._slots))
                else:
                    lanes.append((tp.topic, tp.partition))
            try:
                await sink.revoke(lanes, timeout=self.settings.revoke_timeout)
            except Exception:
                logger.exception("kafka group %s: revoking lanes failed", self._group_id)
        await self._commit(set(revoked))
        for tp in revoked:
            self._offsets.pop(tp, None)
        logger.info("kafka group %s: revoked %s", self._group_id, sorted(revoked))
