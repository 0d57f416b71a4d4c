"""Values that flow through the router: records, invocations, outcomes, mapping settings.

Settings are frozen dataclasses built by :mod:`router.config` from validated YAML or from a
row of the ``event_source_mappings`` table. Records are the hot-path object: slotted and
mutable only in ``attempts``.
"""

from __future__ import annotations

import dataclasses
import enum
import os
from collections.abc import Hashable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypedDict

from pydantic import BaseModel

ACCOUNT_ID = "123456789012"
"""The default of ``router.account_id``: the account of the ARNs the router makes up
(function ARNs, and the events' ARNs a source has no real account for), the one AWS's
documented sample events and moto use, so that an event's ARNs and the function's ARN name
the same account."""

_ACCOUNT: ContextVar[str] = ContextVar("router_account_id", default=ACCOUNT_ID)


def current_account() -> str:
    """The account the configuration being loaded declares (``router.account_id``); the
    plug-ins' ``account`` settings default to it."""
    return _ACCOUNT.get()


@contextmanager
def account_scope(account: str) -> Iterator[None]:
    """Load functions and mappings with ``account`` as :func:`current_account`."""
    token = _ACCOUNT.set(account)
    try:
        yield
    finally:
        _ACCOUNT.reset(token)


MAX_PAYLOAD_BYTES = 6 * 1024 * 1024
"""Lambda's synchronous invocation payload limit; a batch is sent before it grows past this."""


class SourceKind(enum.StrEnum):
    """How a source is retried and acknowledged (docs/failure-handling.md)."""

    STREAM = "stream"
    """Ordered per lane (Kafka partition, shard): retry / bisect in place, checkpoint in order."""
    QUEUE = "queue"
    """SQS-like: failed messages are left on the queue, which redelivers them."""
    ASYNC = "async"
    """Asynchronous invocation (S3, directory, schedule): one event per invoke, 2 retries."""


class Outcome(enum.StrEnum):
    """What an invocation came to."""

    SUCCESS = "success"
    FUNCTION_ERROR = "function_error"
    THROTTLED = "throttled"
    TIMEOUT = "timeout"
    TRANSPORT_ERROR = "transport_error"


class MappingState(enum.StrEnum):
    CREATING = "Creating"
    ENABLING = "Enabling"
    ENABLED = "Enabled"
    DISABLING = "Disabling"
    DISABLED = "Disabled"
    UPDATING = "Updating"
    DELETING = "Deleting"


class Origin(enum.StrEnum):
    YAML = "yaml"
    SQL = "sql"


