"""Shared helpers of the Kafka tests: build a source for a mapping, produce records."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from connectors.kafka.settings import KafkaSourceSettings
from connectors.kafka.source import KafkaSource
from router.abc import SourceContext, Store
from router.models import MappingConfig, SourceSpec
from tests.kafka.sink import RecordingSink

# Fast group membership: the tansu broker with default timeouts makes joins slow (it holds
# a join for half the session timeout, a static member's 6 s more). Static membership has
# tests of its own (test_membership.py, test_crash.py).
FAST = {
    "session_timeout_ms": 1000,
    "heartbeat_interval_ms": 100,
    "revoke_timeout": 5.0,
    "static_membership": False,
}

Message = tuple[bytes | None, bytes | None, list[tuple[str, bytes]] | None]


def make_source(
    store: Store,
    broker: str,
    topics: Sequence[str],
    *,
    group: str | None = None,
    position: str | None = "TRIM_HORIZON",
    timestamp: datetime | None = None,
    parallelization_factor: int = 1,
    uuid_: str | None = None,
    replica: str = "test",
    **overrides: Any,
) -> KafkaSource:
    settings = KafkaSourceSettings(
        bootstrap_servers=[broker],
        topics=list(topics),
        consumer_group_id=group or f"g-{uuid.uuid4().hex[:8]}",
        **{**FAST, **overrides},
    )
    mapping = MappingConfig(
        name="kafka-test",
        function="echo",
        source=SourceSpec(type="kafka", settings=settings),
        uuid=uuid_ or str(uuid.uuid4()),
        starting_position=position,
        starting_position_timestamp=timestamp,
        parallelization_factor=parallelization_factor,
    )
    context = SourceContext(mapping=mapping, store=store, replica_id=replica)
    return KafkaSource(settings, context)


@contextlib.asynccontextmanager
async def running(source: KafkaSource, sink: RecordingSink) -> AsyncIterator[asyncio.Task[None]]:
    """Run ``source`` into ``sink`` for the block; cancel and close it afterwards."""
    task = asyncio.create_task(source.run(sink))
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await source.aclose()


async def produce(
    broker: str,
    topic: str,
    messages: Iterable[Message | bytes],
    *,
    partition: int | None = None,
    timestamp_ms: int | None = None,
    one_by_one: bool = False,
) -> None:
    """Produce ``messages`` (values, or (key, value, headers)). ``one_by_one`` sends each
    in its own batch: the test broker's end offset (and so LATEST) is wrong after a
    multi-record batch (it is the last batch's base offset + 1)."""
    producer = AIOKafkaProducer(bootstrap_servers=broker, acks="all", enable_idempotence=False)
    await producer.start()
    try:
        futures = []
        for message in messages:
            key, value, headers = (None, message, None) if isinstance(message, bytes) else message
            send = producer.send_and_wait if one_by_one else producer.send
            futures.append(
                await send(
                    topic,
                    value=value,
                    key=key,
                    headers=headers,
                    partition=partition,
                    timestamp_ms=timestamp_ms,
                )
            )
        if not one_by_one:
            await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def committed(broker: str, group: str, topic: str, partitions: int = 1) -> list[int | None]:
    """The group's committed offsets of ``topic``'s partitions (the admin client's
    list_consumer_group_offsets does not work with this broker)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=broker, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        return [await consumer.committed(TopicPartition(topic, p)) for p in range(partitions)]
    finally:
        await consumer.stop()


def offsets(records: Iterable[Any]) -> list[int]:
    return [r.data.offset for r in records]
