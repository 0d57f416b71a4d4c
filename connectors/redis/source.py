"""Redis Streams as a source: a consumer group per mapping.

Each replica is one consumer of the mapping's group (named from its replica id) and reads new
entries with ``XREADGROUP``; Redis keeps every entry it hands out in the group's pending list
until the router acknowledges it with ``XACK``, which happens only after the entry was
delivered, filtered out or handed to a destination. One lane per stream (or, with
``parallelization_factor``, per stream and key field).

What a consumer holds but has not acknowledged is safe:

* after a restart with the same replica id (a crash, ``kill -9``) the consumer first reads its
  own pending entries again (``XREADGROUP ... 0``), in entry order, then new ones;
* a consumer that is gone for good stops touching its pending entries; once they were idle for
  ``claim_idle`` seconds another replica takes them over (``XAUTOCLAIM``) and delivers them. A
  live consumer touches (``XCLAIM ... JUSTID``) what it holds every ``claim_idle / 4``;
* an entry handed out on a connection that broke before the answer arrived stays in this
  consumer's pending list: the pending count is compared with what the source holds and such
  entries are read again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from connectors.redis.records import (
    batch_info,
    build_event,
    filter_viewer,
    record_converter,
    redis_view,
)
from connectors.redis.settings import RedisSourceSettings, describe
from router.abc import MappingProblem, MetricFamily, Sink, Source, SourceContext, SourceTraits
from router.errors import SourceError
from router.models import MappingConfig, Record, SourceKind

if TYPE_CHECKING:
    import redis.asyncio as aioredis

logger = logging.getLogger(__name__)

_MAX_SEQUENCE = 18_446_744_073_709_551_615
_CHUNK = 1_000
"""Most entry ids sent in one XCLAIM / XACK."""


def group_start(position: str, timestamp_ms: int | None) -> str:
    """The id a new group starts after: ``0`` (every entry), ``$`` (entries added from now
    on) or, for a time, the last id before it."""
    if position == "TRIM_HORIZON":
        return "0"
    if position == "AT_TIMESTAMP" and timestamp_ms is not None:
        return "0" if timestamp_ms <= 0 else f"{timestamp_ms - 1}-{_MAX_SEQUENCE}"
    return "$"


class RedisSource(Source):
    """Reads the streams of one mapping through a consumer group (see module docstring)."""

    Settings: ClassVar[type[RedisSourceSettings]] = RedisSourceSettings
    requires: ClassVar[Mapping[str, str]] = {"redis": "redis"}
    traits: ClassVar[SourceTraits] = SourceTraits(
        kind=SourceKind.STREAM,
        filter_view=redis_view,
        batch_size_default=100,
        batch_size_max=10_000,
        window_default=0.0,
        starting_positions=("TRIM_HORIZON", "LATEST", "AT_TIMESTAMP"),
        starting_position_default="LATEST",
        retry_default=-1,
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

    settings: RedisSourceSettings

    def __init__(self, settings: RedisSourceSettings, context: SourceContext) -> None:
        super().__init__(settings, context)
        mapping = context.mapping
        self._address = settings.address
        self._group = settings.group or mapping.uuid or mapping.name
        self._consumer = settings.consumer or context.replica_id
        slots = max(1, mapping.parallelization_factor)
        self._convert = record_converter(slots, settings.key_field)
        self._data_field = settings.data_field.encode()
        position: str
        if settings.starting_position is not None:
            position = settings.starting_position
            stamp = settings.starting_position_timestamp
        else:
            position = mapping.starting_position or "LATEST"
            stamp = mapping.starting_position_timestamp
        self._start = group_start(str(position), int(stamp.timestamp() * 1000) if stamp else None)
        self._client: aioredis.Redis | None = None
        self._outstanding: dict[str, set[str]] = {s: set() for s in settings.streams}
        """Entry ids read and not yet acknowledged, per stream."""
        self._resync = True
        """Read this consumer's own pending entries before new ones."""
        self._groups_ready = False
        self._due_touch = 0.0
        self._due_claim = 0.0
        self._due_metrics = 0.0
        self._unacked: dict[str, int] = {}
        self._lag: dict[str, int] = {}
        self._closed = False

    # -- the Source contract ------------------------------------------------------------

    @classmethod
    def validate_mapping(cls, mapping: MappingConfig) -> Sequence[MappingProblem]:
        settings = mapping.source.settings
        if (
            mapping.parallelization_factor > 1
            and isinstance(settings, RedisSourceSettings)
            and settings.key_field is None
        ):
            return [
                MappingProblem(
                    setting="parallelization_factor",
                    message="a redis source spreads a stream over several lanes by a field of "
                    "its entries: set source.key_field (e.g. key_field: customer)",
                )
            ]
        return ()

    async def run(self, sink: Sink) -> None:
        # redis-py can lose a cancellation that arrives while a command is being sent (the
        # call then goes on as if nothing happened): the reading loop runs as a task of its
        # own, cancelled until it ends.
        inner = asyncio.create_task(self._consume(sink), name="redis-consume")
        try:
            await asyncio.wait({inner})
        except asyncio.CancelledError:
            while not inner.done():
                inner.cancel()
                await asyncio.wait({inner}, timeout=0.1)
            raise
        inner.result()

    async def _consume(self, sink: Sink) -> None:
        from redis.exceptions import RedisError, ResponseError

        client = self._connect()
        try:
            if not self._groups_ready:
                await self._create_groups(client)
                self._groups_ready = True
            if self._resync:
                await self._read_own_pending(client, sink)
            while True:
                now = time.monotonic()
                if now >= self._due_touch:
                    self._due_touch = now + self.settings.claim_idle / 4
                    await self._touch(client)
                    await self._check_own_pending(client)
                    if self._resync:
                        await self._read_own_pending(client, sink)
                if now >= self._due_claim:
                    self._due_claim = now + self.settings.claim_interval
                    await self._claim_abandoned(client, sink)
                if now >= self._due_metrics:
                    self._due_metrics = now + self.settings.metrics_interval
                    await self._read_metrics(client)
                free = sink.free()
                if free <= 0:
                    await sink.wait_for_room()
                    continue
                await self._read_new(client, sink, min(free, self.settings.read_count))
        except ResponseError as e:
            if "NOGROUP" in str(e):
                # The stream (and its group) was deleted while the mapping ran.
                self._groups_ready = False
            raise SourceError(f"redis {self._address}: {describe(e)}") from e
        except (RedisError, OSError) as e:
            self._resync = True
            raise SourceError(f"redis {self._address}: {describe(e)}") from e

    def build_event(self, records: Sequence[Record]) -> dict[str, Any]:
        return build_event(self._address, self._group, self._data_field, records)

    async def ack(self, records: Sequence[Record]) -> None:
        from redis.exceptions import RedisError

        by_stream: dict[str, list[str]] = {}
        for record in records:
            by_stream.setdefault(record.data.stream, []).append(record.position)
        client = self._connect()
        try:
            async with client.pipeline(transaction=False) as pipe:
                for stream, ids in by_stream.items():
                    for start in range(0, len(ids), _CHUNK):
                        pipe.xack(stream, self._group, *ids[start : start + _CHUNK])
                await pipe.execute()
        except (RedisError, OSError) as e:
            raise SourceError(f"redis {self._address}: acknowledging: {describe(e)}") from e
        for stream, ids in by_stream.items():
            held = self._outstanding.get(stream)
            if held is not None:
                held.difference_update(ids)

    def filter_viewer(self, fields: frozenset[str] | None) -> Callable[[Record], Any]:
        return filter_viewer(self._data_field, fields)

    def filter_payload(self) -> tuple[str, Callable[[Record], object]]:
        field = self._data_field

        def data(record: Record) -> object:
            return record.data.fields.get(field)

        return "data", data

    def batch_info(self, records: Sequence[Record]) -> dict[str, Any]:
        return batch_info(self._address, self._group, self._data_field, records)

    def metrics(self) -> Sequence[MetricFamily]:
        name = self.context.mapping.name
        return [
            MetricFamily(
                name="router_source_unacked_records",
                type="gauge",
                help="Records handed to the mapping's consumers and not acknowledged yet",
                samples=[
                    ("router_source_unacked_records", {"mapping": name, "stream": s}, n)
                    for s, n in sorted(self._unacked.items())
                ],
            ),
            MetricFamily(
                name="router_source_lag_records",
                type="gauge",
                help="Records in the source not handed to the mapping's consumers yet",
                samples=[
                    ("router_source_lag_records", {"mapping": name, "stream": s}, n)
                    for s, n in sorted(self._lag.items())
                ],
            ),
        ]

    async def aclose(self) -> None:
        from redis.exceptions import RedisError

        if self._closed:
            return
        self._closed = True
        client, self._client = self._client, None
        if client is None:
            return
        try:
            await self._give_up_held(client)
        except (RedisError, OSError) as e:
            logger.warning(
                "redis %s: group %s: could not hand back unacknowledged entries (other "
                "replicas take them over after claim_idle): %s",
                self._address,
                self._group,
                describe(e),
            )
        with contextlib.suppress(RedisError, OSError):
            await client.aclose()

    async def _give_up_held(self, client: aioredis.Redis) -> None:
        """The mapping stops here: mark what it still holds as idle for ``claim_idle``, so
        that another replica takes it over at its next look instead of waiting for it."""
        idle_ms = int(self.settings.claim_idle * 1000)
        for stream, held in self._outstanding.items():
            ids = sorted(held)
            for begin in range(0, len(ids), _CHUNK):
                await client.xclaim(
                    stream,
                    self._group,
                    self._consumer,
                    0,
                    list(ids[begin : begin + _CHUNK]),
                    idle=idle_ms,
                    justid=True,
                )
            held.clear()

    # -- reading ------------------------------------------------------------------------

    def _connect(self) -> aioredis.Redis:
        import redis.asyncio as aioredis

        if self._client is None:
            self._client = aioredis.Redis.from_url(
                self.settings.url,
                client_name=f"event-router:{self.context.mapping.name}",
                **self.settings.client_kwargs(),
            )
        return self._client

    async def _create_groups(self, client: aioredis.Redis) -> None:
        from redis.exceptions import ResponseError

        for stream in self.settings.streams:
            try:
                await client.xgroup_create(stream, self._group, id=self._start, mkstream=True)
            except ResponseError as e:
                if "BUSYGROUP" not in str(e):
                    raise
                continue  # the group exists: it resumes where it was
            logger.info(
                "redis %s: created group %s on stream %s at %s",
                self._address,
                self._group,
                stream,
                self._start,
            )

    async def _read_new(self, client: aioredis.Redis, sink: Sink, count: int) -> None:
        block_ms = int(self.settings.block * 1000)
        answer: Any = await client.xreadgroup(
            self._group,
            self._consumer,
            dict.fromkeys(self.settings.streams, ">"),
            count=count,
            block=block_ms,
        )
        if answer:
            await self._put(sink, answer, skip_held=False)

    async def _put(self, sink: Sink, answer: Iterable[Any], *, skip_held: bool) -> int:
        """Hand what a read answered to the sink; the number of entries it held."""
        out: list[Record] = []
        seen = 0
        for raw_stream, entries in answer:
            stream = raw_stream.decode() if isinstance(raw_stream, bytes) else raw_stream
            held = self._outstanding.setdefault(stream, set())
            seen += len(entries)
            records = self._convert(stream, entries)
            if skip_held:
                records = [r for r in records if r.position not in held]
            held.update(r.position for r in records)
            out.extend(records)
        if out:
            try:
                await sink.put(out)
            except BaseException:
                # Not handed over: read again from this consumer's pending list.
                for record in out:
                    self._outstanding[record.data.stream].discard(record.position)
                self._resync = True
                raise
        return seen

    async def _read_own_pending(self, client: aioredis.Redis, sink: Sink) -> None:
        """Put this consumer's pending entries that the source does not hold (entries of a
        previous process with this consumer name, or lost on a broken connection), in entry
        order. Pending entries whose data was trimmed away are acknowledged."""
        for stream in self.settings.streams:
            after = "0"
            while True:
                free = sink.free()
                if free <= 0:
                    await sink.wait_for_room()
                    continue
                answer: Any = await client.xreadgroup(
                    self._group,
                    self._consumer,
                    {stream: after},
                    count=min(free, self.settings.read_count),
                )
                if not answer or not answer[0][1]:
                    break
                entries = answer[0][1]
                gone = [raw_id for raw_id, fields in entries if not fields]
                if gone:
                    await client.xack(stream, self._group, *gone)
                after = entries[-1][0]
                await self._put(sink, answer, skip_held=True)
        self._resync = False

    async def _touch(self, client: aioredis.Redis) -> None:
        """Reset the idle time of the entries this consumer holds, so that no other replica
        claims them while they wait in lanes or run. Only entries still pending for this
        consumer are touched: claiming is never taken back from another consumer."""
        for stream, held in self._outstanding.items():
            if not held:
                continue
            mine: list[Any] = []
            start: Any = "-"
            while True:
                rows: Any = await client.xpending_range(
                    stream, self._group, start, "+", _CHUNK, consumername=self._consumer
                )
                mine.extend(row["message_id"] for row in rows)
                if len(rows) < _CHUNK:
                    break
                start = b"(" + rows[-1]["message_id"]
            ids = [m for m in mine if m.decode() in held]
            for begin in range(0, len(ids), _CHUNK):
                await client.xclaim(
                    stream, self._group, self._consumer, 0, ids[begin : begin + _CHUNK], justid=True
                )

    async def _check_own_pending(self, client: aioredis.Redis) -> None:
        """More pending entries for this consumer than the source holds: some were handed
        out on a connection that broke before the answer arrived. Read them again."""
        for stream, held in self._outstanding.items():
            summary: Any = await client.xpending(stream, self._group)
            for consumer in summary.get("consumers") or ():
                name = consumer["name"]
                if isinstance(name, bytes):
                    name = name.decode()
                if name == self._consumer and int(consumer["pending"]) > len(held):
                    self._resync = True

    async def _claim_abandoned(self, client: aioredis.Redis, sink: Sink) -> None:
        """Take over entries other consumers left unacknowledged for ``claim_idle``."""
        idle_ms = int(self.settings.claim_idle * 1000)
        for stream in self.settings.streams:
            cursor: bytes | str = "0-0"
            while True:
                free = sink.free()
                if free <= 0:
                    return
                answer: Any = await client.xautoclaim(
                    stream,
                    self._group,
                    self._consumer,
                    idle_ms,
                    start_id=cursor,
                    count=min(free, self.settings.read_count),
                )
                cursor, entries = answer[0], answer[1]
                if entries:
                    taken = await self._put(sink, [(stream, entries)], skip_held=True)
                    logger.info(
                        "redis %s: group %s: took over %d entries of stream %s idle for %.0fs",
                        self._address,
                        self._group,
                        taken,
                        stream,
                        self.settings.claim_idle,
                    )
                if cursor in (b"0-0", "0-0"):
                    break

    async def _read_metrics(self, client: aioredis.Redis) -> None:
        for stream in self.settings.streams:
            groups: Any = await client.xinfo_groups(stream)
            for info in groups:
                name = info.get("name")
                if isinstance(name, bytes):
                    name = name.decode()
                if name != self._group:
                    continue
                self._unacked[stream] = int(info.get("pending") or 0)
                lag = info.get("lag")
                if lag is not None:
                    self._lag[stream] = int(lag)
