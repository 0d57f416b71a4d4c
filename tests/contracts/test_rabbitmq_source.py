"""The Source contract for the rabbitmq source against the real broker on 127.0.0.1:5672: a
queue of its own per test, read unordered (the default) and as one ordered lane."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence

import pytest

from connectors.rabbitmq.settings import RabbitSourceSettings
from connectors.rabbitmq.source import RabbitSource
from router.abc import Source, SourceContext, Store
from router.models import MappingConfig, Record, SourceSpec
from router.store import SQLStore
from tests.contracts.source_contract import Item, SourceAdapter, SourceContract
from tests.fixtures.rabbitmq import Queues
from tests.rabbitmq.helpers import publish


class RabbitAdapter(SourceAdapter):
    ordered = False
    redelivery = 5.0
    """Unacked messages come again as soon as the next consumer connects."""

    def __init__(self, url: str, store: Store, *, ordered: bool = False) -> None:
        self.url = url
        self.store = store
        self.queues = Queues(url)
        self.queue = ""
        self.uuid = str(uuid.uuid4())
        self.in_order = ordered

    async def setup(self) -> None:
        self.queue = await self.queues.new("contract")

    async def cleanup(self) -> None:
        await self.queues.delete_all()

    async def produce(self, items: Sequence[Item]) -> None:
        await publish(self.queue, [body for _, body in items])

    def source(self, *, replica: str = "replica-1") -> Source:
        settings = RabbitSourceSettings.model_validate(
            {"url": self.url, "queues": [self.queue], "ordered": self.in_order}
        )
        mapping = MappingConfig(
            name="contract",
            function="fn",
            source=SourceSpec(type="rabbitmq", settings=settings),
            uuid=self.uuid,
        )
        context = SourceContext(mapping=mapping, store=self.store, replica_id=replica)
        return RabbitSource(settings, context)

    def body(self, record: Record) -> str:
        import base64

        return base64.b64decode(record.data["data"]).decode()


class OrderedRabbitAdapter(RabbitAdapter):
    ordered = True

    def __init__(self, url: str, store: Store) -> None:
        super().__init__(url, store, ordered=True)


class TestRabbitSource(SourceContract):
    @pytest.fixture
    async def adapter(
        self, rabbitmq_url: str, sqlite_store: SQLStore
    ) -> AsyncIterator[SourceAdapter]:
        adapter = RabbitAdapter(rabbitmq_url, sqlite_store)
        await adapter.setup()
        try:
            yield adapter
        finally:
            await adapter.cleanup()


class TestOrderedRabbitSource(SourceContract):
    @pytest.fixture
    async def adapter(
        self, rabbitmq_url: str, sqlite_store: SQLStore
    ) -> AsyncIterator[SourceAdapter]:
        adapter = OrderedRabbitAdapter(rabbitmq_url, sqlite_store)
        await adapter.setup()
        try:
            yield adapter
        finally:
            await adapter.cleanup()
