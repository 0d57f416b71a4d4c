"""The ``sqs`` source: Amazon SQS standard and FIFO queues, as Lambda's SQS event source
mapping reads them.

* Long polling, up to ``receivers`` ReceiveMessage calls in parallel, never holding more
  messages than the pipeline has room for (``sink.free()``).
* Every message handed to the pipeline has its visibility extended at half the queue's
  visibility timeout until it is deleted (success, filtered out) or released (failure).
* Released messages are left alone: they become visible again when their visibility timeout
  ends, so retries follow the queue's visibility timeout and redrive policy, as with Lambda.
* Standard queues have no lanes (``lane=None``); FIFO queues have one lane per message group.
* Records are ``aws:sqs`` records exactly as Lambda delivers them.

:class:`SQSQueue` is also used by :mod:`connectors.aws.s3` for notifications arriving via SQS.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
from collections.abc import Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from connectors.aws.common import (
    AWS_ERRORS,
    AWS_REQUIRES,
    QUEUE_MISSING_CODES,
    AwsSettings,
    client_config,
    describe,
    error_code,
    is_aws_error,
    make_session,
    parse_arn,
    queue_arn_from_url,
    region_for,
    region_from,
    run_all,
)
from connectors.aws.sqs_depth import QueueDepth
from router import logs
from router.abc import MappingProblem, MetricFamily, Sink, Source, SourceContext, SourceTraits
from router.aio import wait_event
from router.errors import SourceError
from router.filters.view import decode_text, with_decoded
from router.models import MappingConfig, Record, SourceKind
from router.tracing import from_traceparent

logger = logging.getLogger(__name__)
warnings = logs.LimitedLogger(logger)

BATCH_LIMIT = 10
"""SQS's limit on messages per ReceiveMessage and entries per *Batch call."""

DEFAULT_CONCURRENCY = 10
"""Batches the pipeline runs at once for a mapping without maximum_concurrency."""


@dataclass(slots=True)
class _InFlight:
    receipt: str
    visible_until: float
    """Monotonic time at which SQS makes the message visible again unless extended."""


