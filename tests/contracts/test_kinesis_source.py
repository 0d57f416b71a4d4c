"""The Source contract for the kinesis source against the moto server over HTTP: a stream
of two shards, the contract's lanes as partition keys."""

from __future__ import annotations

import base64
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from connectors.aws.kinesis import KinesisSettings, KinesisSource
from router.abc import Source, SourceContext, Store
from router.models import MappingConfig, Record, SourceSpec
from router.store import SQLStore
from tests.aws.streams import make_stream, put
from tests.contracts.source_contract import Item, SourceAdapter, SourceContract
from tests.fixtures.aws import REGION

pytestmark = pytest.mark.aws


class KinesisAdapter(SourceAdapter):
    revokes = True
    redelivery = 10.0
    quiet = 1.5

    def __init__(self, aws: Any, store: Store) -> None:
        self.aws = aws
        self.store = store
        self.arn = ""
        self.uuid = str(uuid.uuid4())

    async def setup(self) -> None:
        async with self.aws.client("kinesis") as kinesis:
            self.arn = await make_stream(kinesis, shards=2, prefix="contract")

    async def cleanup(self) -> None:
        async with self.aws.client("kinesis") as kinesis:
            await kinesis.delete_stream(StreamARN=self.arn)

    async def produce(self, items: Sequence[Item]) -> None:
        async with self.aws.client("kinesis") as kinesis:
            await put(kinesis, self.arn, list(items))

    def source(self, *, replica: str = "replica-1") -> Source:
        settings = KinesisSettings(
            stream_arn=self.arn,
            endpoint_url=self.aws.endpoint,
            region=REGION,
            poll_interval=0.1,
            checkpoint_interval=0.0,
            shard_sync_interval=0.5,
            lease_duration=1.5,
        )
        mapping = MappingConfig(
            name="contract",
            function="fn",
            source=SourceSpec(type="kinesis", settings=settings),
            uuid=self.uuid,
            starting_position="TRIM_HORIZON",
        )
        context = SourceContext(mapping=mapping, store=self.store, replica_id=replica)
        return KinesisSource(settings, context)

    def body(self, record: Record) -> str:
        return base64.b64decode(record.data["kinesis"]["data"]).decode()


class TestKinesisSource(SourceContract):
    @pytest.fixture
    async def adapter(self, aws: Any, sqlite_store: SQLStore) -> AsyncIterator[SourceAdapter]:
        adapter = KinesisAdapter(aws, sqlite_store)
        await adapter.setup()
        try:
            yield adapter
        finally:
            await adapter.cleanup()
