"""The Source contract for the sqs source against the moto server over HTTP: a standard
queue and a FIFO queue (one lane per message group)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Hashable, Sequence
from typing import Any

import pytest

from connectors.aws.sqs import SQSSettings, SQSSource
from router.abc import Source, SourceContext, Store
from router.models import MappingConfig, Record, SourceSpec
from router.store import SQLStore
from tests.aws.util import make_queue
from tests.contracts.source_contract import Item, SourceAdapter, SourceContract
from tests.fixtures.aws import REGION, unique

pytestmark = pytest.mark.aws

VISIBILITY = 2
"""The queues' visibility timeout: how soon a message that was not deleted comes again."""


class SQSAdapter(SourceAdapter):
    ordered = False
    redelivery = VISIBILITY + 5.0
    quiet = VISIBILITY + 1.0

    def __init__(self, aws: Any, store: Store, *, fifo: bool = False) -> None:
        self.aws = aws
        self.store = store
        self.fifo = fifo
        self.url = ""
        self.uuid = str(uuid.uuid4())
        self.serial = 0

    async def setup(self) -> None:
        async with self.aws.client("sqs") as sqs:
            self.url = await make_queue(
                sqs, unique("contract"), visibility=VISIBILITY, fifo=self.fifo
            )

    async def cleanup(self) -> None:
        async with self.aws.client("sqs") as sqs:
            await sqs.delete_queue(QueueUrl=self.url)

    async def produce(self, items: Sequence[Item]) -> None:
        async with self.aws.client("sqs") as sqs:
            for lane, body in items:
                extra: dict[str, str] = {}
                if self.fifo:
                    self.serial += 1
                    extra = {"MessageGroupId": lane, "MessageDeduplicationId": str(self.serial)}
                await sqs.send_message(QueueUrl=self.url, MessageBody=body, **extra)

    def source(self, *, replica: str = "replica-1") -> Source:
        # One receiver: racing receives on moto now and then hand out one message twice.
        settings = SQSSettings(
            queue_url=self.url, endpoint_url=self.aws.endpoint, region=REGION, receivers=1
        )
        mapping = MappingConfig(
            name="contract",
            function="fn",
            source=SourceSpec(type="sqs", settings=settings),
            uuid=self.uuid,
        )
        context = SourceContext(mapping=mapping, store=self.store, replica_id=replica)
        return SQSSource(settings, context)

    def body(self, record: Record) -> str:
        return str(record.data["body"])


class FIFOAdapter(SQSAdapter):
    ordered = True

    def __init__(self, aws: Any, store: Store) -> None:
        super().__init__(aws, store, fifo=True)

    def lane(self, record: Record) -> Hashable:
        return record.lane


class TestSQSStandardSource(SourceContract):
    @pytest.fixture
    async def adapter(self, aws: Any, sqlite_store: SQLStore) -> AsyncIterator[SourceAdapter]:
        adapter = SQSAdapter(aws, sqlite_store)
        await adapter.setup()
        try:
            yield adapter
        finally:
            await adapter.cleanup()


class TestSQSFIFOSource(SourceContract):
    @pytest.fixture
    async def adapter(self, aws: Any, sqlite_store: SQLStore) -> AsyncIterator[SourceAdapter]:
        adapter = FIFOAdapter(aws, sqlite_store)
        await adapter.setup()
        try:
            yield adapter
        finally:
            await adapter.cleanup()