class SQSQueue:
    """A queue URL with its client, attributes and in-flight bookkeeping.

    ``track`` a message once it is handed to the pipeline; from then on its visibility is
    extended at half the queue's visibility timeout until ``delete`` or ``forget``. A message
    that is forgotten becomes visible again when its current visibility timeout ends, so
    retries follow the queue's visibility timeout and redrive policy, as with Lambda.
    """

    def __init__(
        self, settings: AwsSettings, queue_url: str, *, wait_time: int, receivers: int
    ) -> None:
        self.settings = settings
        self.url = queue_url
        self.wait_time = wait_time
        self.fifo = queue_url.endswith(".fifo")
        self.region = region_for(settings, queue_url)
        self.arn = ""
        self.visibility = 30
        self._receivers = receivers
        self._session = make_session(settings)
        self._stack: AsyncExitStack | None = None
        self._client: Any = None
        self._inflight: dict[str, _InFlight] = {}
        self._extender: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def client(self) -> Any:
        return self._client

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    async def open(self) -> None:
        """Create the client (once) and read the queue's ARN and visibility timeout.
        Raises SourceError when the queue or the endpoint cannot be reached."""
        if self._closed:
            raise SourceError(f"sqs {self.url}: source is closed")
        if self._client is None:
            stack = AsyncExitStack()
            # Long polls hold a connection for up to WaitTimeSeconds: read past that.
            config = client_config(
                self.settings,
                read_timeout=self.wait_time + 15,
                pool=self._receivers + 2 * BATCH_LIMIT,
            )
            self._client = await stack.enter_async_context(
                self._session.client(
                    "sqs",
                    endpoint_url=self.settings.endpoint_url,
                    region_name=self.region,
                    config=config,
                )
            )
            self._stack = stack
        try:
            response = await self._client.get_queue_attributes(
                QueueUrl=self.url, AttributeNames=["QueueArn", "VisibilityTimeout"]
            )
        except asyncio.CancelledError:
            raise
        except AWS_ERRORS as e:
            raise self._error("cannot read the queue's attributes", e) from e
        attributes = response.get("Attributes") or {}
        self.arn = attributes.get("QueueArn") or queue_arn_from_url(self.url, self.region)
        if not self.settings.region:
            self.region = region_from(self.arn) or self.region
        self.visibility = int(attributes.get("VisibilityTimeout", "30"))
        if self._extender is None or self._extender.done():
            self._extender = asyncio.create_task(
                self._extend_forever(), name=f"sqs-extend {self.url}"
            )

    def _error(self, what: str, exc: BaseException) -> SourceError:
        if error_code(exc) in QUEUE_MISSING_CODES:
            return SourceError(
                f"sqs {self.url}: the queue does not exist (check queue_url, region and "
                "endpoint_url)"
            )
        if is_aws_error(exc):
            return SourceError(f"sqs {self.url}: {what}: {describe(exc)}")
        return SourceError(f"sqs {self.url}: {what}: {type(exc).__name__}: {exc}")

    async def receive(self, count: int) -> list[dict[str, Any]]:
        """One long-poll ReceiveMessage of up to ``count`` (<= 10) messages, with every system
        and message attribute."""
        try:
            response = await self._client.receive_message(
                QueueUrl=self.url,
                MaxNumberOfMessages=count,
                WaitTimeSeconds=self.wait_time,
                MessageSystemAttributeNames=["All"],
                MessageAttributeNames=["All"],
            )
        except asyncio.CancelledError:
            raise
        except AWS_ERRORS as e:
            raise self._error("receive failed", e) from e
        messages: list[dict[str, Any]] = response.get("Messages") or []
        return messages

    def track(self, message_id: str, receipt: str, received: float) -> None:
        self._inflight[message_id] = _InFlight(receipt, received + self.visibility)

    def forget(self, message_id: str) -> str | None:
        """Stop extending a message; returns its latest receipt handle if it was tracked."""
        entry = self._inflight.pop(message_id, None)
        return entry.receipt if entry is not None else None

    async def delete(self, entries: list[tuple[str, str]]) -> None:
        """Delete ``(message_id, receipt_handle)`` pairs, 10 per call, calls in parallel.

        Entries SQS rejects as the caller's fault (an expired receipt handle: the message was
        already received again elsewhere) are logged and dropped; anything else raises
        SourceError and the caller retries (deleting twice is harmless).

        A message listed more than once (a standard queue may deliver one message twice,
        even into one batch) is deleted once, with its first receipt handle: a batch that
        repeats a receipt handle can be rejected whole (``BatchEntryIdsNotDistinct``)."""
        unique: dict[str, str] = {}
        for message_id, receipt in entries:
            unique.setdefault(message_id, receipt)
            self._inflight.pop(message_id, None)
        entries = list(unique.items())
        chunks = [entries[i : i + BATCH_LIMIT] for i in range(0, len(entries), BATCH_LIMIT)]
        results = await asyncio.gather(
            *(self._delete_chunk(c) for c in chunks), return_exceptions=True
        )
        retry: list[tuple[str, str]] = []
        first_error: BaseException | None = None
        for chunk, result in zip(chunks, results, strict=True):
            if isinstance(result, BaseException):
                retry.extend(chunk)
                first_error = first_error or result
            else:
                retry.extend(result)
        if retry:
            now = time.monotonic()
            for message_id, receipt in retry:
                # Keep extending until the retried delete goes through.
                self._inflight.setdefault(message_id, _InFlight(receipt, now + 1.0))
            if isinstance(first_error, asyncio.CancelledError):
                raise first_error
            if first_error is not None and not isinstance(first_error, SourceError):
                raise self._error(f"deleting {len(retry)} messages failed", first_error)
            if first_error is not None:
                raise first_error
            raise SourceError(f"sqs {self.url}: deleting {len(retry)} messages failed")

    async def _delete_chunk(self, chunk: list[tuple[str, str]]) -> list[tuple[str, str]]:
        try:
            response = await self._client.delete_message_batch(
                QueueUrl=self.url,
                Entries=[{"Id": str(i), "ReceiptHandle": rh} for i, (_, rh) in enumerate(chunk)],
            )
        except asyncio.CancelledError:
            raise
        except AWS_ERRORS as e:
            raise self._error("delete failed", e) from e
        failed = response.get("Failed") or []
        if not failed:
            return []
        retry: list[tuple[str, str]] = []
        dropped = 0
        for entry in failed:
            if entry.get("SenderFault"):
                dropped += 1
            else:
                retry.append(chunk[int(entry["Id"])])
        if dropped:
            warnings.warning(
                (self.url, "delete"),
                "sqs %s: %d messages could not be deleted (%s): their receipt handles "
                "expired; any of them still on the queue will be delivered again",
                self.url,
                dropped,
                failed[0].get("Code", "?"),
                cause="delete",
            )
        return retry

    async def _extend_forever(self) -> None:
        while True:
            # Extend at half the visibility timeout, checking a few times per half.
            await asyncio.sleep(max(self.visibility / 6, 0.1))
            if not self._inflight or self.visibility <= 0:
                continue
            now = time.monotonic()
            due = [
                (mid, e)
                for mid, e in self._inflight.items()
                if e.visible_until - now <= self.visibility / 2
            ]
            if not due:
                continue
            chunks = [due[i : i + BATCH_LIMIT] for i in range(0, len(due), BATCH_LIMIT)]
            await asyncio.gather(*(self._extend_chunk(c, now) for c in chunks))

    async def _extend_chunk(self, chunk: list[tuple[str, _InFlight]], now: float) -> None:
        try:
            response = await self._client.change_message_visibility_batch(
                QueueUrl=self.url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": e.receipt, "VisibilityTimeout": self.visibility}
                    for i, (_, e) in enumerate(chunk)
                ],
            )
        except asyncio.CancelledError:
            raise
        except AWS_ERRORS as e:
            # The next tick tries again; messages whose visibility runs out meanwhile are
            # redelivered (at least once).
            warnings.warning(
                (self.url, "visibility"),
                "sqs %s: extending visibility failed: %s",
                self.url,
                describe(e),
                cause="visibility",
            )
            return
        failed = {int(f["Id"]) for f in response.get("Failed") or []}
        for i, (mid, entry) in enumerate(chunk):
            if i in failed:
                # Usually an expired receipt handle: the message is visible again already.
                continue
            current = self._inflight.get(mid)
            if current is entry:
                entry.visible_until = now + self.visibility
        if failed:
            warnings.warning(
                (self.url, "visibility"),
                "sqs %s: visibility of %d in-flight messages could not be extended",
                self.url,
                len(failed),
                cause="visibility",
            )

    async def aclose(self) -> None:
        self._closed = True
        if self._extender is not None:
            self._extender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._extender
            self._extender = None
        stack, self._stack = self._stack, None
        self._client = None
        if stack is not None:
            await stack.aclose()


