"""The Source contract for the nats source against the real server: lanes ``a`` and ``b``
are two subjects of one stream, read by one durable consumer."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import nats
import pytest

from connectors.nats.settings import NatsSourceSettings
from connectors.nats.source import NatsSource
from router.abc import Source, SourceContext, Store
from router.models import MappingConfig, Record, SourceSpec
from router.store import SQLStore
from tests.contracts.source_contract import Item, SourceAdapter, SourceContract
from tests.fixtures.nats import StreamFactory

pytestmark = pytest.mark.nats


class NatsAdapter(SourceAdapter):
    redelivery = 10.0

    def __init__(self, url: str, stream: str, store: Store) -> None:
        self.url = url
        self.stream = stream
        self.store = store
        self.uuid = str(uuid.uuid4())

    async def produce(self, items: Sequence[Item]) -> None:
        nc = await nats.connect(self.url)
        try:
            js = nc.jetstream()
            for lane, body in items:
                await js.publish(f"{self.stream}.{lane}", body.encode())
        finally:
            await nc.close()

    def source(self, *, replica: str = "replica-1") -> Source:
        settings = NatsSourceSettings.model_validate(
            {
                "servers": [self.url],
                "stream": self.stream,
                "subjects": [f"{self.stream}.>"],
                "ack_wait": 5,
                "nak_delay": 0,
            }
        )
        mapping = MappingConfig(
            name="contract",
            function="fn",
            source=SourceSpec(type="nats", settings=settings),
            uuid=self.uuid,
            starting_position="TRIM_HORIZON",
        )
        context = SourceContext(mapping=mapping, store=self.store, replica_id=replica)
        return NatsSource(settings, context)

    def body(self, record: Record) -> str:
        return bytes(record.data.data).decode()


class TestNatsSource(SourceContract):
    @pytest.fixture
    async def adapter(
        self, nats_url: str, nats_streams: StreamFactory, sqlite_store: SQLStore
    ) -> SourceAdapter:
        return NatsAdapter(nats_url, await nats_streams("CONTRACT"), sqlite_store)
