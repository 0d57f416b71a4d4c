"""What the Kafka connectors take from aiokafka, imported where they run: the sources'
and destinations' classes and settings import without it (``router validate`` and
``router schema`` on an installation without the ``kafka`` extra)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
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
