"""The Source contract for the redis source against the real server: lanes ``a`` and ``b``
are two streams of one mapping's group."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence

import pytest
import redis.asyncio as aioredis

from connectors.redis.settings import RedisSourceSettings
from connectors.redis.source import RedisSource
from router.abc import Source, SourceContext, Store
from router.models import MappingConfig, Record, SourceSpec
from router.store import SQLStore
from tests.contracts.source_contract import Item, SourceAdapter, SourceContract

pytestmark = pytest.mark.redis


class RedisAdapter(SourceAdapter):
    redelivery = 5.0

    def __init__(self, url: str, streams: dict[str, str], store: Store) -> None:
        self.url = url
        self.streams = streams
        self.store = store
        self.uuid = str(uuid.uuid4())

    async def produce(self, items: Sequence[Item]) -> None:
        client = aioredis.Redis.from_url(self.url)
        try:
            for lane, body in items:
                await client.xadd(self.streams[lane], {"data": body})
        finally:
            await client.aclose()

    def source(self, *, replica: str = "replica-1") -> Source:
        settings = RedisSourceSettings.model_validate(
            {"url": self.url, "streams": list(self.streams.values()), "group": "contract"}
        )
        mapping = MappingConfig(
            name="contract",
            function="fn",
            source=SourceSpec(type="redis", settings=settings),
            uuid=self.uuid,
            starting_position="TRIM_HORIZON",
        )
        context = SourceContext(mapping=mapping, store=self.store, replica_id=replica)
        return RedisSource(settings, context)

    def body(self, record: Record) -> str:
        return bytes(record.data.fields[b"data"]).decode()


class TestRedisSource(SourceContract):
    @pytest.fixture
    async def adapter(
        self, redis_url: str, redis_streams: Callable[[str], str], sqlite_store: SQLStore
    ) -> SourceAdapter:
        return RedisAdapter(
            redis_url, {"a": redis_streams("a"), "b": redis_streams("b")}, sqlite_store
        )
