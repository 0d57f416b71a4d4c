"""Redis Streams as an on-failure / on-success destination: each destination record is added
to a stream (``XADD``) as one entry, the JSON record in one field."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import orjson

from connectors.redis.settings import RedisDestinationSettings, describe
from router.abc import Destination, DestinationContext
from router.errors import DestinationError

if TYPE_CHECKING:
    import redis.asyncio as aioredis


class RedisDestination(Destination):
    """``XADD`` of each destination record to ``stream`` (see module docstring)."""

    Settings: ClassVar[type[RedisDestinationSettings]] = RedisDestinationSettings
    requires: ClassVar[Mapping[str, str]] = {"redis": "redis"}
    settings: RedisDestinationSettings

    def __init__(self, settings: RedisDestinationSettings, context: DestinationContext) -> None:
        super().__init__(settings, context)
        self._client: aioredis.Redis | None = None
        self._lock = asyncio.Lock()

    def _connect(self) -> aioredis.Redis:
        import redis.asyncio as aioredis

        if self._client is None:
            self._client = aioredis.Redis.from_url(
                self.settings.url,
                client_name=f"event-router:{self.context.mapping_name}:destination",
                **self.settings.client_kwargs(),
            )
        return self._client

    async def send(self, record: Mapping[str, Any]) -> None:
        from redis.exceptions import RedisError

        s = self.settings
        try:
            await self._connect().xadd(
                s.stream, {s.field: orjson.dumps(record)}, maxlen=s.maxlen, approximate=True
            )
        except (RedisError, OSError) as e:
            raise DestinationError(
                f"redis destination {s.stream!r} on {s.address}: {describe(e)}"
            ) from e

    async def aclose(self) -> None:
        from redis.exceptions import RedisError

        client, self._client = self._client, None
        if client is not None:
            try:
                await client.aclose()
            except (RedisError, OSError):
                pass
