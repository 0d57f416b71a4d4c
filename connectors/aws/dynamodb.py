"""The ``dynamodb`` source: a DynamoDB table's stream (DynamoDB Streams), as Lambda's
DynamoDB event source mapping reads it (shared shard logic in
:mod:`connectors.aws.streams`).

Records are ``aws:dynamodb`` records exactly as Lambda delivers them (attribute values in
DynamoDB JSON, binary values base64); ``itemIdentifier`` in a partial batch response is the
sequence number. Filter patterns see the record as it is (``eventName``, ``dynamodb``...).
"""

from __future__ import annotations

import asyncio
import logging
from binascii import b2a_base64
from collections.abc import Hashable, Sequence
from typing import Any, ClassVar

import orjson
from pydantic import AliasChoices, Field, field_validator, model_validator

from connectors.aws.common import (
    AWS_ERRORS,
    client_config,
    describe,
    error_code,
    parse_arn,
    region_for,
)
from connectors.aws.kinesis import stream_batch_info
from connectors.aws.streams.shards import Shard, Start
from connectors.aws.streams.source import ReadResult, StreamSettings, StreamSource
from router.abc import SourceContext, SourceTraits
from router.errors import SourceError
from router.filters.view import record_view
from router.models import Record, SourceKind

logger = logging.getLogger(__name__)

GET_RECORDS_LIMIT = 1000
"""DynamoDB Streams returns at most 1,000 records per GetRecords call."""

# JSON overhead of one aws:dynamodb record besides its keys, images and ARN.
_RECORD_OVERHEAD = 300

TABLE_TRAITS = SourceTraits(
    kind=SourceKind.STREAM,
    filter_view=record_view,
    batch_size_default=100,
    batch_size_max=10_000,
    window_default=0.0,
    window_max=300.0,
    starting_positions=("TRIM_HORIZON", "LATEST"),
    starting_position_default=None,
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
            "tumbling_window",
            "starting_position",
        }
    ),
)


class DynamoDBSettings(StreamSettings):
    """``source: {type: dynamodb, table_name: ...}`` or ``{type: dynamodb, stream_arn: ...}``."""

    table_name: str | None = Field(
        default=None, validation_alias=AliasChoices("table_name", "TableName")
    )
    """The table whose latest stream is read (found with DescribeTable at start)."""
    stream_arn: str | None = Field(
        default=None,
        validation_alias=AliasChoices("stream_arn", "StreamArn", "EventSourceArn", "Stream"),
    )
    """``arn:aws:dynamodb:REGION:ACCOUNT:table/NAME/stream/LABEL``."""

    @field_validator("stream_arn")
    @classmethod
    def _looks_like_a_stream_arn(cls, value: str | None) -> str | None:
        if value is None:
            return value
        try:
            _, _, resource = parse_arn(value, "dynamodb")
        except ValueError as e:
            raise ValueError(
                f"{e}; e.g. arn:aws:dynamodb:us-east-1:123456789012:table/orders/stream/"
                "2024-01-01T00:00:00.000"
            ) from None
        if "/stream/" not in resource:
            raise ValueError(
                "stream_arn must name a table's stream: "
                "arn:aws:dynamodb:REGION:ACCOUNT:table/NAME/stream/LABEL"
            )
        return value

    @model_validator(mode="after")
    def _one_of_table_or_stream(self) -> DynamoDBSettings:
        if (self.table_name is None) == (self.stream_arn is None):
            raise ValueError("set table_name or stream_arn (one of them)")
        return self


def lambda_value(value: Any) -> Any:
    """An attribute value as Lambda puts it in the event: DynamoDB JSON with binary values
    (which botocore gives as bytes) in base64."""
    if isinstance(value, dict):
        return {k: _typed(k, v) for k, v in value.items()}
    return value


def _typed(kind: str, value: Any) -> Any:
    if kind == "B" and isinstance(value, bytes | bytearray):
        return b2a_base64(value, newline=False).decode()
    if kind == "BS":
        return [
            b2a_base64(v, newline=False).decode() if isinstance(v, bytes | bytearray) else v
            for v in value
        ]
    if kind == "M":
        return {k: lambda_value(v) for k, v in value.items()}
    if kind == "L":
        return [lambda_value(v) for v in value]
    return value


def lambda_item(item: dict[str, Any]) -> dict[str, Any]:
    return {name: lambda_value(value) for name, value in item.items()}