@dataclass(slots=True)
class Record:
    """One record read from a source.

    ``data`` is the source's form of the record: usually the record exactly as it goes into
    the AWS event (an SQS record, an S3 event record, a whole Scheduled Event); a source may
    keep what it read instead (Kafka keeps the client's message and builds the Lambda record
    only when a batch is invoked). Only the source's ``build_event``, ``batch_info``,
    ``identifiers`` and ``filter_viewer`` look inside it. ``position`` is opaque to the core
    and handed back in ``ack``.
    """

    lane: Hashable
    """Records with equal lanes are delivered in order, one batch at a time."""
    position: Any
    """The source's acknowledgement token (offset, receipt handle, file key, fire time)."""
    data: Any
    identifier: str
    """The ``itemIdentifier`` a function uses in ``batchItemFailures`` for this record (see
    ``Source.identifiers``)."""
    size: int
    """Approximate size of ``data`` serialised, in bytes (for the 6 MB batch limit)."""
    arrival: float
    """Epoch seconds at which the record entered the source (for maximum record age)."""
    attempts: int = 0
    """Function-error invocations spent on this record so far."""
    unfiltered: bool = False
    """Invoked whatever the filter patterns say (the final invocation of a stream's tumbling
    window, which carries no record)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Invocation:
    """One call of a function."""

    function: str
    event: Any
    request_id: str
    deadline: float
    """Epoch seconds by which the function must answer (timeout enforced by the invoker).
    An invoker that queues invocations for runtimes (``runtime-api``) does not use it: as on
    Lambda, the function's timeout starts when a runtime takes the invocation."""
    invoked_function_arn: str = ""
    trace_id: str = ""
    """The X-Ray trace header (``Root=1-...;Parent=...;Sampled=1``, what the Invoke API
    receives as ``X-Amzn-Trace-Id``); runtimes get it as ``Lambda-Runtime-Trace-Id``."""
    client_context: str = ""
    """The client context as JSON text: the Invoke API's ``X-Amz-Client-Context`` header,
    base64-decoded (AWS allows 3,583 bytes before encoding). Runtimes get it as
    ``Lambda-Runtime-Client-Context``; handlers see it as ``context.client_context``."""
    cognito_identity_id: str = ""
    """The caller's Amazon Cognito identity, when it has one; with
    ``cognito_identity_pool_id`` runtimes get it as ``Lambda-Runtime-Cognito-Identity``
    (``context.identity`` in a handler)."""
    cognito_identity_pool_id: str = ""
    backlog: bool = False
    """The mapping holds at least another full batch for the same lane behind this one: the
    function is fed as fast as it answers, so an invoker may answer without a trip through
    the event loop (the ``python`` invoker's ``quick_wait_ms``) and delay no record."""


@dataclass(frozen=True, slots=True, kw_only=True)
class InvokeResult:
    """How an invocation ended. Invokers classify; they do not raise for these."""

    outcome: Outcome
    payload: Any = None
    """Decoded response: the function's return value, or the error object
    ``{"errorMessage", "errorType", "stackTrace"}`` for a function error."""
    status_code: int = 200
    function_error: str | None = None
    """``Unhandled`` or ``Handled`` for a function error, as the Invoke API reports it."""
    retry_after: float | None = None
    executed_version: str = "$LATEST"
    detail: str = ""
    """A short human-readable reason, for logs and ``last_processing_result``."""


class PluginSettings(BaseModel):
    """Base of the settings model of every source, invoker and destination.

    Subclasses set ``model_config = ConfigDict(extra="forbid", frozen=True)``; they are the
    validated, immutable form of the YAML block that configures the plug-in.
    """

    model_config = {"extra": "forbid", "frozen": True}


@dataclass(frozen=True, slots=True, kw_only=True)
class SourceSpec:
    type: str
    settings: PluginSettings


@dataclass(frozen=True, slots=True, kw_only=True)
class DestinationSpec:
    type: str
    settings: PluginSettings
    target: str = field(default="", repr=False)
    """What the user wrote (an ARN, a URL, ``table``), for messages and diffs; kept out of
    ``repr`` (a URL in it may hold a password where plaintext secrets are allowed)."""


