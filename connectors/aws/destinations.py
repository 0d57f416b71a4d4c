"""On-failure / on-success destinations on AWS: an SQS queue, an SNS topic, an S3 bucket, a
Kinesis data stream.

Each takes the ARN AWS uses in ``DestinationConfig`` (``arn:aws:sqs:REGION:ACCOUNT:NAME``,
``arn:aws:sns:REGION:ACCOUNT:NAME``, ``arn:aws:s3:::BUCKET``). When the mapping's source is
itself an AWS source, the destination reuses its ``endpoint_url`` and credentials, so a
mapping on an emulator sends its failures to the same emulator; otherwise botocore's usual
configuration applies (``AWS_ENDPOINT_URL``, credential chain).

Records are the AWS destination records built by the core, serialised with orjson. SQS and
SNS take at most 256 KiB per message: a record larger than that is sent without its payloads
(``payload``, ``requestPayload``, ``responsePayload``) and with a ``payloadOmitted`` note, as
AWS drops payloads that do not fit. The ``s3`` and ``table`` destinations keep full records.
S3 objects are laid out as AWS lays out failure records:
``aws/lambda/<ESM-UUID>/<shardID>/YYYY/MM/DD/YYYY-MM-DDTHH.MM.SS-<Random UUID>`` for event
source mappings and ``aws/lambda/async/<function>/YYYY/MM/DD/YYYY-MM-DDTHH.MM.SS-<UUID>`` for
asynchronous invocations (S3, directory, schedule sources).
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import Mapping
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from typing import Any, ClassVar

import orjson
from pydantic import AliasChoices, Field, model_validator

from connectors.aws.common import (
    AWS_ERRORS,
    AWS_REQUIRES,
    AwsSettings,
    client_config,
    describe,
    make_session,
    parse_arn,
    region_for,
)
from router.abc import Destination, DestinationContext
from router.errors import DestinationError
from router.models import PluginSettings

MESSAGE_LIMIT = 256 * 1024
"""SQS and SNS message size limit (bytes)."""

PAYLOAD_KEYS = ("payload", "requestPayload", "responsePayload")
_METADATA_KEYS = ("version", "timestamp", "requestContext", "responseContext")

_INHERITED = ("endpoint_url", "profile", "aws_access_key_id", "aws_secret_access_key")
"""Settings a destination takes over from the mapping's AWS source."""


def _inherit(source: PluginSettings | None, *, region: bool = False) -> dict[str, Any]:
    """Connection settings of the mapping's AWS source (same emulator, same credentials).
    The region only for targets whose ARN has none (S3)."""
    if not isinstance(source, AwsSettings):
        return {}
    names = (
        (*_INHERITED, "aws_session_token", "region")
        if region
        else (*_INHERITED, "aws_session_token")
    )
    return {k: getattr(source, k) for k in names if getattr(source, k) is not None}


def fit_message(record: Mapping[str, Any], limit: int = MESSAGE_LIMIT) -> bytes:
    """The record as JSON, without its payloads if the whole record exceeds ``limit``."""
    body = orjson.dumps(record)
    if len(body) <= limit:
        return body
    slim = {k: v for k, v in record.items() if k not in PAYLOAD_KEYS}
    slim["payloadOmitted"] = {
        "reason": f"the record ({len(body)} bytes) exceeds the {limit}-byte message limit",
        "hint": "use an s3 or table destination to keep whole records",
    }
    body = orjson.dumps(slim)
    if len(body) <= limit:
        return body
    # Even the batch info is too large (huge stream batches): metadata only.
    meta = {k: record[k] for k in _METADATA_KEYS if k in record}
    meta["payloadOmitted"] = slim["payloadOmitted"]
    return orjson.dumps(meta)


class _AwsDestination(Destination):
    """One aioboto3 session and client per destination, opened on first send."""

    requires: ClassVar[Mapping[str, str]] = AWS_REQUIRES
    service: ClassVar[str]

    def __init__(self, settings: Any, context: DestinationContext) -> None:
        super().__init__(settings, context)
        self._session = make_session(settings)
        self._stack: AsyncExitStack | None = None
        self._client: Any = None
        self._lock = asyncio.Lock()

    def _region(self) -> str:
        return region_for(self.settings, getattr(self.settings, "arn", None))

    async def _get_client(self) -> Any:
        if self._client is not None:
            return self._client
        async with self._lock:
            if self._client is None:
                stack = AsyncExitStack()
                self._client = await stack.enter_async_context(
                    self._session.client(
                        self.service,
                        endpoint_url=self.settings.endpoint_url,
                        region_name=self._region(),
                        config=client_config(self.settings),
                    )
                )
                self._stack = stack
        return self._client

    def _fail(self, what: str, exc: BaseException) -> DestinationError:
        return DestinationError(f"{self.service} destination {what}: {describe(exc)}")

    async def aclose(self) -> None:
        stack, self._stack = self._stack, None
        self._client = None
        if stack is not None:
            await stack.aclose()


