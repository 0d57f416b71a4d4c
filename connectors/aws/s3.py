"""The ``s3`` source: S3 object events, delivered as Lambda delivers S3 notifications
(asynchronous invocation, one ``aws:s3`` record per invocation).

Two modes, chosen by the settings:

* ``queue_url``: bucket notifications arriving through an SQS queue, either plain S3 event
  JSON or wrapped in an SNS notification (``Type: Notification``). ``s3:TestEvent`` messages
  are deleted. A notification message is deleted only once every S3 record in it has been
  delivered or handed to a destination; its visibility is extended meanwhile.
* ``bucket``: polling for stores without notifications. ListObjectsV2 (``prefix``) is
  compared with a cursor kept in the store (object key -> ETag); new and changed objects
  produce ``ObjectCreated:Put`` records. Only the replica holding the lease
  ``s3poll:<mapping uuid>`` polls.

``prefix`` / ``suffix`` filter on the decoded object key in both modes; ``events`` on the
event type, and ``bucket`` beside ``queue_url`` on the bucket, of notifications (SAM's
``Bucket`` / ``Events`` / ``Filter`` properties).
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import hashlib
import logging
import time
from collections.abc import Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote_plus

import orjson
from pydantic import AliasChoices, Field, field_validator, model_validator

from connectors.aws.common import (
    AWS_ERRORS,
    AWS_REQUIRES,
    AwsSettings,
    client_config,
    describe,
    make_session,
    region_for,
    run_all,
)
from connectors.aws.sqs import BATCH_LIMIT, SQSQueue
from connectors.s3_events import normalise
from router.abc import Sink, Source, SourceContext, SourceTraits
from router.aio import wait_event
from router.errors import SourceError
from router.models import Record, SourceKind
from router.store.checkpoints import CheckpointWriter

logger = logging.getLogger(__name__)

TRAITS = SourceTraits(
    kind=SourceKind.ASYNC,
    batch_size_default=1,
    batch_size_max=1,
    retry_default=2,
    retry_min=0,
    retry_max=2,
    record_age_default=21_600,
    record_age_min=60,
    record_age_max=21_600,
    supports=frozenset(
        {"maximum_retry_attempts", "maximum_record_age", "destination_config", "filter_criteria"}
    ),
)

"""``principalId`` filled in where an emulator's event has none (AWS's own samples use it)."""

_CURSOR_PREFIX = "obj:"
_HASHED_PREFIX = "obj#"
_MAX_CURSOR_KEY = 500  # the store's checkpoint keys are at most 512 characters


class S3Settings(AwsSettings):
    """``source: {type: s3, queue_url: ...}`` or ``source: {type: s3, bucket: ...}``."""

    queue_url: str | None = None
    """SQS queue receiving the bucket's notifications (directly or through SNS)."""
    bucket: str | None = Field(default=None, validation_alias=AliasChoices("bucket", "Bucket"))
    """Bucket to poll when it sends no notifications; beside ``queue_url``, only that
    bucket's notifications are delivered (SAM's ``Bucket``)."""
    events: tuple[str, ...] = Field(
        default=("s3:*",), validation_alias=AliasChoices("events", "Events")
    )
    """Event types delivered, as S3 notification configurations name them
    (``s3:ObjectCreated:*``, ``s3:ObjectRemoved:Delete``...); default every type."""
    prefix: str = ""
    suffix: str = ""
    wait_time_seconds: int = Field(default=20, ge=0, le=20)
    receivers: int = Field(default=2, ge=1, le=100)
    poll_interval: float = Field(default=10.0, gt=0, le=3600)
    """Seconds between two listings of the bucket (polling mode)."""
    lease_ttl: float | None = Field(default=None, gt=0)
    """How long a replica's polling lease lasts without renewal; default 3 poll intervals
    (at least 30 s)."""

    @model_validator(mode="before")
    @classmethod
    def _sam_filter(cls, value: Any) -> Any:
        """SAM's ``Filter: {S3Key: {Rules: [{Name: prefix | suffix, Value: ...}]}}``."""
        if not isinstance(value, dict) or "Filter" not in value:
            return value
        out = dict(value)
        shape = "Filter must be {S3Key: {Rules: [{Name: prefix | suffix, Value: TEXT}]}}"
        block = out.pop("Filter")
        key = block.get("S3Key") if isinstance(block, dict) and set(block) == {"S3Key"} else None
        rules = key.get("Rules") if isinstance(key, dict) and set(key) == {"Rules"} else None
        if not isinstance(rules, list):
            raise ValueError(shape)  # noqa: TRY004 - pydantic reports ValueError
        for rule in rules:
            if not isinstance(rule, dict) or set(rule) != {"Name", "Value"}:
                raise ValueError(shape)
            name = str(rule["Name"]).lower()
            if name not in ("prefix", "suffix") or not isinstance(rule["Value"], str):
                raise ValueError(shape)
            if name in out:
                raise ValueError(f"give the {name} once: {name} or Filter, not both")
            out[name] = rule["Value"]
        return out

    @field_validator("events", mode="before")
    @classmethod
    def _event_types(cls, value: Any) -> Any:
        value = [value] if isinstance(value, str) else value
        if isinstance(value, list):
            for item in value:
                if not isinstance(item, str) or not item.startswith("s3:"):
                    raise ValueError(
                        "events must be S3 event types such as s3:ObjectCreated:* (one, or a list)"
                    )
            return tuple(value)
        return value

    @model_validator(mode="after")
    def _one_mode(self) -> S3Settings:
        if self.queue_url is None and self.bucket is None:
            raise ValueError(
                "set queue_url (notifications through SQS) or bucket (polling; with "
                "queue_url: only that bucket's notifications)"
            )
        if self.queue_url is None and not self.wants_event("ObjectCreated:Put"):
            raise ValueError(
                "polling a bucket (no queue_url) sees new objects only: events must include "
                "s3:ObjectCreated:*; give queue_url for the other event types"
            )
        return self

    def wants_event(self, name: str) -> bool:
        """Whether an event named ``name`` (``ObjectCreated:Put``) is one of ``events``."""
        return any(fnmatch.fnmatchcase(f"s3:{name}", pattern) for pattern in self.events)


