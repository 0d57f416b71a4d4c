"""What the Kafka connectors take from aiokafka, imported where they run: the sources'
and destinations' classes and settings import without it (``router validate`` and
``router schema`` on an installation without the ``kafka`` extra)."""

from __future__ import annotations

import collections
from collections.abc import Awaitable, Callable, Collection
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.consumer.fetcher import PartitionRecords
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from aiokafka.structs import OffsetAndMetadata

__all__ = [
    "AIOKafkaConsumer",
    "AIOKafkaProducer",
    "CommitFailedError",
    "IllegalStateError",
    "KafkaError",
    "OffsetAndMetadata",
    "Rebalance",
    "TopicPartition",
    "hand_out_parsed_records",
]

Callback = Callable[[Collection[TopicPartition]], Awaitable[None]]


class Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    """Hands a consumer group's rebalance to the source's callbacks."""

    def __init__(self, revoked: Callback, assigned: Callback) -> None:
        self._revoked = revoked
        self._assigned = assigned

    async def on_partitions_revoked(self, revoked: Collection[TopicPartition]) -> None:
        await self._revoked(revoked)

    async def on_partitions_assigned(self, assigned: Collection[TopicPartition]) -> None:
        await self._assigned(assigned)


def _parsed(_tp: TopicPartition, record: Any) -> Any:
    return record


class _HandingOutParsed(collections.OrderedDict[TopicPartition, Any]):
    """A fetcher's buffer of fetched partitions whose records are handed out as parsed."""

    def __setitem__(self, tp: TopicPartition, result: Any) -> None:
        partition_records = getattr(result, "_partition_records", None)
        if isinstance(partition_records, PartitionRecords):
            # Called for every record in place of the method building its ConsumerRecord.
            partition_records._consumer_record = _parsed
        super().__setitem__(tp, result)


def hand_out_parsed_records(consumer: AIOKafkaConsumer) -> bool:
    """Make a started ``consumer``'s ``getmany`` hand out the records aiokafka parsed from
    the fetched bytes as they are, without a ``ConsumerRecord`` for each (an 11-field Python
    object: nearly half of what a bare fetch loop spends a record). A parsed record has
    ``offset``, ``timestamp``, ``timestamp_type``, ``key``, ``value`` and ``headers`` (a
    list), not ``topic`` and ``partition``: the caller knows those from the partition.

    aiokafka has no option for this: the buffer of the consumer's fetcher is wrapped, so only
    this consumer changes. False, and nothing changed, when the consumer has a key or value
    deserializer or this aiokafka is not laid out as expected; the consumer then hands out
    ``ConsumerRecord``s, which have the same fields. Partitions fetched before the call may
    come as ``ConsumerRecord``s too."""
    fetcher = getattr(consumer, "_fetcher", None)
    fetched = getattr(fetcher, "_records", None)
    if (
        type(fetched) is not collections.OrderedDict
        or getattr(fetcher, "_key_deserializer", True) is not None
        or getattr(fetcher, "_value_deserializer", True) is not None
        or not callable(getattr(PartitionRecords, "_consumer_record", None))
    ):
        return False
    fetcher._records = _HandingOutParsed(fetched)  # type: ignore[union-attr]
    return True
