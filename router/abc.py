"""The plug-in surface: every contract a source, invoker, destination or store implements.

Data flow (docs/architecture.md draws it with the module names)::

    Source.run(sink) -> sink.put(records) -> filter -> lane -> batcher -> dispatcher
        -> Invoker.invoke(invocation) -> InvokeResult -> retry / bisect / Destination.send
        -> Source.ack(records)

Lanes: records with equal ``Record.lane`` are dispatched one batch at a time, in order. For
QUEUE sources a lane of ``None`` means "no order" (SQS standard): such records are batched
together and several batches run at once, up to the mapping's concurrency. For an ordered
QUEUE lane (an SQS FIFO message group) a failure also releases the records queued behind it
in that lane, so nothing overtakes a message that is going back to the queue.

"Ack" means: the source may forget these records. A stream commits the offset past them, a
queue deletes them, a folder remembers the file as processed. The core acks a record only
after it was delivered (the function succeeded), filtered out, or handed to a destination.
For one lane, acks arrive in record order. Nothing else acknowledges.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Collection, Hashable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from router.backoff import LambdaAsyncRetry
from router.filters.view import View, record_view
from router.models import (
    DeletedMapping,
    FailedEvent,
    FunctionConfig,
    Invocation,
    InvokeResult,
    MappingConfig,
    MappingRow,
    PluginSettings,
    QueueDepth,
    QueuedEvent,
    Record,
    SourceKind,
    StatsDelta,
    StatusUpdate,
)

if TYPE_CHECKING:
    from router.ingress import Ingress
    from router.supervisor import Supervisor


@dataclass(frozen=True, slots=True, kw_only=True)
class SourceTraits:
    """AWS defaults and limits of a source type, as AWS documents them for event source
    mappings (https://docs.aws.amazon.com/lambda/latest/api/API_CreateEventSourceMapping.html)
    and asynchronous invocation. A rule these cannot say is the source's
    :meth:`Source.validate_mapping`."""

    kind: SourceKind
    filter_view: View = record_view
    """What filter patterns see of one record, given the record as it appears in the Lambda
    event (an SQS record with its ``body`` decoded, say); the building blocks are in
    :mod:`router.filters.view`. Default: the record itself."""
    batch_size_default: int
    batch_size_max: int
    window_default: float = 0.0
    window_max: float = 300.0
    starting_positions: tuple[str, ...] = ()
    starting_position_default: str | None = None
    retry_default: int = -1
    retry_min: int = -1
    retry_max: int = 10_000
    record_age_default: float = -1
    record_age_min: float = 60
    record_age_max: float = 604_800
    retry_cap_with_destination: int | None = None
    """Retries applied instead of "infinite" (-1) when an on-failure destination is set
    (Lambda does this for Kafka: 10)."""
    supports: frozenset[str] = frozenset()
    """Optional mapping fields that apply to this source, e.g. ``bisect_batch_on_function_error``,
    ``parallelization_factor``, ``maximum_concurrency``, ``function_response_types``,
    ``maximum_retry_attempts``, ``maximum_record_age``, ``destination_config``."""


class Sink(Protocol):
    """Where a source puts what it reads. Implemented by the core's pipeline."""

    async def put(self, records: Sequence[Record]) -> None:
        """Filter and queue ``records`` (in lane order). Waits while the mapping already holds
        as many records as it may (backpressure); never drops."""

    def free(self) -> int:
        """How many more records the mapping can take now without waiting."""

    async def wait_for_room(self) -> None:
        """Wait until ``free()`` is positive. A source that must re-check something right
        before ``put`` (a Kafka partition still being assigned) waits here, before it fetches,
        so that ``put`` itself never waits."""

    async def revoke(self, lanes: Collection[Hashable], timeout: float) -> None:
        """The source is giving up ``lanes`` (Kafka rebalance, lost shard lease). Waits up to
        ``timeout`` for in-flight batches of those lanes to be delivered and acked; queued
        records of those lanes that were not yet dispatched are dropped without ack (the next
        owner reads them again)."""

    def report(self, result: str) -> None:
        """Set the mapping's ``last_processing_result`` (e.g. ``PROBLEM: broker unreachable``)."""

    async def reject(self, item: Mapping[str, Any], reason: str) -> None:
        """Something the source read cannot become a record (a file whose name is not valid
        UTF-8, say). The router logs it at WARNING, counts it (``router_records_rejected_total``)
        and, if the mapping has an on-failure destination, hands it ``item`` (a JSON-able
        description: where it is, what it is) with ``reason``, waiting while that destination
        is down. The source then skips the item: it never blocks what comes after it."""

    supervisor: Supervisor
    """The mapping's supervisor: ``await sink.supervisor.retry(what, operation)`` retries one
    store or broker call in place, showing ``what`` failed; ``working()`` says the source runs
    (again) after a failure."""


class Plugin:
    """What every plug-in class (source, invoker, destination) declares besides its contract."""

    Settings: ClassVar[type[PluginSettings]]
    """The model its settings are validated with (in YAML, the keys beside ``type:``)."""
    requires: ClassVar[Mapping[str, str]] = {}
    """The client libraries it runs on and the pip extra of each (``{"aiokafka": "kafka"}``),
    imported where it runs: the class, its ``Settings`` and traits import without them."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SourceContext:
    """What a source gets from the router besides its own settings."""

    mapping: MappingConfig
    store: Store
    replica_id: str
    """Identifies this router process (leases, logs)."""
    function_arn: str = ""
    ingress: Ingress | None = None
    """The ingress listener (and what it feeds) when ``router.ingress`` is configured: what
    pushed sources (:class:`router.ingress.source.PushedSource`) register with."""


class Source(Plugin, ABC):
    """Reads records from one place for one mapping.

    Lifecycle: constructed with validated settings, then ``run(sink)`` is started as a task
    under the mapping's supervisor (:mod:`router.supervisor`). ``run`` reads until cancelled;
    every task it needs (watchers, lease keepers, pollers) runs inside it, e.g. in a
    ``TaskGroup``. When ``run`` raises, the supervisor reports the cause (an ExceptionGroup
    by the exceptions inside it), waits with backoff and calls ``run`` again on the same
    instance: for an outage (:class:`router.errors.SourceError`, ``StoreError``, ``OSError``,
    a lost lease) and for an unexpected exception alike. Only a configuration error (a
    ``RouterError`` that is not retriable and not a ``PlatformError``) stops the mapping.
    ``aclose`` is called once after ``run`` has ended for good; it is idempotent.
    """

    traits: ClassVar[SourceTraits]

    def __init__(self, settings: Any, context: SourceContext) -> None:
        self.settings = settings
        self.context = context

    @classmethod
    def traits_for(cls, settings: Any) -> SourceTraits:
        """Traits for these settings (e.g. an SQS FIFO queue has other limits than a standard
        one). Defaults to the class's ``traits``."""
        return cls.traits

    @abstractmethod
    async def run(self, sink: Sink) -> None:
        """Read records and ``await sink.put(...)`` them until cancelled."""

    @abstractmethod
    def build_event(self, records: Sequence[Record]) -> dict[str, Any]:
        """Wrap a batch (all from one lane, in order) in the AWS event the function receives."""

    @abstractmethod
    async def ack(self, records: Sequence[Record]) -> None:
        """Forget these records: commit, delete, remember as processed. For one lane calls
        come in record order. May raise SourceError; the core retries with backoff."""

    async def release(self, records: Sequence[Record]) -> None:
        """Queue sources: leave these records for redelivery (failed, not handed off).
        Streams and asynchronous sources never get this call."""

    async def attempted(self, record: Record, retry_at: float | None) -> None:
        """Asynchronous sources: an invocation of ``record`` ended in a function error;
        ``record.attempts`` counts them now, ``retry_at`` (epoch seconds) is when it is
        tried again (None: not again). A source that keeps records durably remembers both,
        so that a restart neither resets the retries nor skips the backoff. Must not raise
        (a failure to remember is logged)."""

    def async_retry(self) -> LambdaAsyncRetry | None:
        """Asynchronous sources: Lambda's retry timing, if their events are retried with it
        (the durable queue's Invoke and SNS events), rather than with the router's
        exponential backoff. Defaults to None."""
        return None

    def invocation_fields(self, records: Sequence[Record]) -> Mapping[str, str]:
        """Fields of the :class:`~router.models.Invocation` of ``records`` besides the
        event: ``request_id`` (kept across retries; default: a fresh one per attempt),
        ``client_context``, ``trace_id``. The asynchronous Invoke API passes the caller's
        here. Defaults to none."""
        return {}

    def check_response(self, records: Sequence[Record], response: Any) -> str | None:
        """What is wrong with the answer of an invocation of ``records`` that succeeded (the
        invocation then counts as a function error), or None. A stream with a tumbling
        window keeps the ``state`` the function returned here. Defaults to None."""
        return None

    def identifiers(self, records: Sequence[Record]) -> list[str]:
        """The ``itemIdentifier`` of each record, in order. Defaults to ``Record.identifier``;
        a source that builds identifiers only when a function answers with
        ``batchItemFailures`` overrides this."""
        return [r.identifier for r in records]

    def filter_viewer(self, fields: frozenset[str] | None) -> Callable[[Record], Any]:
        """A function giving what filter patterns see for a record. Defaults to
        ``traits.filter_view`` of ``Record.data``.

        ``fields`` are the top-level keys the mapping's patterns name (None: any key). A
        pattern only looks at the keys it names, so a source may leave the others out of the
        view, and skip decoding them."""
        view_of = self.traits_for(self.settings).filter_view

        def view(record: Record) -> Any:
            return view_of(record.data)

        return view

    def filter_payload(self) -> tuple[str, Callable[[Record], object]] | None:
        """The top-level key of the filter view that is decoded from a record's raw bytes
        (Kafka ``value``), and a function giving a record's bytes for it; None (the default)
        when there is none. When every pattern needs a string under that key, the pipeline
        drops a record whose bytes hold none of them without building its view (see
        :mod:`router.filters.raw`). The function may give anything but bytes for a record
        whose view must be built (a null value)."""
        return None

    @classmethod
    def validate_mapping(cls, mapping: MappingConfig) -> Sequence[MappingProblem]:
        """This source type's rules on a mapping that its traits cannot say: one setting's
        limit that depends on another (SQS takes a ``batch_size`` above 10 only with a
        ``maximum_batching_window`` of at least 1 second). Called for every mapping of the
        type, from YAML and from a stored row, with every setting checked against the traits
        and defaults applied; a mapping with problems is not applied. Must not do I/O.
        Defaults to none."""
        return ()

    def batch_info(self, records: Sequence[Record]) -> dict[str, Any]:
        """The ``*BatchInfo`` part of a stream's on-failure destination record
        (``KafkaBatchInfo``, ``KinesisBatchInfo``...), as ``{"KafkaBatchInfo": {...}}``."""
        return {}

    def metrics(self) -> Sequence[MetricFamily]:
        """The source's own metrics (queue depth, lag, pending counts), each sample labelled
        with the mapping. Called for every ``/metrics`` request; must not block or do I/O
        (report what was last read). None by default."""
        return ()

    async def aclose(self) -> None:
        """Release connections. Idempotent."""


@dataclass(frozen=True, slots=True, kw_only=True)
class MappingProblem:
    """Something wrong with a mapping that only its source type knows, found by
    :meth:`Source.validate_mapping`."""

    setting: str
    """The mapping setting it is reported at, by its key (``batch_size``); the error names
    the spelling the configuration used (``BatchSize``)."""
    message: str
    """What is wrong and how to fix it."""


@dataclass(frozen=True, slots=True)
class SettingsProblem:
    """Something wrong with a plug-in's settings that their shape does not show, found by
    the plug-in's ``check`` hook (a handler that does not import, settings every call would
    fail with)."""

    path: tuple[str | int, ...]
    """Keys under the plug-in's block, e.g. ``("handler",)`` or ``("headers",
    "Authorization")``; ``()`` for the block itself."""
    message: str
    """What is wrong and how to fix it; never the value of a secret."""


@dataclass(frozen=True, slots=True, kw_only=True)
class MetricFamily:
    """One Prometheus metric family a plug-in exposes on ``/metrics``."""

    name: str
    type: str
    """``counter``, ``gauge`` or ``histogram``."""
    help: str
    samples: Sequence[tuple[str, Mapping[str, str], float]] = ()
    """``(sample name, labels, value)``; a histogram's samples are its ``_bucket`` (with an
    ``le`` label), ``_sum`` and ``_count``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class InvokerContext:
    store: Store
    report_init_error: Callable[[str], None]
    """Invokers that host runtimes report init errors here (shown in last_processing_result)."""


class Invoker(Plugin, ABC):
    """Calls one function. ``invoke`` classifies every ending into an :class:`InvokeResult`
    (function error, throttle, timeout, transport error) instead of raising; it enforces
    ``invocation.deadline``. ``start`` is awaited before the first invoke (servers bind
    there); ``aclose`` is idempotent."""

    settings: Any
    """``function.settings``, checked to be an instance of ``Settings``; subclasses narrow
    the annotation."""

    def __init__(self, function: FunctionConfig, context: InvokerContext) -> None:
        if not isinstance(function.settings, self.Settings):
            raise TypeError(
                f"{type(self).__name__} needs {self.Settings.__name__} settings, "
                f"got {type(function.settings).__name__}"
            )
        self.function = function
        self.context = context
        self.settings = function.settings

    @classmethod
    def check(cls, function: FunctionConfig) -> list[SettingsProblem]:
        """Problems with ``function`` that validating its settings' shape cannot find: a
        handler that does not import, settings the client library refuses on every call.
        ``router validate`` reports them, and ``router run`` (at start and when the YAML
        changes) applies nothing while there are any. Must not open connections or bind
        ports: the function may be running already. Defaults to none."""
        return []

    async def start(self) -> None:
        """Open connections or listeners."""

    @abstractmethod
    async def invoke(self, invocation: Invocation) -> InvokeResult:
        """Call the function once."""

    async def aclose(self) -> None:
        """Close connections or listeners. Idempotent."""

    def metrics(self) -> Sequence[MetricFamily]:
        """The invoker's own metrics (execution environments, cold starts, durations), each
        sample labelled with the function. Called for every ``/metrics`` request; must not
        block. None by default."""
        return ()


@dataclass(frozen=True, slots=True, kw_only=True)
class DestinationContext:
    store: Store
    mapping_uuid: str
    mapping_name: str
    function_name: str


class Destination(Plugin, ABC):
    """Receives on-failure / on-success records (AWS destination formats, original records
    included). ``send`` returns once the record is durably accepted; it raises
    :class:`router.errors.DestinationError` otherwise, and the lane blocks and retries:
    a record is never dropped."""

    def __init__(self, settings: Any, context: DestinationContext) -> None:
        self.settings = settings
        self.context = context

    @abstractmethod
    async def send(self, record: Mapping[str, Any]) -> None:
        """Deliver one destination record."""

    async def aclose(self) -> None:
        """Release connections. Idempotent."""


class Store(Protocol):
    """The SQL store (SQLite embedded, PostgreSQL shared by replicas).

    Every method may raise :class:`router.errors.StoreError`; ``retriable`` on it tells
    whether the failure is temporary (connection lost) or not.
    """

    url: str

    async def start(self) -> None:
        """Connect and check the schema; raises SchemaOutdatedError naming
        ``router db upgrade`` when the schema is older than this code."""

    async def aclose(self) -> None: ...

    def exclusive(self, action: str) -> AbstractAsyncContextManager[None]:
        """Every call the calling task makes on the store inside the block is one
        transaction, under a lock held across every process on the store (applying the
        YAML: replicas take turns)."""
        ...

    # mappings
    async def list_mappings(self) -> list[MappingRow]: ...
    async def get_mapping(self, uuid: str) -> MappingRow | None: ...
    async def get_mappings(self, uuids: Collection[str]) -> list[MappingRow]:
        """The rows among ``uuids`` that exist (one query)."""

    async def get_mapping_by_name(self, name: str) -> MappingRow | None: ...
    async def create_mapping(self, row: MappingRow) -> None: ...
    async def create_mappings(self, rows: Collection[MappingRow]) -> None:
        """``create_mapping`` of many rows, as one transaction."""

    async def update_mapping(self, row: MappingRow) -> None:
        """Write every configuration column of ``row`` (not state / results)."""

    async def delete_mapping(self, uuid: str) -> None:
        """Delete the mapping with its checkpoints and stats."""

    async def retire_mapping(self, uuid: str) -> None:
        """Delete the mapping, keeping its checkpoints and stats under its uuid and its
        name in ``deleted_mappings``: ``create_mapping`` of a row with that uuid takes them
        back; of a row with that name and another uuid, drops them."""

    async def list_deleted_mappings(self) -> list[DeletedMapping]: ...
    async def purge_deleted_mappings(self, before: datetime) -> list[str]:
        """Forget mappings retired before ``before`` (checkpoints and stats too); their
        names."""

    async def set_mapping_status(
        self,
        uuid: str,
        *,
        state: str | None = None,
        reason: str | None = None,
        last_result: str | None = None,
    ) -> None: ...
    async def set_mapping_statuses(self, statuses: Mapping[str, StatusUpdate]) -> None:
        """Many status writes as one transaction."""

    async def set_enabled(self, uuid: str, enabled: bool) -> None: ...
    async def put_lag(
        self, mapping_uuid: str, replica_id: str, lag: float | None, unit: str = ""
    ) -> None: ...

    # checkpoints and cursors: opaque strings per (mapping, key)
    async def get_checkpoints(self, mapping_uuid: str) -> dict[str, str]: ...
    async def put_checkpoints(self, mapping_uuid: str, values: Mapping[str, str]) -> None: ...
    async def delete_checkpoints(self, mapping_uuid: str, keys: Collection[str]) -> None: ...
    async def checkpoint_owners(self, uuids: Collection[str], prefix: str) -> set[str]:
        """Which of ``uuids`` have a checkpoint key starting with ``prefix``."""

    # schedules: exactly one fire per (schedule, scheduled time) across replicas
    async def claim_fire(
        self,
        schedule_key: str,
        scheduled_time: datetime,
        owner: str,
        *,
        pending: Mapping[str, str] | None = None,
    ) -> bool:
        """Insert the fire row; True for the one owner whose insert won, also when that owner
        asks again (a retry after the answer to its insert was lost). When it wins, the
        checkpoints ``pending`` of mapping ``schedule_key`` are written in the same
        transaction: a claim is never stored without them."""

    async def last_fire(self, schedule_key: str) -> datetime | None: ...

    async def claim_fires(
        self, claims: Sequence[tuple[str, datetime, Mapping[str, str]]], owner: str
    ) -> set[tuple[str, datetime]]:
        """:meth:`claim_fire` of many (schedule key, scheduled time, pending checkpoints) in
        one transaction; the (key, UTC time) pairs ``owner`` won."""

    async def last_fires(self, schedule_keys: Collection[str]) -> dict[str, datetime]:
        """:meth:`last_fire` of many schedules in one query (those never fired left out)."""

    async def get_checkpoints_many(
        self, mapping_uuids: Collection[str]
    ) -> dict[str, dict[str, str]]:
        """:meth:`get_checkpoints` of many mappings (those without any left out)."""

    async def checkpoints_with_prefix(self, prefix: str) -> list[tuple[str, str, str]]:
        """Every (mapping, key, value) checkpoint whose key starts with ``prefix``."""

    async def update_checkpoints(
        self,
        put: Mapping[str, Mapping[str, str]],
        delete: Mapping[str, Collection[str]] | None = None,
    ) -> None:
        """Write ``put`` and delete ``delete`` (keys by mapping) in one transaction."""

    # leases (shards, bucket cursors shared by replicas)
    async def acquire_lease(self, key: str, owner: str, ttl: float) -> bool:
        """Take or renew ``key`` for ``owner`` until now + ttl; False if another owner holds
        an unexpired lease."""

    async def release_lease(self, key: str, owner: str) -> None: ...

    # stats and failed events
    async def add_stats(self, mapping_uuid: str, delta: StatsDelta) -> None: ...
    async def add_stats_many(self, deltas: Mapping[str, StatsDelta]) -> None:
        """``add_stats`` of many mappings as one transaction."""

    async def get_stats(self, mapping_uuid: str) -> dict[str, Any]: ...
    async def add_failed_event(self, event: FailedEvent) -> int: ...
    async def list_failed_events(
        self, *, mapping_uuid: str | None = None, include_replayed: bool = False
    ) -> list[FailedEvent]: ...
    async def mark_replayed(self, ids: Collection[int]) -> None: ...

    # the asynchronous-invocation queue (router.ingress.queue): events accepted and not yet
    # delivered, each claimed by one replica at a time
    async def enqueue_events(self, events: Sequence[QueuedEvent]) -> None:
        """Insert ``events`` (unclaimed) in one transaction; durable when this returns."""

    async def claim_events(
        self, target: str, owner: str, limit: int, lease: float
    ) -> list[QueuedEvent]:
        """Lease up to ``limit`` events of ``target`` that no replica holds (never claimed,
        released, or lease expired) and whose ``retry_at`` has come to ``owner`` for
        ``lease`` seconds, oldest first; each claim adds one to ``deliveries``. Replicas
        claiming at once never get the same event (PostgreSQL: ``FOR UPDATE SKIP
        LOCKED``)."""

    async def renew_events(self, ids: Collection[str], owner: str, lease: float) -> set[str]:
        """Extend ``owner``'s leases on ``ids`` to now + ``lease``; returns the ids it still
        held (an event missing from the answer was deleted or taken over)."""

    async def release_events(self, ids: Collection[str] | None, owner: str) -> int:
        """Give up ``owner``'s leases on ``ids`` (None: on every event it holds): any
        replica may claim them at once. Returns how many it held."""

    async def delete_events(self, ids: Collection[str]) -> None:
        """Forget delivered events (whoever holds them)."""

    async def record_attempt(
        self, event_id: str, owner: str, attempts: int, retry_at: datetime | None
    ) -> bool:
        """``owner``'s event ``event_id`` met a function error: set its ``attempts`` and the
        earliest time it may be claimed again (``retry_at``). False if ``owner`` does not
        hold it (deleted, or taken over)."""

    async def queue_depths(self) -> list[QueueDepth]:
        """Per target with events waiting: how many, and the oldest ``enqueued_at``."""

    async def list_events(
        self, *, target: str | None = None, limit: int = 100
    ) -> list[QueuedEvent]:
        """Waiting events (all targets, or one), oldest first."""

    async def purge_events(self, *, target: str | None = None) -> int:
        """Delete waiting events (all, or one target's), claimed or not; how many went."""

    def changes(self) -> AsyncIterator[set[str]]:
        """Yields sets of mapping uuids whose rows (or checkpoints) changed outside this
        process: PostgreSQL LISTEN/NOTIFY fired by triggers, SQLite polling. An empty set
        means "something changed, reload all"."""
        ...
