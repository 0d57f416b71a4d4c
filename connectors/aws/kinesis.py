"""The ``kinesis`` source: Amazon Kinesis Data Streams, as Lambda's Kinesis event source
mapping reads them (shared shard logic in :mod:`connectors.aws.streams`).

Records are ``aws:kinesis`` records exactly as Lambda delivers them; ``itemIdentifier`` in a
partial batch response is the sequence number. Filter patterns see the ``kinesis`` object
with ``data`` base64- and JSON-decoded (data that is not JSON matches no JSON pattern).
"""

from __future__ import annotations

import asyncio
import logging
from binascii import b2a_base64
from collections.abc import Hashable, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar

from pydantic import AliasChoices, Field, field_validator

from connectors.aws.common import (
    AWS_ERRORS,
    describe,
    error_code,
    parse_arn,
    region_for,
)
from connectors.aws.streams.shards import AT_TIMESTAMP, Shard, Start
from connectors.aws.streams.source import ReadResult, StreamSettings, StreamSource
from router.abc import SourceContext, SourceTraits
from router.errors import SourceError
from router.filters.view import kinesis_view
from router.models import Record, SourceKind

logger = logging.getLogger(__name__)

# JSON overhead of one aws:kinesis record besides data, key and ARNs.
_RECORD_OVERHEAD = 330

STREAM_TRAITS = SourceTraits(
    kind=SourceKind.STREAM,
    filter_view=kinesis_view,
    batch_size_default=100,
    batch_size_max=10_000,
    window_default=0.0,
    window_max=300.0,
    starting_positions=("TRIM_HORIZON", "LATEST", "AT_TIMESTAMP"),
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
            "starting_position_timestamp",
        }
    ),
)


class KinesisSettings(StreamSettings):
    """``source: {type: kinesis, stream_arn: ..., endpoint_url: ..., region: ...}``."""

    stream_arn: str = Field(
        validation_alias=AliasChoices("stream_arn", "StreamArn", "EventSourceArn", "Stream")
    )
    """``arn:aws:kinesis:REGION:ACCOUNT:stream/NAME`` (SAM: ``Stream``, CloudFormation:
    ``EventSourceArn``)."""
    invoke_identity_arn: str | None = None
    """``invokeIdentityArn`` of the records (Lambda puts the function's execution role
    there). Default: ``arn:aws:iam::ACCOUNT:role/event-router``."""

    @field_validator("stream_arn")
    @classmethod
    def _looks_like_a_stream_arn(cls, value: str) -> str:
        try:
            _, _, resource = parse_arn(value, "kinesis")
        except ValueError as e:
            raise ValueError(
                f"{e}; e.g. arn:aws:kinesis:us-east-1:123456789012:stream/clicks"
            ) from None
        if not resource.startswith("stream/") or resource == "stream/":
            raise ValueError(
                "stream_arn must name a stream: arn:aws:kinesis:REGION:ACCOUNT:stream/NAME"
            )
        return value