class DynamoDBSource(StreamSource):
    """Reads one DynamoDB table's stream for one mapping, shard by shard."""

    Settings: ClassVar[type[DynamoDBSettings]] = DynamoDBSettings
    traits: ClassVar[SourceTraits] = TABLE_TRAITS
    service: ClassVar[str] = "dynamodbstreams"

    settings: DynamoDBSettings

    def __init__(self, settings: DynamoDBSettings, context: SourceContext) -> None:
        super().__init__(settings, context)
        self.arn = settings.stream_arn or ""
        self.region = region_for(settings, settings.stream_arn)

    @property
    def where(self) -> str:
        if self.arn:
            return f"dynamodb stream {self.arn}"
        return f"dynamodb table {self.settings.table_name}"

    def _error(self, what: str, e: BaseException) -> SourceError:
        if error_code(e) == "ResourceNotFoundException":
            return SourceError(
                f"{self.where}: it does not exist (check table_name / stream_arn, region and "
                "endpoint_url)"
            )
        return SourceError(f"{self.where}: {what}: {describe(e)}")

    async def open_stream(self) -> None:
        table = self.settings.table_name
        if table is not None and not self.arn:
            self.arn = await self._latest_stream(table)
        try:
            await self.client.describe_stream(StreamArn=self.arn, Limit=1)
        except asyncio.CancelledError:
            raise
        except AWS_ERRORS as e:
            raise self._error("cannot describe the stream", e) from e

    async def _latest_stream(self, table: str) -> str:
        session_client = self._session.client(
            "dynamodb",
            endpoint_url=self.settings.endpoint_url,
            region_name=self.region,
            config=client_config(self.settings, pool=1),
        )
        try:
            async with session_client as dynamodb:
                response = await dynamodb.describe_table(TableName=table)
        except asyncio.CancelledError:
            raise
        except AWS_ERRORS as e:
            raise self._error("cannot describe the table", e) from e
        arn = (response.get("Table") or {}).get("LatestStreamArn")
        if not arn:
            raise SourceError(
                f"{self.where}: the table has no stream; enable one "
                "(StreamSpecification: {StreamEnabled: true, StreamViewType: "
                "NEW_AND_OLD_IMAGES})"
            )
        return str(arn)

    async def list_shards(self) -> list[Shard]:
        shards: list[Shard] = []
        kwargs: dict[str, Any] = {"StreamArn": self.arn}
        try:
            while True:
                response = await self.client.describe_stream(**kwargs)
                description = response.get("StreamDescription") or {}
                for item in description.get("Shards") or ():
                    parent = item.get("ParentShardId")
                    ending = (item.get("SequenceNumberRange") or {}).get("EndingSequenceNumber")
                    shards.append(Shard(item["ShardId"], (parent,) if parent else (), ending))
                last = description.get("LastEvaluatedShardId")
                if not last:
                    return shards
                kwargs = {"StreamArn": self.arn, "ExclusiveStartShardId": last}
        except asyncio.CancelledError:
            raise
        except AWS_ERRORS as e:
            raise self._error("cannot list the shards", e) from e

    async def shard_iterator(self, shard_id: str, start: Start) -> str:
        kwargs: dict[str, Any] = {
            "StreamArn": self.arn,
            "ShardId": shard_id,
            "ShardIteratorType": start.iterator,
        }
        if start.sequence is not None:
            kwargs["SequenceNumber"] = start.sequence
        response = await self.client.get_shard_iterator(**kwargs)
        return str(response["ShardIterator"])

    async def get_records(self, iterator: str, limit: int) -> ReadResult:
        response = await self.client.get_records(
            ShardIterator=iterator, Limit=min(limit, GET_RECORDS_LIMIT)
        )
        return ReadResult(response.get("Records") or [], response.get("NextShardIterator"), None)

    def convert(self, shard_id: str, lanes: Sequence[Hashable], raws: list[Any]) -> list[Record]:
        arn = self.arn
        region = self.region
        slots = len(lanes)
        lane: Hashable = lanes[0]
        out: list[Record] = []
        for raw in raws:
            change = raw["dynamodb"]
            sequence: str = change["SequenceNumber"]
            created = change.get("ApproximateCreationDateTime")
            arrival = float(created) if created is not None else 0.0  # epoch_seconds
            keys = lambda_item(change.get("Keys") or {})
            body: dict[str, Any] = {"ApproximateCreationDateTime": int(arrival), "Keys": keys}
            for image in ("NewImage", "OldImage"):
                if image in change:
                    body[image] = lambda_item(change[image])
            body["SequenceNumber"] = sequence
            body["SizeBytes"] = change.get("SizeBytes", 0)
            body["StreamViewType"] = change.get("StreamViewType", "")
            record: dict[str, Any] = {
                "eventID": raw.get("eventID", ""),
                "eventName": raw.get("eventName", ""),
                "eventVersion": "1.1",
                "eventSource": "aws:dynamodb",
                "awsRegion": raw.get("awsRegion") or region,
                "dynamodb": body,
                "eventSourceARN": arn,
            }
            identity = raw.get("userIdentity")
            if identity:
                record["userIdentity"] = {
                    "type": identity.get("Type", ""),
                    "principalId": identity.get("PrincipalId", ""),
                }
            if slots > 1:
                lane = lanes[self.slot_of(orjson.dumps(keys, option=orjson.OPT_SORT_KEYS))]
            size = _RECORD_OVERHEAD + len(arn) + 2 * int(body["SizeBytes"] or 0)
            out.append(Record(lane, sequence, record, sequence, size, arrival))
        return out

    def batch_info(self, records: Sequence[Record]) -> dict[str, Any]:
        return stream_batch_info(
            "DDBStreamBatchInfo",
            self.arn,
            records,
            lambda r: r.data["dynamodb"]["SequenceNumber"],
        )