class SQSDestinationSettings(AwsSettings):
    arn: str | None = None
    """``arn:aws:sqs:REGION:ACCOUNT:NAME``; or give ``queue_url``."""
    queue_url: str | None = None

    @model_validator(mode="after")
    def _one_target(self) -> SQSDestinationSettings:
        if (self.arn is None) == (self.queue_url is None):
            raise ValueError("set either arn (arn:aws:sqs:REGION:ACCOUNT:NAME) or queue_url")
        if self.arn is not None:
            parse_arn(self.arn, "sqs")
        return self


class SQSDestination(_AwsDestination):
    """Sends each record as one SQS message (SendMessage)."""

    Settings: ClassVar[type[PluginSettings]] = SQSDestinationSettings
    service = "sqs"

    def __init__(self, settings: SQSDestinationSettings, context: DestinationContext) -> None:
        super().__init__(settings, context)
        self._url: str | None = settings.queue_url

    @classmethod
    def from_target(
        cls, target: str, source: PluginSettings | None = None
    ) -> SQSDestinationSettings:
        if target.startswith(("http://", "https://")):
            return SQSDestinationSettings(queue_url=target, **_inherit(source))
        return SQSDestinationSettings(arn=target, **_inherit(source))

    async def _queue_url(self, client: Any) -> str:
        if self._url is None:
            _, account, name = parse_arn(self.settings.arn, "sqs")
            try:
                response = await client.get_queue_url(
                    QueueName=name, QueueOwnerAWSAccountId=account
                )
            except AWS_ERRORS as e:
                raise self._fail(f"{self.settings.arn}: cannot find the queue", e) from e
            self._url = str(response["QueueUrl"])
        return self._url

    async def send(self, record: Mapping[str, Any]) -> None:
        client = await self._get_client()
        url = await self._queue_url(client)
        body = fit_message(record).decode()
        kwargs: dict[str, Any] = {"QueueUrl": url, "MessageBody": body}
        if url.endswith(".fifo"):
            kwargs["MessageGroupId"] = self.context.mapping_name or "router"
            kwargs["MessageDeduplicationId"] = hashlib.sha256(body.encode()).hexdigest()
        try:
            await client.send_message(**kwargs)
        except AWS_ERRORS as e:
            raise self._fail(f"{self.settings.arn or url}: SendMessage failed", e) from e


class SNSDestinationSettings(AwsSettings):
    arn: str
    """``arn:aws:sns:REGION:ACCOUNT:NAME``."""

    @model_validator(mode="after")
    def _valid_arn(self) -> SNSDestinationSettings:
        parse_arn(self.arn, "sns")
        return self


class SNSDestination(_AwsDestination):
    """Publishes each record to an SNS topic."""

    Settings: ClassVar[type[PluginSettings]] = SNSDestinationSettings
    service = "sns"

    @classmethod
    def from_target(
        cls, target: str, source: PluginSettings | None = None
    ) -> SNSDestinationSettings:
        return SNSDestinationSettings(arn=target, **_inherit(source))

    async def send(self, record: Mapping[str, Any]) -> None:
        client = await self._get_client()
        body = fit_message(record).decode()
        kwargs: dict[str, Any] = {"TopicArn": self.settings.arn, "Message": body}
        if self.settings.arn.endswith(".fifo"):
            kwargs["MessageGroupId"] = self.context.mapping_name or "router"
            kwargs["MessageDeduplicationId"] = hashlib.sha256(body.encode()).hexdigest()
        try:
            await client.publish(**kwargs)
        except AWS_ERRORS as e:
            raise self._fail(f"{self.settings.arn}: Publish failed", e) from e


class S3DestinationSettings(AwsSettings):
    arn: str | None = None
    """``arn:aws:s3:::BUCKET``; or give ``bucket``."""
    bucket: str | None = None

    @model_validator(mode="after")
    def _one_target(self) -> S3DestinationSettings:
        if (self.arn is None) == (self.bucket is None):
            raise ValueError("set either arn (arn:aws:s3:::BUCKET) or bucket")
        if self.arn is not None:
            _, _, resource = parse_arn(self.arn, "s3")
            if not resource or "/" in resource:
                raise ValueError(f"not a bucket ARN (arn:aws:s3:::BUCKET): {self.arn!r}")
        return self

    @property
    def bucket_name(self) -> str:
        if self.bucket is not None:
            return self.bucket
        assert self.arn is not None
        return parse_arn(self.arn, "s3")[2]