def iso_ms(epoch: float) -> str:
    """``2019-11-14T00:38:04.835Z``, as Lambda writes times in ``*BatchInfo``."""
    when = datetime.fromtimestamp(epoch, tz=UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def stream_batch_info(
    name: str, stream_arn: str, records: Sequence[Record], sequence: Any
) -> dict[str, Any]:
    """``KinesisBatchInfo`` / ``DDBStreamBatchInfo`` of an on-failure destination record."""
    first, last = records[0], records[-1]
    return {
        name: {
            "shardId": first.lane[0],  # type: ignore[index]
            "startSequenceNumber": sequence(first),
            "endSequenceNumber": sequence(last),
            "approximateArrivalOfFirstRecord": iso_ms(first.arrival),
            "approximateArrivalOfLastRecord": iso_ms(last.arrival),
            "batchSize": len(records),
            "streamArn": stream_arn,
        }
    }


class KinesisSource(StreamSource):
    """Reads one Kinesis data stream for one mapping, shard by shard."""

    Settings: ClassVar[type[KinesisSettings]] = KinesisSettings
    traits: ClassVar[SourceTraits] = STREAM_TRAITS
    service: ClassVar[str] = "kinesis"
    pins_latest: ClassVar[bool] = True

    settings: KinesisSettings

    def __init__(self, settings: KinesisSettings, context: SourceContext) -> None:
        super().__init__(settings, context)
        self.arn = settings.stream_arn
        self.region = region_for(settings, settings.stream_arn)
        _, account, _ = parse_arn(settings.stream_arn, "kinesis")
        self._identity = settings.invoke_identity_arn or f"arn:aws:iam::{account}:role/event-router"

    @property
    def where(self) -> str:
        return f"kinesis {self.arn}"

    def _error(self, what: str, e: BaseException) -> SourceError:
        if error_code(e) == "ResourceNotFoundException":
            return SourceError(
                f"{self.where}: the stream does not exist (check stream_arn, region and "
                "endpoint_url)"
            )
        return SourceError(f"{self.where}: {what}: {describe(e)}")

    async def open_stream(self) -> None:
        try:
            await self.client.describe_stream_summary(StreamARN=self.arn)
        except asyncio.CancelledError:
            raise
        except AWS_ERRORS as e:
            raise self._error("cannot describe the stream", e) from e

    async def list_shards(self) -> list[Shard]:
        shards: list[Shard] = []
        kwargs: dict[str, Any] = {"StreamARN": self.arn}
        try:
            while True:
                response = await self.client.list_shards(**kwargs)
                for item in response.get("Shards") or ():
                    parents = tuple(
                        p
                        for p in (item.get("ParentShardId"), item.get("AdjacentParentShardId"))
                        if p
                    )
                    ending = (item.get("SequenceNumberRange") or {}).get("EndingSequenceNumber")
                    shards.append(Shard(item["ShardId"], parents, ending))
                token = response.get("NextToken")
                if not token:
                    return shards
                kwargs = {"NextToken": token}
        except asyncio.CancelledError:
            raise
        except AWS_ERRORS as e:
            raise self._error("cannot list the shards", e) from e

    async def shard_iterator(self, shard_id: str, start: Start) -> str:
        kwargs: dict[str, Any] = {
            "StreamARN": self.arn,
            "ShardId": shard_id,
            "ShardIteratorType": start.iterator,
        }
        if start.sequence is not None:
            kwargs["StartingSequenceNumber"] = start.sequence
        if start.iterator == AT_TIMESTAMP and start.timestamp is not None:
            kwargs["Timestamp"] = datetime.fromtimestamp(start.timestamp, tz=UTC)
        response = await self.client.get_shard_iterator(**kwargs)
        return str(response["ShardIterator"])

    async def get_records(self, iterator: str, limit: int) -> ReadResult:
        # StreamARN is optional for AWS; moto needs it to find the stream.
        response = await self.client.get_records(
            ShardIterator=iterator, Limit=limit, StreamARN=self.arn
        )
        return ReadResult(
            response.get("Records") or [],
            response.get("NextShardIterator"),
            response.get("MillisBehindLatest"),
        )

    def convert(self, shard_id: str, lanes: Sequence[Hashable], raws: list[Any]) -> list[Record]:
        b64 = b2a_base64
        arn = self.arn
        region = self.region
        identity = self._identity
        base_size = _RECORD_OVERHEAD + len(arn) + len(identity) + len(shard_id)
        slots = len(lanes)
        slot_of = self.slot_of
        lane: Hashable = lanes[0]
        out: list[Record] = []
        append = out.append
        for raw in raws:
            sequence: str = raw["SequenceNumber"]
            key: str = raw["PartitionKey"]
            data: bytes = raw["Data"]
            arrival = round(raw["ApproximateArrivalTimestamp"], 3)  # epoch_seconds
            if slots > 1:
                lane = lanes[slot_of(key.encode())]
            record = {
                "kinesis": {
                    "kinesisSchemaVersion": "1.0",
                    "partitionKey": key,
                    "sequenceNumber": sequence,
                    "data": b64(data, newline=False).decode(),
                    "approximateArrivalTimestamp": arrival,
                },
                "eventSource": "aws:kinesis",
                "eventVersion": "1.0",
                "eventID": f"{shard_id}:{sequence}",
                "eventName": "aws:kinesis:record",
                "invokeIdentityArn": identity,
                "awsRegion": region,
                "eventSourceARN": arn,
            }
            size = base_size + len(data) * 4 // 3 + len(key) + 2 * len(sequence)
            append(Record(lane, sequence, record, sequence, size, arrival))
        return out

    def batch_info(self, records: Sequence[Record]) -> dict[str, Any]:
        return stream_batch_info(
            "KinesisBatchInfo", self.arn, records, lambda r: r.data["kinesis"]["sequenceNumber"]
        )
