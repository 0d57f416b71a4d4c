"""Shard-by-shard reading shared by the Kinesis and DynamoDB Streams sources.

* The shards are listed at start and every ``shard_sync_interval`` (and at once when a shard
  ends); each readable shard (see :mod:`.shards`) gets a reader task and one lane, or
  ``parallelization_factor`` lanes chosen by a hash of the partition key.
* A reader never fetches more than the pipeline has room for (``sink.free()``); an empty
  read waits ``poll_interval`` before the next one, as Lambda polls an idle shard once a
  second. An expired shard iterator is renewed after the last record read.
* A shard's checkpoint row (the last sequence number acknowledged) is written only after
  delivery, filtering or hand-off to a destination, over the contiguous acknowledged prefix
  (:mod:`.progress`), coalesced at most every ``checkpoint_interval``.
* A shard read to its end and acknowledged whole is marked ``SHARD_END``; its children start
  then, and its row is deleted once they all have rows of their own.

Subclasses bring the service calls and the record shapes.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import time
import zlib
from abc import abstractmethod
from collections.abc import Hashable, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar

from pydantic import Field

from connectors.aws.common import (
    AWS_REQUIRES,
    AwsSettings,
    client_config,
    describe,
    error_code,
    is_aws_error,
    is_throttle,
    make_session,
    run_all,
)
from connectors.aws.streams.leasing import ShardLeasing
from connectors.aws.streams.progress import FINISHED, ShardProgress
from connectors.aws.streams.shards import AT_TIMESTAMP, Shard, Start
from connectors.aws.streams.windowing import Windowing
from connectors.aws.streams.windows import (
    FINAL_LANE,
    WINDOW_PREFIX,
    ShardWindow,
    parse_row,
)
from router import logs
from router.abc import MappingProblem, MetricFamily, Sink, Source, SourceContext
from router.aio import wait_event
from router.errors import SourceError
from router.models import MappingConfig, Record

logger = logging.getLogger(__name__)
warnings = logs.LimitedLogger(logger)

EXPIRED_CODES = frozenset({"ExpiredIteratorException", "TrimmedDataAccessException"})
THROTTLE_CODES = frozenset({"ProvisionedThroughputExceededException", "LimitExceededException"})


class StreamSettings(AwsSettings):
    """Settings every stream source takes besides its stream."""

    poll_interval: float = Field(default=1.0, gt=0, le=60)
    """Seconds a shard reader waits after a read that returned nothing (Lambda polls an idle
    shard once per second)."""
    records_per_call: int = Field(default=10_000, ge=1, le=10_000)
    """``Limit`` of each GetRecords call (also bounded by the room in the pipeline)."""
    shard_sync_interval: float = Field(default=10.0, gt=0)
    """Seconds between two listings of the stream's shards (new shards after a reshard)."""
    checkpoint_interval: float = Field(default=0.5, ge=0)
    """Minimum seconds between two checkpoint writes (they are coalesced)."""
    revoke_timeout: float = Field(default=10.0, ge=0)
    """Seconds a shard that is given up waits for its in-flight batches."""
    close_timeout: float = Field(default=10.0, gt=0)
    """Seconds the last checkpoint write may take when the source stops."""
    lease_duration: float = Field(default=30.0, ge=1)
    """Seconds a replica's lease on a shard lasts unless renewed (renewed every third of
    it): a dead replica's shards are taken within this time."""


def epoch_seconds(value: Any) -> float:
    """A timestamp of a response as epoch seconds: JSON protocols send a number; an ISO
    8601 string is parsed as well."""
    if isinstance(value, int | float):
        return float(value)
    text = str(value)
    try:
        return float(text)
    except ValueError:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment.timestamp()


@dataclass(slots=True)
class ReadResult:
    records: list[Any]
    next_iterator: str | None
    behind_ms: int | None