def shard_of(record: Mapping[str, Any]) -> str | None:
    """The ``<shardID>`` part of an event source mapping's S3 key: the shard of a Kinesis or
    DynamoDB batch, ``topic-partition`` of a Kafka batch; None for asynchronous records."""
    for key in ("KinesisBatchInfo", "DDBStreamBatchInfo"):
        info = record.get(key)
        if isinstance(info, Mapping) and info.get("shardId"):
            return str(info["shardId"])
    kafka = record.get("KafkaBatchInfo")
    if isinstance(kafka, Mapping):
        infos = kafka.get("recordsInfo")
        if isinstance(infos, Mapping) and infos:
            return str(next(iter(infos)))
        return "kafka"
    if "requestPayload" in record:
        return None
    return "batch"


def object_key(record: Mapping[str, Any], mapping_uuid: str, function: str, now: datetime) -> str:
    stamp = now.astimezone(UTC)
    day = stamp.strftime("%Y/%m/%d")
    name = f"{stamp.strftime('%Y-%m-%dT%H.%M.%S')}-{uuid.uuid4()}"
    shard = shard_of(record)
    if shard is None:
        return f"aws/lambda/async/{function}/{day}/{name}"
    return f"aws/lambda/{mapping_uuid}/{shard}/{day}/{name}"


class S3Destination(_AwsDestination):
    """Writes each record as one JSON object (PutObject), under AWS's key layout."""

    Settings: ClassVar[type[PluginSettings]] = S3DestinationSettings
    service = "s3"

    @classmethod
    def from_target(
        cls, target: str, source: PluginSettings | None = None
    ) -> S3DestinationSettings:
        return S3DestinationSettings(arn=target, **_inherit(source, region=True))

    async def send(self, record: Mapping[str, Any]) -> None:
        client = await self._get_client()
        bucket = self.settings.bucket_name
        key = object_key(
            record, self.context.mapping_uuid, self.context.function_name, datetime.now(UTC)
        )
        try:
            await client.put_object(
                Bucket=bucket,
                Key=key,
                Body=orjson.dumps(record),
                ContentType="application/json",
            )
        except AWS_ERRORS as e:
            raise self._fail(f"bucket {bucket}: PutObject failed", e) from e


KINESIS_RECORD_LIMIT = 1024 * 1024
"""Kinesis's limit on one record's data plus partition key (bytes)."""


class KinesisDestinationSettings(AwsSettings):
    arn: str = Field(validation_alias=AliasChoices("arn", "stream_arn", "StreamArn"))
    """``arn:aws:kinesis:REGION:ACCOUNT:stream/NAME``."""
    partition_key: str | None = None
    """Partition key of every record put; default: the record's request id, which spreads
    records over the stream's shards."""

    @model_validator(mode="after")
    def _valid_arn(self) -> KinesisDestinationSettings:
        _, _, resource = parse_arn(self.arn, "kinesis")
        if not resource.startswith("stream/"):
            raise ValueError("arn must name a stream: arn:aws:kinesis:REGION:ACCOUNT:stream/NAME")
        return self


class KinesisDestination(_AwsDestination):
    """Puts each record into a Kinesis data stream (PutRecords), as JSON; a record over
    1 MiB goes without its payloads (``payloadOmitted``)."""

    Settings: ClassVar[type[PluginSettings]] = KinesisDestinationSettings
    service = "kinesis"

    @classmethod
    def from_target(
        cls, target: str, source: PluginSettings | None = None
    ) -> KinesisDestinationSettings:
        return KinesisDestinationSettings(arn=target, **_inherit(source))

    async def send(self, record: Mapping[str, Any]) -> None:
        client = await self._get_client()
        settings: KinesisDestinationSettings = self.settings
        key = settings.partition_key
        if key is None:
            context = record.get("requestContext")
            request = context.get("requestId") if isinstance(context, Mapping) else None
            key = str(request or uuid.uuid4())
        data = fit_message(record, KINESIS_RECORD_LIMIT - len(key.encode()))
        try:
            response = await client.put_records(
                StreamARN=settings.arn, Records=[{"Data": data, "PartitionKey": key}]
            )
        except AWS_ERRORS as e:
            raise self._fail(f"{settings.arn}: PutRecords failed", e) from e
        if response.get("FailedRecordCount"):
            entry = (response.get("Records") or [{}])[0]
            raise DestinationError(
                f"kinesis destination {settings.arn}: record refused: "
                f"{entry.get('ErrorCode', '')}: {entry.get('ErrorMessage', '')}"
            )
