"""The Source contract for the dynamodb source against the moto server over HTTP: a table's
stream, the contract's lanes as item keys (each record a new item)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from connectors.aws.dynamodb import DynamoDBSettings, DynamoDBSource
from router.abc import Source, SourceContext, Store
from router.models import MappingConfig, Record, SourceSpec
from router.store import SQLStore
from tests.aws.test_dynamodb import make_table
from tests.contracts.source_contract import Item, SourceAdapter, SourceContract
from tests.fixtures.aws import REGION

pytestmark = pytest.mark.aws


class DynamoDBAdapter(SourceAdapter):
    redelivery = 10.0
    quiet = 1.5

    def __init__(self, aws: Any, store: Store) -> None:
        self.aws = aws
        self.store = store
        self.table = ""
        self.uuid = str(uuid.uuid4())

    async def setup(self) -> None:
        async with self.aws.client("dynamodb") as dynamodb:
            self.table, _ = await make_table(dynamodb)

    async def cleanup(self) -> None:
        async with self.aws.client("dynamodb") as dynamodb:
            await dynamodb.delete_table(TableName=self.table)

    async def produce(self, items: Sequence[Item]) -> None:
        async with self.aws.client("dynamodb") as dynamodb:
            for lane, body in items:
                await dynamodb.put_item(
                    TableName=self.table, Item={"pk": {"S": body}, "lane": {"S": lane}}
                )

    def source(self, *, replica: str = "replica-1") -> Source:
        settings = DynamoDBSettings(
            table_name=self.table,
            endpoint_url=self.aws.endpoint,
            region=REGION,
            poll_interval=0.1,
            checkpoint_interval=0.0,
        )
        mapping = MappingConfig(
            name="contract",
            function="fn",
            source=SourceSpec(type="dynamodb", settings=settings),
            uuid=self.uuid,
            starting_position="TRIM_HORIZON",
        )
        context = SourceContext(mapping=mapping, store=self.store, replica_id=replica)
        return DynamoDBSource(settings, context)

    def body(self, record: Record) -> str:
        return str(record.data["dynamodb"]["Keys"]["pk"]["S"])


class TestDynamoDBSource(SourceContract):
    @pytest.fixture
    async def adapter(self, aws: Any, sqlite_store: SQLStore) -> AsyncIterator[SourceAdapter]:
        adapter = DynamoDBAdapter(aws, sqlite_store)
        await adapter.setup()
        try:
            yield adapter
        finally:
            await adapter.cleanup()