class StreamSource(ShardLeasing, Windowing, Source):
    """A stream read shard by shard (see the module docstring)."""

    requires: ClassVar[Mapping[str, str]] = AWS_REQUIRES
    service: ClassVar[str]
    """botocore service name of the reading client."""
    pins_latest: ClassVar[bool] = False
    """The service reads from a time (AT_TIMESTAMP): a LATEST start is pinned to a time."""

    settings: StreamSettings

    def __init__(self, settings: StreamSettings, context: SourceContext) -> None:
        super().__init__(settings, context)
        mapping = context.mapping
        self._slots = max(1, mapping.parallelization_factor)
        self._window = float(mapping.tumbling_window or 0)
        self._windows: dict[str, ShardWindow] = {}
        """The open tumbling window of each shard read (with ``tumbling_window``)."""
        self._position = mapping.starting_position or "LATEST"
        stamp = mapping.starting_position_timestamp
        self._timestamp = stamp.timestamp() if stamp is not None else None
        self._session = make_session(settings)
        # Record timestamps as epoch seconds, not timezone-aware datetimes: botocore's
        # default (a dateutil tzlocal per value, then .timestamp()) was the largest cost of
        # a read after the emulator itself (bench/kinesis.py under py-spy).
        parsers = self._session._session.get_component("response_parser_factory")
        parsers.set_parser_defaults(timestamp_parser=epoch_seconds)
        self._stack: AsyncExitStack | None = None
        self.client: Any = None
        self.arn = ""
        self.region = ""
        self._sink: Sink | None = None
        self._shards: dict[str, Shard] = {}
        self._rows: dict[str, str] = {}
        """The shard checkpoint rows as this source last read or wrote them."""
        self._progress: dict[str, ShardProgress] = {}
        self._lanes: dict[str, list[tuple[str, ...] | tuple[str, int]]] = {}
        self._readers: dict[str, asyncio.Task[None]] = {}
        self._leased: set[str] = set()
        """Shards whose lease this replica holds."""
        self._reader_error: BaseException | None = None
        self.behind_ms: dict[str, int] = {}
        """Per shard read, how far its last read was behind the tip (the iterator age)."""
        self._changed = asyncio.Event()
        self._dirty = asyncio.Event()
        self._write_lock = asyncio.Lock()
        self._writer: asyncio.Task[None] | None = None
        self._closed = False

    # -- what a service brings ----------------------------------------------------------

    @property
    @abstractmethod
    def where(self) -> str:
        """The stream, for messages (``kinesis arn:...``)."""

    @abstractmethod
    async def open_stream(self) -> None:
        """Find the stream (set ``arn`` and ``region``); raise SourceError when it cannot be
        read."""

    @abstractmethod
    async def list_shards(self) -> list[Shard]: ...

    @abstractmethod
    async def shard_iterator(self, shard_id: str, start: Start) -> str: ...

    @abstractmethod
    async def get_records(self, iterator: str, limit: int) -> ReadResult: ...

    @abstractmethod
    def convert(self, shard_id: str, lanes: Sequence[Hashable], raws: list[Any]) -> list[Record]:
        """Records of one read of one shard, in order; ``lanes`` are the shard's lanes
        (one, or one per slot of ``parallelization_factor``)."""

    # -- the Source contract ------------------------------------------------------------

    @classmethod
    def validate_mapping(cls, mapping: MappingConfig) -> Sequence[MappingProblem]:
        if mapping.tumbling_window and mapping.parallelization_factor > 1:
            return [
                MappingProblem(
                    setting="tumbling_window",
                    message="a tumbling window keeps one state per shard: it needs "
                    "parallelization_factor 1 (one lane per shard)",
                )
            ]
        return ()

    async def run(self, sink: Sink) -> None:
        self._sink = sink
        await self._open()
        self._rows = await sink.supervisor.retry(
            f"reading the checkpoints of {self.where}", self._load_rows
        )
        self._reader_error = None
        try:
            await run_all([self._manage(sink), self._write_loop()])
        except asyncio.CancelledError:
            # The router stops: readers stop, acks of in-flight batches still checkpoint
            # until aclose().
            await self._stop_readers()
            raise
        except BaseException:
            await self._stop_readers()
            await self._give_up(list(self._progress))
            raise

    async def _open(self) -> None:
        if self._closed:
            raise SourceError(f"{self.where}: source is closed")
        if self.client is None:
            stack = AsyncExitStack()
            config = client_config(self.settings, pool=max(10, 2 * len(self._shards) + 4))
            self.client = await stack.enter_async_context(
                self._session.client(
                    self.service,
                    endpoint_url=self.settings.endpoint_url,
                    region_name=self.region or None,
                    config=config,
                )
            )
            self._stack = stack
        await self.open_stream()

    async def _load_rows(self) -> dict[str, str]:
        uuid = self.context.mapping.uuid
        if not uuid:
            return {}
        return await self.context.store.get_checkpoints(uuid)

    def build_event(self, records: Sequence[Record]) -> dict[str, Any]:
        if self._window:
            event = self.window_event(records)
            if event is not None:
                return event
        return {"Records": [r.data for r in records]}

    async def ack(self, records: Sequence[Record]) -> None:
        lane: Any = None
        run: list[str] = []
        changed = False
        for record in records:
            if record.lane is not lane:
                if run and self._ack_run(lane, run):
                    changed = True
                lane = record.lane
                run = []
                if lane[-1] == FINAL_LANE:
                    await self._window_closed(lane[0])
                    continue
            if lane[-1] != FINAL_LANE:
                run.append(record.position)
        if run and self._ack_run(lane, run):
            changed = True
        if changed:
            self._dirty.set()

    def _ack_run(self, lane: tuple[Any, ...], sequences: list[str]) -> bool:
        progress = self._progress.get(lane[0])
        return progress is not None and progress.ack_run(sequences)

    def metrics(self) -> Sequence[MetricFamily]:
        name = self.context.mapping.name
        replica = self.context.replica_id
        return [
            MetricFamily(
                name="router_stream_iterator_age_milliseconds",
                type="gauge",
                help="Per shard read by this replica, how far its last read was behind the "
                "newest record of the shard (Kinesis MillisBehindLatest; DynamoDB: the age of "
                "the last record read, 0 at the tip)",
                samples=[
                    (
                        "router_stream_iterator_age_milliseconds",
                        {"mapping": name, "shard": shard},
                        behind,
                    )
                    for shard, behind in sorted(self.behind_ms.items())
                ],
            ),
            MetricFamily(
                name="router_stream_shards_held",
                type="gauge",
                help="Shards whose lease this replica holds",
                samples=[
                    (
                        "router_stream_shards_held",
                        {"mapping": name, "replica": replica},
                        len(self._leased),
                    )
                ],
            ),
        ]

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._stop_readers()
        try:
            async with asyncio.timeout(self.settings.close_timeout):
                await self._flush()
                await self._release_all()
        except TimeoutError:
            logger.warning("%s: the last checkpoint write was cut short", self.where)
        stack, self._stack = self._stack, None
        self.client = None
        if stack is not None:
            await stack.aclose()

    # -- shards -------------------------------------------------------------------------

    async def _manage(self, sink: Sink) -> None:
        settings = self.settings
        wait = min(settings.shard_sync_interval, settings.lease_duration / 3)
        retry = sink.supervisor.retry
        listed_at = -math.inf
        shards: list[Shard] = []
        while True:
            if time.monotonic() - listed_at >= settings.shard_sync_interval:
                shards = await retry(f"listing the shards of {self.where}", self.list_shards)
                self._shards = {s.id: s for s in shards}
                listed_at = time.monotonic()
            # Fresh rows each round: other replicas write checkpoints and member rows.
            self._rows = await retry(f"reading the checkpoints of {self.where}", self._load_rows)
            await self._plan(sink, shards)
            sink.supervisor.working()
            if self._reader_error is not None:
                raise self._reader_error
            await wait_event(self._changed, wait)
            self._changed.clear()
            if self._reader_error is not None:
                raise self._reader_error

    def _start_reader(self, sink: Sink, shard: Shard, start: Start) -> None:
        if self._slots > 1:
            lanes: list[tuple[str, ...] | tuple[str, int]] = [
                (shard.id, s) for s in range(self._slots)
            ]
        else:
            lanes = [(shard.id,)]
        self._lanes[shard.id] = lanes
        task = asyncio.create_task(self._read(sink, shard, start), name=f"shard {shard.id}")
        self._readers[shard.id] = task
        task.add_done_callback(functools.partial(self._reader_done, shard.id))

    def _reader_done(self, shard_id: str, task: asyncio.Task[None]) -> None:
        if self._readers.get(shard_id) is task:
            del self._readers[shard_id]
        if not task.cancelled() and task.exception() is not None:
            self._reader_error = task.exception()
        self._changed.set()

    async def _stop_readers(self) -> None:
        tasks = list(self._readers.values())
        self._readers.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _give_up(self, shard_ids: list[str]) -> None:
        """Stop reading ``shard_ids``: wait for their in-flight batches, checkpoint what was
        acknowledged, forget the rest (read again from the checkpoint by whoever reads the
        shard next)."""
        sink = self._sink
        lanes: list[Hashable] = [lane for s in shard_ids for lane in self._lanes.get(s, ())]
        if self._window:
            lanes.extend((s, FINAL_LANE) for s in shard_ids)
        if sink is not None and lanes:
            try:
                await sink.revoke(lanes, timeout=self.settings.revoke_timeout)
            except Exception:
                logger.exception("%s: giving up shards failed", self.where)
        with contextlib.suppress(Exception):
            await self._flush()
        for shard_id in shard_ids:
            self._progress.pop(shard_id, None)
            self._lanes.pop(shard_id, None)
            self.behind_ms.pop(shard_id, None)
            self._windows.pop(shard_id, None)

    # -- reading one shard --------------------------------------------------------------

    async def _read(self, sink: Sink, shard: Shard, start: Start) -> None:
        supervisor = sink.supervisor
        shard_id = shard.id
        committed = self._rows.get(shard_id)
        progress = ShardProgress(start.sequence)
        progress.committed = committed
        self._progress[shard_id] = progress
        if start.marker is not None and committed is None:
            await supervisor.retry(
                f"writing the checkpoint of {shard_id}",
                lambda: self._write_rows({shard_id: start.marker or ""}),
            )
            progress.committed = start.marker
        if self._window:
            row = self._rows.get(WINDOW_PREFIX + shard_id)
            if row is not None:
                try:
                    self._windows[shard_id] = parse_row(row, self._window)
                except ValueError as e:
                    raise SourceError(f"{self.where}: {shard_id}: {e}") from e
        iterator = await self._iterator(shard_id, start, progress)
        lanes = self._lanes[shard_id]
        settings = self.settings
        failures = 0
        while True:
            free = sink.free()
            if free <= 0:
                await sink.wait_for_room()
                continue
            try:
                result = await self.get_records(iterator, min(settings.records_per_call, free))
            except asyncio.CancelledError:
                raise
            except Exception as e:
                if not is_aws_error(e):
                    raise
                code = error_code(e)
                if code in EXPIRED_CODES:
                    iterator = await self._iterator(shard_id, start, progress)
                    continue
                failures += 1
                self._read_failed(sink, shard_id, e, failures)
                await asyncio.sleep(min(settings.poll_interval * failures, 10.0))
                continue
            if failures:
                failures = 0
                sink.report("OK")
            raws = result.records
            if raws:
                records = self.convert(shard_id, lanes, raws)
                behind = result.behind_ms
                if behind is None:  # the service does not say: the age of the last record
                    behind = max(0, int((time.time() - records[-1].arrival) * 1000))
                self.behind_ms[shard_id] = behind
                if self._window:
                    await self._put_windowed(sink, shard_id, progress, records)
                else:
                    progress.fetched([r.position for r in records])
                    await sink.put(records)
            else:
                self.behind_ms[shard_id] = result.behind_ms or 0
                window = self._windows.get(shard_id)
                if window is not None and time.time() >= window.end:
                    # Nothing more to read and the window's time is over.
                    await self._close_window(sink, shard_id, progress)
            if self._at_end(shard_id, result, progress):
                break
            if result.next_iterator is not None:
                iterator = result.next_iterator
            if not raws:
                await asyncio.sleep(settings.poll_interval)
        window = self._windows.get(shard_id)
        if window is not None:
            await self._close_window(sink, shard_id, progress, early=time.time() < window.end)
        progress.end()
        await progress.drained.wait()
        await supervisor.retry(f"writing the checkpoint of {shard_id}", self._flush)
        logger.info("%s: shard %s read to its end", self.where, shard_id)
        self._progress.pop(shard_id, None)
        self._lanes.pop(shard_id, None)
        self.behind_ms.pop(shard_id, None)

    def _at_end(self, shard_id: str, result: ReadResult, progress: ShardProgress) -> bool:
        if result.next_iterator is None:
            return True
        # Some emulators (moto) keep handing out iterators for a closed shard read to its
        # end: a closed shard is at its end once its last sequence number was read, or a
        # read at the tip found nothing.
        shard = self._shards.get(shard_id)
        if shard is None or not shard.closed:
            return False
        if shard.ending is not None and progress.last_read is not None:
            with contextlib.suppress(ValueError):
                if int(progress.last_read) >= int(shard.ending):
                    return True
        return not result.records and not result.behind_ms

    async def _iterator(self, shard_id: str, start: Start, progress: ShardProgress) -> str:
        """An iterator after the last record read, else at ``start``."""
        if progress.last_read is not None and progress.last_read.isdigit():
            start = Start("AFTER_SEQUENCE_NUMBER", sequence=progress.last_read)
        if start.iterator == AT_TIMESTAMP and start.timestamp is None:
            start = Start("LATEST")

        async def call() -> str:
            try:
                return await self.shard_iterator(shard_id, start)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                if is_aws_error(e):
                    raise SourceError(
                        f"{self.where}: cannot get an iterator for {shard_id}: {describe(e)}"
                    ) from e
                raise

        assert self._sink is not None
        return await self._sink.supervisor.retry(f"reading shard {shard_id}", call)

    def _read_failed(self, sink: Sink, shard_id: str, error: BaseException, count: int) -> None:
        text = describe(error)
        if is_throttle(error) or error_code(error) in THROTTLE_CODES:
            what = f"{self.where}: reading {shard_id} is throttled: {text}"
        else:
            what = f"{self.where}: reading {shard_id} failed: {text}"
        sink.report(f"PROBLEM: {what}")
        warnings.warning(
            (self.context.mapping.uuid or self.context.mapping.name, "read", shard_id),
            "%s (attempt %d, retrying)",
            what,
            count,
        )

    # -- checkpoints --------------------------------------------------------------------

    async def _write_loop(self) -> None:
        interval = self.settings.checkpoint_interval
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            try:
                await self._flush()
            except Exception as e:  # noqa: BLE001 - retried: acks stay in memory meanwhile
                logger.warning("%s: writing checkpoints: %s", self.where, e)
                self._dirty.set()
                await asyncio.sleep(max(interval, 1.0))
                continue
            if interval:
                await asyncio.sleep(interval)

    async def _flush(self) -> None:
        """Write the checkpoint of every shard that moved since its last write."""
        async with self._write_lock:
            pending: dict[str, tuple[ShardProgress, str]] = {}
            for shard_id, progress in self._progress.items():
                target = progress.checkpoint
                if target is not None and target != progress.committed:
                    pending[shard_id] = (progress, target)
            if not pending:
                return
            rows = {s: target for s, (_, target) in pending.items()}
            for shard_id, (progress, target) in pending.items():
                window = self._windows.get(shard_id)
                if window is not None and not window.ending and target not in FINISHED:
                    key = WINDOW_PREFIX + shard_id
                    rows[key] = window.row(progress.acked, self._rows.get(key))
            await self._put_rows(rows)
            for progress, target in pending.values():
                progress.committed = target
            if any(target in FINISHED for _, target in pending.values()):
                self._changed.set()

    async def _write_rows(self, rows: dict[str, str]) -> None:
        async with self._write_lock:
            await self._put_rows(rows)

    async def _put_rows(self, rows: dict[str, str]) -> None:
        uuid = self.context.mapping.uuid
        if uuid:
            await self.context.store.put_checkpoints(uuid, rows)
        self._rows.update(rows)

    async def _delete_rows(self, keys: list[str]) -> None:
        async with self._write_lock:
            uuid = self.context.mapping.uuid
            if uuid:
                await self.context.store.delete_checkpoints(uuid, keys)
            for key in keys:
                self._rows.pop(key, None)

    # -- helpers for subclasses -----------------------------------------------------------

    def slot_of(self, key: bytes) -> int:
        """The lane slot of a partition key (``parallelization_factor``): CRC-32, stable
        across processes, so a key keeps its lane after a restart."""
        return zlib.crc32(key) % self._slots