ASYNC_RETRIES_DEFAULT = 2
ASYNC_RETRIES_MAX = 2
ASYNC_EVENT_AGE_DEFAULT = 21600
ASYNC_EVENT_AGE_MIN = 60
ASYNC_EVENT_AGE_MAX = 21600
"""Lambda's asynchronous invocation: 0-2 retries (2), maximum event age 60 s-6 h (6 h)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class EventInvokeConfig:
    """How a function's asynchronous Invoke calls (``InvocationType=Event``) are delivered:
    Lambda's ``PutFunctionEventInvokeConfig``, declared as ``event_invoke_config`` under the
    function."""

    maximum_retry_attempts: int = ASYNC_RETRIES_DEFAULT
    maximum_event_age: int = ASYNC_EVENT_AGE_DEFAULT
    """Seconds."""
    on_success: DestinationSpec | None = None
    on_failure: DestinationSpec | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class FunctionConfig:
    """A function the router can invoke, as declared under ``functions:``."""

    name: str
    invoker: str
    timeout: float = 3.0
    settings: PluginSettings
    arn: str = ""
    event_invoke: EventInvokeConfig = EventInvokeConfig()
    """Its asynchronous invocation settings (Lambda's defaults unless configured)."""
    account_id: str = ACCOUNT_ID
    """``router.account_id``: the account of its ARN when ``arn`` is not given."""

    @property
    def invoked_arn(self) -> str:
        """The ARN it is invoked as (``invokedFunctionArn``)."""
        return function_arn(self.name, self.arn, self.account_id)


class Column(enum.StrEnum):
    """How a mapping setting is stored: the type of its column in ``event_source_mappings``
    (:mod:`router.store.tables` gives each its SQL type)."""

    INTEGER = "integer"
    FLOAT = "float"
    BOOLEAN = "boolean"
    KEYWORD = "keyword"
    """A short string (at most 32 characters), e.g. ``TRIM_HORIZON``."""
    TIMESTAMP = "timestamp"
    JSON = "json"


@dataclass(frozen=True, slots=True, kw_only=True)
class MappingField:
    """One setting of a mapping, as :class:`MappingConfig` declares it with :func:`setting`.

    ``key`` is the setting's YAML key and the name of its column; what YAML accepts for it,
    how it is checked against the source type and how it is stored is its rule in
    :mod:`router.config.rules`."""

    key: str
    aliases: tuple[str, ...]
    """Its AWS CloudFormation / API spellings, accepted in YAML (``BatchSize``)."""
    column: Column
    doc: str
    """A description, for the JSON Schema of the YAML."""
    attributes: tuple[str, ...]
    """The :class:`MappingConfig` attributes its value becomes (usually one, named as the
    key)."""


_SETTING = "router.setting"


def setting(
    default: Any,
    *aliases: str,
    column: Column | None = None,
    key: str = "",
    doc: str = "",
) -> Any:
    """Declare an attribute of :class:`MappingConfig` as a mapping setting: a YAML key
    (the attribute's name unless ``key`` says otherwise) written as it or as one of the AWS
    ``aliases``, stored in a column of type ``column``. An attribute that only repeats the
    ``key`` of an earlier one (no column) takes its value from that same key."""
    declared = {"key": key, "aliases": aliases, "column": column, "doc": doc}
    return field(default=default, metadata={_SETTING: declared})


@dataclass(frozen=True, slots=True, kw_only=True)
class MappingConfig:
    """One event source mapping, with every default already applied for its source type.

    This class declares the mapping's settings: each attribute made with :func:`setting` is
    a YAML key (with its AWS spellings) and a column of ``event_source_mappings``. The store's
    table, the rows the store reads and writes, the row conversion and the YAML model are
    derived from these declarations (:data:`MAPPING_FIELDS`). A new setting is one attribute
    here, its rule in :mod:`router.config.rules`, and a migration that adds its column.
    """

    name: str
    function: str
    source: SourceSpec
    uuid: str = ""
    enabled: bool = True
    batch_size: int = setting(10, "BatchSize", column=Column.INTEGER)
    maximum_batching_window: float = setting(
        0.0, "MaximumBatchingWindowInSeconds", column=Column.FLOAT
    )
    starting_position: str | None = setting(None, "StartingPosition", column=Column.KEYWORD)
    starting_position_timestamp: datetime | None = setting(
        None,
        "StartingPositionTimestamp",
        column=Column.TIMESTAMP,
        doc="ISO 8601 (UTC if no offset) or epoch seconds",
    )
    filter_patterns: tuple[str, ...] = setting(
        (), "FilterCriteria", key="filter_criteria", column=Column.JSON
    )
    """Each pattern as a JSON string; ORed."""
    maximum_retry_attempts: int = setting(-1, "MaximumRetryAttempts", column=Column.INTEGER)
    """-1 retries until the record expires."""
    maximum_record_age: float = setting(
        -1,
        "MaximumRecordAgeInSeconds",
        "MaximumEventAgeInSeconds",
        "maximum_event_age",
        column=Column.FLOAT,
    )
    """Seconds; -1 = no limit."""
    bisect_batch_on_function_error: bool = setting(
        False, "BisectBatchOnFunctionError", column=Column.BOOLEAN
    )
    report_batch_item_failures: bool = setting(
        False, "FunctionResponseTypes", key="function_response_types", column=Column.JSON
    )
    parallelization_factor: int = setting(1, "ParallelizationFactor", column=Column.INTEGER)
    tumbling_window: int = setting(0, "TumblingWindowInSeconds", column=Column.INTEGER)
    """Seconds; 0 = no window (streams only)."""
    maximum_concurrency: int | None = setting(None, column=Column.INTEGER)
    on_failure: DestinationSpec | None = setting(
        None, "DestinationConfig", key="destination_config", column=Column.JSON
    )
    on_success: DestinationSpec | None = setting(None, key="destination_config")
    origin: str = Origin.YAML


def _mapping_fields() -> tuple[MappingField, ...]:
    declared: dict[str, dict[str, Any]] = {}
    for attribute in dataclasses.fields(MappingConfig):
        if _SETTING not in attribute.metadata:
            continue
        spec = attribute.metadata[_SETTING]
        key = spec["key"] or attribute.name
        if key in declared:
            if spec["column"] is not None or spec["aliases"]:
                raise TypeError(f"MappingConfig.{attribute.name}: {key!r} is declared already")
            declared[key]["attributes"] += (attribute.name,)
            continue
        if spec["column"] is None:
            raise TypeError(f"MappingConfig.{attribute.name}: a setting needs its column type")
        declared[key] = {**spec, "key": key, "attributes": (attribute.name,)}
    return tuple(MappingField(**values) for values in declared.values())


MAPPING_FIELDS: tuple[MappingField, ...] = _mapping_fields()
"""Every setting of a mapping, in the order of the configuration reference."""

SETTING_COLUMNS: tuple[str, ...] = tuple(f.key for f in MAPPING_FIELDS)
"""The columns of ``event_source_mappings`` that hold one setting each."""
_SETTING_KEYS = frozenset(SETTING_COLUMNS)


@dataclass(slots=True, init=False)
class MappingRow:
    """A row of ``event_source_mappings`` as the store reads and writes it.

    Besides the identity and status columns below, a row has one column per setting
    (:data:`SETTING_COLUMNS`), given as keywords and read and set as attributes
    (``row.batch_size``); NULL (None) means "the source type's default". ``source_config``,
    ``filter_criteria`` and ``destination_config`` hold JSON as stored;
    :func:`router.config.mapping_from_row` validates a row into a :class:`MappingConfig`.
    """

    uuid: str
    name: str
    function_name: str
    source_type: str
    source_config: dict[str, Any]
    enabled: bool
    settings: dict[str, Any]
    """The setting columns, by name (every one present)."""
    state: str
    state_transition_reason: str
    last_processing_result: str
    origin: str
    config_hash: str
    created_at: datetime | None
    updated_at: datetime | None

    def __init__(
        self,
        *,
        uuid: str,
        name: str,
        function_name: str,
        source_type: str,
        source_config: dict[str, Any],
        enabled: bool = True,
        state: str = MappingState.CREATING,
        state_transition_reason: str = "",
        last_processing_result: str = "No records processed",
        origin: str = Origin.YAML,
        config_hash: str = "",
        created_at: datetime | None = None,
        updated_at: datetime | None = None,
        **settings: Any,
    ) -> None:
        unknown = set(settings) - _SETTING_KEYS
        if unknown:
            raise TypeError(f"MappingRow has no column {', '.join(sorted(unknown))}")
        self.uuid = uuid
        self.name = name
        self.function_name = function_name
        self.source_type = source_type
        self.source_config = source_config
        self.enabled = enabled
        self.settings = {key: settings.get(key) for key in SETTING_COLUMNS}
        self.state = state
        self.state_transition_reason = state_transition_reason
        self.last_processing_result = last_processing_result
        self.origin = origin
        self.config_hash = config_hash
        self.created_at = created_at
        self.updated_at = updated_at

    def __getattr__(self, name: str) -> Any:
        # Only called for names that are not attributes: the setting columns.
        if name in _SETTING_KEYS:
            return self.settings[name]
        raise AttributeError(f"MappingRow has no column {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _SETTING_KEYS:
            self.settings[name] = value
        else:
            object.__setattr__(self, name, value)

    def columns(self) -> dict[str, Any]:
        """Every column by name, in the table's order."""
        out: dict[str, Any] = {}
        for attribute in dataclasses.fields(self):
            if attribute.name == "settings":
                out.update(self.settings)
            else:
                out[attribute.name] = getattr(self, attribute.name)
        return out


class StatusUpdate(TypedDict, total=False):
    """What a status write sets (a key left out, or None, leaves its column alone)."""

    state: str | None
    reason: str | None
    last_result: str | None


@dataclass(slots=True, kw_only=True)
class StatsDelta:
    """Counters to add to a mapping's stats row."""

    records_in: int = 0
    filtered: int = 0
    invoked: int = 0
    failed: int = 0
    last_invoke: datetime | None = None

    def __bool__(self) -> bool:
        return bool(self.records_in or self.filtered or self.invoked or self.failed)


@dataclass(frozen=True, slots=True, kw_only=True)
class DeletedMapping:
    """A row of ``deleted_mappings``: a mapping the YAML deleted, whose checkpoints and stats
    are kept under ``uuid`` for a mapping of the same name and source type declared again."""

    name: str
    uuid: str
    source_type: str
    deleted_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class FailedEvent:
    """A row of ``failed_events``: what the ``table`` destination keeps for replay."""

    mapping_uuid: str
    function_name: str
    condition: str
    payload: dict[str, Any]
    """The whole destination record (AWS format, original records included)."""
    id: int | None = None
    created_at: datetime | None = None
    replayed_at: datetime | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class QueuedEvent:
    """A row of ``async_events``: an asynchronous event accepted (committed) and not yet
    delivered. ``target`` is ``function:NAME`` (Lambda's Invoke API with
    ``InvocationType=Event``) or ``mapping:UUID`` (a front-end's mapping, such as an
    EventBridge rule)."""

    id: str
    """The event id, answered to the caller (the Invoke API's request id)."""
    target: str
    payload: str
    """The event as JSON text, exactly as accepted."""
    attributes: dict[str, Any] = field(default_factory=dict)
    """What the front-end keeps beside the payload (the Invoke API: ``client_context``)."""
    enqueued_at: datetime
    deliveries: int = 0
    """How many times a replica claimed it (a claim that ended without delivery, by a crash
    or a stop, counts too)."""
    lease_owner: str | None = None
    lease_expires_at: datetime | None = None
    attempts: int = 0
    """Invocations that ended in a function error (the retries it used, plus one)."""
    retry_at: datetime | None = None
    """Not claimed before this time: the backoff before its next retry."""


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueDepth:
    """How many events wait for one target of the asynchronous queue, and since when."""

    target: str
    events: int
    oldest: datetime | None


def function_arn(name: str, arn: str = "", account: str | None = None) -> str:
    """The ARN a function is invoked as: the configured one, or a local look-alike.

    A local ARN uses ``AWS_REGION`` (default ``us-east-1``) and ``account`` (the function's
    ``account_id``, which is ``router.account_id``; default :func:`current_account`), so
    handlers that split the ARN keep working.
    """
    if arn:
        return arn
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    return f"arn:aws:lambda:{region}:{account or current_account()}:function:{name}"