@dataclass(slots=True)
class _Message:
    """A notification message whose S3 records are still in the pipeline."""

    receipt: str
    waiting: set[str] = field(default_factory=set)


def notification_records(body: str) -> list[dict[str, Any]] | None:
    """The S3 event records in a notification body: ``[]`` for ``s3:TestEvent`` (nothing to
    deliver), None when the body is not an S3 notification at all."""
    try:
        doc = orjson.loads(body)
        if isinstance(doc, dict) and doc.get("Type") == "Notification":
            message = doc.get("Message")
            doc = orjson.loads(message) if isinstance(message, str) else None
    except orjson.JSONDecodeError:
        return None
    if not isinstance(doc, dict):
        return None
    if doc.get("Event") == "s3:TestEvent":
        return []
    records = doc.get("Records")
    if not isinstance(records, list):
        return None
    return [r for r in records if isinstance(r, dict) and r.get("eventSource") == "aws:s3"]


class S3Source(Source):
    """S3 object events for one mapping (ASYNC kind: one record per invocation, retried by
    the core as Lambda's asynchronous invocation)."""

    Settings = S3Settings
    traits = TRAITS
    requires = AWS_REQUIRES

    def __init__(self, settings: S3Settings, context: SourceContext) -> None:
        super().__init__(settings, context)
        self.settings: S3Settings = settings
        self.region = region_for(settings, settings.queue_url)
        self.queue: SQSQueue | None = None
        if settings.queue_url is not None:
            self.queue = SQSQueue(
                settings,
                settings.queue_url,
                wait_time=settings.wait_time_seconds,
                receivers=settings.receivers,
            )
        self._messages: dict[str, _Message] = {}
        self._reserved = 0
        self._room = asyncio.Event()
        # polling mode
        self._session: Any = None
        self._stack: AsyncExitStack | None = None
        self._s3: Any = None
        self._seen: dict[str, str] | None = None
        self._polled: dict[str, str] = {}
        self._checkpoints = CheckpointWriter(context.store.put_checkpoints, context.mapping.uuid)
        self._lease_key = f"s3poll:{context.mapping.uuid}"
        self._leased = False

    def _wanted(self, key: str) -> bool:
        return key.startswith(self.settings.prefix) and key.endswith(self.settings.suffix)

    async def run(self, sink: Sink) -> None:
        if self.queue is not None:
            await self.queue.open()
            await run_all([self._receive_loop(sink) for _ in range(self.settings.receivers)])
        else:
            await self._poll_loop(sink)

    def build_event(self, records: Sequence[Record]) -> dict[str, Any]:
        return {"Records": [r.data for r in records]}

    async def ack(self, records: Sequence[Record]) -> None:
        if self.queue is not None:
            await self._ack_notifications(records)
        else:
            await self._ack_polled(records)

    # ----------------------------------------------------------- notifications

    async def _receive_loop(self, sink: Sink) -> None:
        assert self.queue is not None
        while True:
            # Each message holds one S3 record as a rule; claim room as for plain messages.
            while sink.free() - self._reserved <= 0:
                self._room.clear()
                await wait_event(self._room, 1.0)
            count = min(BATCH_LIMIT, sink.free() - self._reserved)
            self._reserved += count
            try:
                messages = await self.queue.receive(count)
                records = await self._from_messages(messages)
                if records:
                    await sink.put(records)
            finally:
                self._reserved -= count
                self._room.set()

    async def _from_messages(self, messages: list[dict[str, Any]]) -> list[Record]:
        assert self.queue is not None
        queue = self.queue
        received = time.monotonic()
        # The event's age counts from when the router takes it, as Lambda's asynchronous
        # queue counts from when it accepts an event: a backlog that waited in SQS while
        # the router was down is delivered, not expired.
        now = time.time()
        records: list[Record] = []
        done: list[tuple[str, str]] = []
        unknown = 0
        for m in messages:
            message_id, receipt = m["MessageId"], m["ReceiptHandle"]
            pending = self._messages.get(message_id)
            if pending is not None:
                # Received again while its records are still in the pipeline (visibility
                # ran out): keep the newest receipt handle, do not deliver twice.
                pending.receipt = receipt
                queue.track(message_id, receipt, received)
                continue
            s3_records = notification_records(m.get("Body", ""))
            if s3_records is None:
                # Not ours to destroy: it becomes visible again and the queue's redrive
                # policy moves it to a dead-letter queue.
                unknown += 1
                continue
            entry = _Message(receipt)
            for index, raw in enumerate(s3_records):
                data = normalise(raw, f"{message_id}:{index}")
                key = unquote_plus(data["s3"]["object"]["key"])
                bucket = self.settings.bucket
                if not self._wanted(key) or (bucket and data["s3"]["bucket"]["name"] != bucket):
                    continue
                if not self.settings.wants_event(str(data.get("eventName", ""))):
                    continue
                identifier = f"{message_id}:{index}"
                entry.waiting.add(identifier)
                records.append(
                    Record(
                        lane=f"{data['s3']['bucket']['name']}/{key}",
                        position=message_id,
                        data=data,
                        identifier=identifier,
                        size=len(orjson.dumps(data)),
                        arrival=now,
                    )
                )
            if entry.waiting:
                self._messages[message_id] = entry
                queue.track(message_id, receipt, received)
            else:
                done.append((message_id, receipt))
        if unknown:
            logger.warning(
                "s3 %s: %d messages are not S3 notifications; left on the queue",
                queue.url,
                unknown,
            )
        if done:
            # Test events and notifications whose records are all outside prefix/suffix,
            # the bucket or the event types.
            await queue.delete(done)
        return records

    async def _ack_notifications(self, records: Sequence[Record]) -> None:
        assert self.queue is not None
        finished: list[tuple[str, str]] = []
        for r in records:
            entry = self._messages.get(r.position)
            if entry is None:
                continue
            entry.waiting.discard(r.identifier)
            if not entry.waiting:
                finished.append((r.position, entry.receipt))
        if finished:
            await self.queue.delete(finished)
            for message_id, _ in finished:
                self._messages.pop(message_id, None)
        self._room.set()

    # ----------------------------------------------------------- polling

    async def _poll_loop(self, sink: Sink) -> None:
        settings = self.settings
        store = self.context.store
        ttl = settings.lease_ttl or max(30.0, 3 * settings.poll_interval)
        await self._open_s3()
        if self._seen is None:
            self._seen = self._load_cursor(await store.get_checkpoints(self.context.mapping.uuid))
        try:
            while True:
                self._leased = await store.acquire_lease(
                    self._lease_key, self.context.replica_id, ttl
                )
                if self._leased:
                    await self._scan(sink)
                await asyncio.sleep(settings.poll_interval)
        finally:
            if self._leased:
                self._leased = False
                with contextlib.suppress(Exception):
                    await store.release_lease(self._lease_key, self.context.replica_id)

    async def _open_s3(self) -> None:
        if self._s3 is not None:
            return
        self._session = make_session(self.settings)
        stack = AsyncExitStack()
        self._s3 = await stack.enter_async_context(
            self._session.client(
                "s3",
                endpoint_url=self.settings.endpoint_url,
                region_name=self.region,
                config=client_config(self.settings),
            )
        )
        self._stack = stack

    @staticmethod
    def _load_cursor(values: dict[str, str]) -> dict[str, str]:
        seen: dict[str, str] = {}
        for name, value in values.items():
            if name.startswith(_CURSOR_PREFIX):
                seen[name[len(_CURSOR_PREFIX) :]] = value
            elif name.startswith(_HASHED_PREFIX):
                with contextlib.suppress(orjson.JSONDecodeError, KeyError, TypeError):
                    item = orjson.loads(value)
                    seen[item["key"]] = item["etag"]
        return seen

    @staticmethod
    def _cursor_entry(key: str, etag: str) -> tuple[str, str]:
        if len(key) + len(_CURSOR_PREFIX) <= _MAX_CURSOR_KEY:
            return _CURSOR_PREFIX + key, etag
        digest = hashlib.sha256(key.encode()).hexdigest()
        return _HASHED_PREFIX + digest, orjson.dumps({"key": key, "etag": etag}).decode()

    async def _scan(self, sink: Sink) -> None:
        assert self._seen is not None
        bucket = self.settings.bucket
        listed: set[str] = set()
        kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": self.settings.prefix}
        while True:
            try:
                page = await self._s3.list_objects_v2(**kwargs)
            except AWS_ERRORS as e:
                raise SourceError(f"s3 bucket {bucket}: listing failed: {describe(e)}") from e
            fresh: list[Record] = []
            for obj in page.get("Contents") or ():
                key = obj["Key"]
                if not self._wanted(key):
                    continue
                listed.add(key)
                etag = str(obj.get("ETag", "")).strip('"')
                if self._seen.get(key) == etag or self._polled.get(key) == etag:
                    continue
                self._polled[key] = etag
                fresh.append(self._polled_record(key, etag, obj))
            if fresh:
                await sink.put(fresh)
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                break
            kwargs["ContinuationToken"] = token
        gone = [k for k in self._seen if k not in listed]
        if gone:
            for key in gone:
                del self._seen[key]
            names = [self._cursor_entry(k, "")[0] for k in gone]
            await self.context.store.delete_checkpoints(self.context.mapping.uuid, names)

    def _polled_record(self, key: str, etag: str, obj: dict[str, Any]) -> Record:
        modified = obj.get("LastModified")
        moment = modified if isinstance(modified, datetime) else datetime.now(UTC)
        bucket = self.settings.bucket or ""
        raw = {
            "eventVersion": "2.1",
            "eventSource": "aws:s3",
            "awsRegion": self.region,
            "eventTime": moment.isoformat(),
            "eventName": "ObjectCreated:Put",
            "s3": {
                "s3SchemaVersion": "1.0",
                "configurationId": f"router-poll-{self.context.mapping.name}",
                "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
                "object": {"key": key, "size": obj.get("Size", 0), "eTag": etag},
            },
        }
        data = normalise(raw, f"{bucket}/{key}/{etag}")
        return Record(
            lane=f"{bucket}/{key}",
            position=(key, etag),
            data=data,
            identifier=f"{key}@{etag}",
            size=len(orjson.dumps(data)),
            # Found now: an old object seen for the first time is not an expired event.
            arrival=time.time(),
        )

    async def _ack_polled(self, records: Sequence[Record]) -> None:
        values: dict[str, str] = {}
        for r in records:
            key, etag = r.position
            name, value = self._cursor_entry(key, etag)
            values[name] = value
        await self._checkpoints.put(values)
        for r in records:
            key, etag = r.position
            if self._seen is not None:
                self._seen[key] = etag
            if self._polled.get(key) == etag:
                del self._polled[key]

    async def aclose(self) -> None:
        await self._checkpoints.aclose()
        if self.queue is not None:
            await self.queue.aclose()
        stack, self._stack = self._stack, None
        self._s3 = None
        if stack is not None:
            await stack.aclose()