def sqs_view(record: Mapping[str, Any]) -> Any:
    """What filter patterns see of an SQS record: the record (``messageId``, ``attributes``,
    ``messageAttributes``, ``body``, ...) with ``body`` replaced by its decoded JSON value when
    the body is valid JSON; otherwise the body stays text (RawText), which patterns on the
    string can match and patterns inside it never do (Lambda drops such a message)."""
    return with_decoded(record, "body", lambda b: decode_text(b) if isinstance(b, str) else b)


STANDARD_TRAITS = SourceTraits(
    kind=SourceKind.QUEUE,
    filter_view=sqs_view,
    batch_size_default=10,
    batch_size_max=10_000,
    window_default=0.0,
    supports=frozenset({"function_response_types", "maximum_concurrency", "filter_criteria"}),
)

FIFO_TRAITS = SourceTraits(
    kind=SourceKind.QUEUE,
    filter_view=sqs_view,
    batch_size_default=10,
    batch_size_max=10,
    window_default=0.0,
    window_max=0.0,
    supports=frozenset({"function_response_types", "maximum_concurrency", "filter_criteria"}),
)


class SQSSettings(AwsSettings):
    """``source: {type: sqs, queue_url: ..., endpoint_url: ..., region: ...}``."""

    queue_url: str
    wait_time_seconds: int = Field(default=20, ge=0, le=20)
    """Long-poll wait of each ReceiveMessage call."""
    receivers: int = Field(default=4, ge=1, le=100)
    """ReceiveMessage calls in flight at once while the pipeline has room (standard queues;
    a FIFO queue is read by one receive at a time)."""
    max_in_flight: int | None = Field(default=None, ge=10)
    """Messages received and not yet deleted or released, at most. Default: two rounds of
    batches at the mapping's maximum concurrency (2 x batch size x concurrency)."""

    @model_validator(mode="before")
    @classmethod
    def _queue_from_arn(cls, value: Any) -> Any:
        """SAM's ``Queue`` / CloudFormation's ``EventSourceArn`` (a queue ARN) -> the queue
        URL, on ``endpoint_url`` when one is given."""
        if not isinstance(value, dict):
            return value
        given = [k for k in ("Queue", "EventSourceArn", "queue_arn") if k in value]
        if not given:
            return value
        if len(given) > 1 or "queue_url" in value:
            also = given[1] if len(given) > 1 else "queue_url"
            raise ValueError(f"give the queue once: {given[0]} or {also}, not both")
        out = dict(value)
        arn = out.pop(given[0])
        try:
            region, account, name = parse_arn(str(arn), "sqs")
        except ValueError as e:
            raise ValueError(f"{given[0]}: {e}") from None
        endpoint = out.get("endpoint_url")
        base = (
            endpoint.rstrip("/")
            if isinstance(endpoint, str) and endpoint
            else f"https://sqs.{region}.amazonaws.com"
        )
        out["queue_url"] = f"{base}/{account}/{name}"
        out.setdefault("region", region)
        return out

    @field_validator("queue_url")
    @classmethod
    def _looks_like_a_queue_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or len(parts.path.strip("/").split("/")) != 2:
            raise ValueError(
                "queue_url must be a queue URL such as "
                "https://sqs.us-east-1.amazonaws.com/123456789012/orders"
            )
        return value


