"""The Source contract for the kafka source against a real broker (tansu): one topic of two
partitions per test, lanes ``a`` and ``b`` produced into partitions 0 and 1."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import pytest

from connectors.kafka.settings import KafkaSourceSettings
from connectors.kafka.source import KafkaSource
from router.abc import Source, SourceContext, Store
from router.models import MappingConfig, Record, SourceSpec
from router.store import SQLStore
from tests.contracts.source_contract import Item, SourceAdapter, SourceContract
from tests.fixtures.kafka import TopicFactory
from tests.kafka.helpers import FAST, produce

pytestmark = pytest.mark.kafka

PARTITIONS = {"a": 0, "b": 1}


class KafkaAdapter(SourceAdapter):
    revokes = True
    redelivery = 20.0

    def __init__(self, broker: str, topic: str, store: Store) -> None:
        self.broker = broker
        self.topic = topic
        self.store = store
        self.uuid = str(uuid.uuid4())
        self.group = f"contract-{uuid.uuid4().hex[:8]}"

    async def produce(self, items: Sequence[Item]) -> None:
        for lane, body in items:
            await produce(self.broker, self.topic, [body.encode()], partition=PARTITIONS[lane])

    def source(self, *, replica: str = "replica-1") -> Source:
        settings = KafkaSourceSettings.model_validate(
            {
                "bootstrap_servers": [self.broker],
                "topics": [self.topic],
                "consumer_group_id": self.group,
                **FAST,
            }
        )
        mapping = MappingConfig(
            name="contract",
            function="fn",
            source=SourceSpec(type="kafka", settings=settings),
            uuid=self.uuid,
            starting_position="TRIM_HORIZON",
        )
        context = SourceContext(mapping=mapping, store=self.store, replica_id=replica)
        return KafkaSource(settings, context)

    def body(self, record: Record) -> str:
        return bytes(record.data.value).decode()


class TestKafkaSource(SourceContract):
    @pytest.fixture
    async def adapter(
        self, kafka_broker: str, make_topic: TopicFactory, sqlite_store: SQLStore
    ) -> SourceAdapter:
        return KafkaAdapter(kafka_broker, await make_topic(2), sqlite_store)
