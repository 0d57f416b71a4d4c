"""NATS JetStream as an on-failure / on-success destination: each destination record is
published as one JSON message, and ``send`` returns once the stream acknowledged it."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import orjson

from connectors.nats.settings import NatsDestinationSettings, describe
from router.abc import Destination, DestinationContext
from router.errors import DestinationError

if TYPE_CHECKING:
    from nats.aio.client import Client


class NatsDestination(Destination):
    """JetStream publish of each destination record to ``subject`` (see module docstring)."""

    Settings: ClassVar[type[NatsDestinationSettings]] = NatsDestinationSettings
    requires: ClassVar[Mapping[str, str]] = {"nats": "nats"}
    settings: NatsDestinationSettings

    def __init__(self, settings: NatsDestinationSettings, context: DestinationContext) -> None:
        super().__init__(settings, context)
        self._nc: Client | None = None
        self._lock = asyncio.Lock()

    async def _connected(self) -> Client:
        import nats

        async with self._lock:
            if self._nc is None or self._nc.is_closed:
                self._nc = await nats.connect(
                    name=f"event-router:{self.context.mapping_name}:destination",
                    **self.settings.connect_kwargs(),
                )
            return self._nc

    async def send(self, record: Mapping[str, Any]) -> None:
        from nats.errors import Error as NatsError

        s = self.settings
        try:
            nc = await self._connected()
            js = nc.jetstream(timeout=s.request_timeout)
            await js.publish(s.subject, orjson.dumps(record), stream=s.stream)
        except (NatsError, OSError) as e:
            raise DestinationError(
                f"nats destination {s.subject!r} on {s.address}: {describe(e)}"
            ) from e

    async def aclose(self) -> None:
        from nats.errors import Error as NatsError

        nc, self._nc = self._nc, None
        if nc is not None:
            try:
                await nc.close()
            except (NatsError, OSError):
                pass