def lambda_message_attributes(attributes: Mapping[str, Any]) -> dict[str, Any]:
    """SQS message attributes in the form Lambda puts into the event: camelCase keys, binary
    values base64-encoded, both list fields always present."""
    out: dict[str, Any] = {}
    for name, value in attributes.items():
        item: dict[str, Any] = {}
        if "StringValue" in value:
            item["stringValue"] = value["StringValue"]
        if "BinaryValue" in value:
            item["binaryValue"] = base64.b64encode(value["BinaryValue"]).decode("ascii")
        item["stringListValues"] = list(value.get("StringListValues") or ())
        item["binaryListValues"] = [
            base64.b64encode(b).decode("ascii") for b in value.get("BinaryListValues") or ()
        ]
        item["dataType"] = value.get("DataType", "String")
        out[name] = item
    return out


class SQSSource(Source):
    """Reads an SQS queue for one mapping (QUEUE kind; FIFO groups are ordered lanes)."""

    Settings = SQSSettings
    traits = STANDARD_TRAITS
    requires = AWS_REQUIRES

    def __init__(self, settings: SQSSettings, context: SourceContext) -> None:
        super().__init__(settings, context)
        self.settings: SQSSettings = settings
        self.queue = SQSQueue(
            settings,
            settings.queue_url,
            wait_time=settings.wait_time_seconds,
            receivers=settings.receivers,
        )
        self._reserved = 0
        self._room = asyncio.Event()
        mapping = context.mapping
        self.depth = QueueDepth(self.queue, mapping.name)
        # Enough for every concurrent batch and the next round of them: receiving further
        # ahead would only keep messages invisible (and their visibility extended) while
        # they wait, away from other consumers of the queue.
        concurrency = mapping.maximum_concurrency or DEFAULT_CONCURRENCY
        self._max_in_flight = settings.max_in_flight or max(
            2 * max(mapping.batch_size, BATCH_LIMIT) * concurrency, 100
        )

    @classmethod
    def traits_for(cls, settings: Any) -> SourceTraits:
        return FIFO_TRAITS if str(settings.queue_url).endswith(".fifo") else STANDARD_TRAITS

    @classmethod
    def validate_mapping(cls, mapping: MappingConfig) -> list[MappingProblem]:
        # AWS: on a standard queue a batch_size above 10 needs a batching window of at
        # least 1 second (a FIFO queue's batches stop at 10: its traits say so).
        if (
            cls.traits_for(mapping.source.settings).batch_size_max > BATCH_LIMIT
            and mapping.batch_size > BATCH_LIMIT
            and mapping.maximum_batching_window < 1
        ):
            return [
                MappingProblem(
                    setting="batch_size",
                    message="a batch_size above 10 needs maximum_batching_window of at least "
                    "1 second (as AWS requires for SQS)",
                )
            ]
        return []

    async def run(self, sink: Sink) -> None:
        await self.queue.open()
        # FIFO: one receive at a time. SQS itself never hands out a group's next messages
        # while earlier ones are in flight, but emulators check that without a lock, and
        # two racing receives could reorder a group.
        receivers = 1 if self.queue.fifo else self.settings.receivers
        await run_all([self.depth.run(), *(self._receive_loop(sink) for _ in range(receivers))])

    def metrics(self) -> list[MetricFamily]:
        """The queue's approximate depth (``router_sqs_approximate_messages``: its lag)."""
        return self.depth.metrics()

    async def _claim(self, sink: Sink) -> int:
        """Reserve room for one receive: up to 10 messages, never more than the pipeline can
        take beyond what other receivers have already asked for."""
        while True:
            room = min(sink.free(), self._max_in_flight - self.queue.inflight) - self._reserved
            if room > 0:
                count = min(BATCH_LIMIT, room)
                self._reserved += count
                return count
            self._room.clear()
            # Room comes back when records are acked or released; the timeout covers room
            # freed inside the pipeline without an ack (e.g. a mapping that was updated).
            await wait_event(self._room, 1.0)

    async def _receive_loop(self, sink: Sink) -> None:
        queue = self.queue
        while True:
            count = await self._claim(sink)
            try:
                messages = await queue.receive(count)
                if messages:
                    records = self._records(messages)
                    try:
                        await sink.put(records)
                    except BaseException:
                        # Not handed over: stop extending their visibility, so that they
                        # come again when it ends instead of staying invisible for good.
                        for record in records:
                            queue.forget(record.identifier)
                        raise
            finally:
                self._reserved -= count
                self._room.set()

    def _records(self, messages: list[dict[str, Any]]) -> list[Record]:
        queue = self.queue
        arn, region, fifo = queue.arn, queue.region, queue.fifo
        received = time.monotonic()
        now = time.time()
        records: list[Record] = []
        again = 0
        most = 0
        for m in messages:
            message_id = m["MessageId"]
            receipt = m["ReceiptHandle"]
            body = m.get("Body", "")
            attributes = m.get("Attributes") or {}
            raw_message_attributes = m.get("MessageAttributes")
            data: dict[str, Any] = {
                "messageId": message_id,
                "receiptHandle": receipt,
                "body": body,
                "attributes": attributes,
                "messageAttributes": (
                    lambda_message_attributes(raw_message_attributes)
                    if raw_message_attributes
                    else {}
                ),
                "md5OfBody": m.get("MD5OfBody", ""),
            }
            if raw_message_attributes and "MD5OfMessageAttributes" in m:
                data["md5OfMessageAttributes"] = m["MD5OfMessageAttributes"]
            data["eventSource"] = "aws:sqs"
            data["eventSourceARN"] = arn
            data["awsRegion"] = region
            sent = attributes.get("SentTimestamp")
            count = str(attributes.get("ApproximateReceiveCount", "1"))
            if count != "1" and count.isdigit():
                again += 1
                most = max(most, int(count))
            queue.track(message_id, receipt, received)
            records.append(
                Record(
                    lane=attributes.get("MessageGroupId") if fifo else None,
                    position=receipt,
                    data=data,
                    identifier=message_id,
                    size=len(body.encode()) + len(receipt) + _RECORD_OVERHEAD,
                    arrival=int(sent) / 1000 if sent else now,
                )
            )
        if again:
            self._redelivered(again, len(messages), most)
        return records

    def _redelivered(self, again: int, received: int, most: int) -> None:
        mapping = self.context.mapping
        warnings.warning(
            (mapping.uuid or mapping.name, "redelivery"),
            "mapping %s: %d of %d messages received from %s were received before "
            "(ApproximateReceiveCount up to %d): an earlier delivery failed, or took longer "
            "than the visibility timeout",
            mapping.name,
            again,
            received,
            self.queue.url,
            most,
            mapping=mapping.name,
            cause="redelivery",
        )

    def build_event(self, records: Sequence[Record]) -> dict[str, Any]:
        return {"Records": [r.data for r in records]}

    def invocation_fields(self, records: Sequence[Record]) -> Mapping[str, str]:
        """``trace_id``: the first message's ``AWSTraceHeader`` (as Lambda passes it on), else
        its ``traceparent`` message attribute in X-Ray form."""
        if not records:
            return {}
        data = records[0].data
        found = data["attributes"].get("AWSTraceHeader", "")
        if not found:
            parent = data["messageAttributes"].get("traceparent", {}).get("stringValue", "")
            found = from_traceparent(parent)
        return {"trace_id": found} if found else {}

    async def ack(self, records: Sequence[Record]) -> None:
        if not records:
            return
        queue = self.queue
        # The receipt handle of the latest receive is the one that deletes; a message seen
        # twice in this batch is forgotten by its first record, and deleted once.
        entries = [(r.identifier, queue.forget(r.identifier) or r.position) for r in records]
        try:
            await queue.delete(entries)
        finally:
            self._room.set()

    async def release(self, records: Sequence[Record]) -> None:
        for r in records:
            self.queue.forget(r.identifier)
        self._room.set()

    async def aclose(self) -> None:
        await self.queue.aclose()


# Keys, attributes and the ARN around the body, in bytes (for the 6 MB batch limit).
_RECORD_OVERHEAD = 600
