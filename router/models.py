"""Values that flow through the router: records, invocations, outcomes, mapping settings.

Settings are frozen dataclasses built by :mod:`router.config` from validated YAML or from a
row of the ``event_source_mappings`` table. Records are the hot-path object: slotted and
mutable only in ``attempts``.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Hashable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import BaseModel

MAX_PAYLOAD_BYTES = 6 * 1024 * 1024
"""Lambda's synchronous invocation payload limit; a batch is sent before it grows past this."""


class SourceKind(enum.StrEnum):
    """How a source is retried and acknowledged (SPEC 6)."""

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
class FunctionConfig:
    """A function the router can invoke, as declared under ``functions:``."""

    name: str
    invoker: str
    timeout: float = 3.0
    settings: PluginSettings
    arn: str = ""


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


@dataclass(frozen=True, slots=True, kw_only=True)
class MappingConfig:
    """One event source mapping, with every default already applied for its source type."""

    name: str
    function: str
    source: SourceSpec
    uuid: str = ""
    enabled: bool = True
    batch_size: int = 10
    maximum_batching_window: float = 0.0
    starting_position: str | None = None
    starting_position_timestamp: datetime | None = None
    filter_patterns: tuple[str, ...] = ()
    """Each pattern as a JSON string; ORed."""
    maximum_retry_attempts: int = -1
    """-1 retries until the record expires."""
    maximum_record_age: float = -1
    """Seconds; -1 = no limit."""
    bisect_batch_on_function_error: bool = False
    report_batch_item_failures: bool = False
    parallelization_factor: int = 1
    maximum_concurrency: int | None = None
    on_failure: DestinationSpec | None = None
    on_success: DestinationSpec | None = None
    origin: str = Origin.YAML


@dataclass(slots=True, kw_only=True)
class MappingRow:
    """A row of ``event_source_mappings`` as the store reads and writes it.

    ``source_config``, ``filter_criteria`` and ``destination_config`` hold JSON as stored;
    :func:`router.config.mapping_from_row` validates them into a :class:`MappingConfig`.
    """

    uuid: str
    name: str
    function_name: str
    source_type: str
    source_config: dict[str, Any]
    enabled: bool = True
    batch_size: int | None = None
    maximum_batching_window: float | None = None
    starting_position: str | None = None
    starting_position_timestamp: datetime | None = None
    filter_criteria: dict[str, Any] | None = None
    maximum_retry_attempts: int | None = None
    maximum_record_age: float | None = None
    bisect_batch_on_function_error: bool | None = None
    function_response_types: list[str] | None = None
    parallelization_factor: int | None = None
    maximum_concurrency: int | None = None
    destination_config: dict[str, Any] | None = None
    state: str = MappingState.CREATING
    state_transition_reason: str = ""
    last_processing_result: str = "No records processed"
    origin: str = Origin.YAML
    config_hash: str = ""
    created_at: datetime | None = None
    updated_at: datetime | None = None


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


def function_arn(name: str, arn: str = "") -> str:
    """The ARN a function is invoked as: the configured one, or a local look-alike.

    A local ARN uses ``AWS_REGION`` (default ``us-east-1``) and the account ``000000000000``
    that AWS emulators use, so handlers that split the ARN keep working.
    """
    if arn:
        return arn
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    return f"arn:aws:lambda:{region}:000000000000:function:{name}"
