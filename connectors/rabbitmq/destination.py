"""RabbitMQ as an on-failure / on-success destination: each destination record is published
as one persistent JSON message to an exchange with a routing key, and ``send`` returns only
once the broker confirmed it (publisher confirms). A message the broker returns (no queue
bound for it, with ``mandatory``) or nacks is a failed send: the lane waits and retries."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import orjson

from connectors.rabbitmq.connection import connect, connect_errors
from connectors.rabbitmq.settings import RabbitDestinationSettings, describe
from router.abc import Destination, DestinationContext
from router.errors import DestinationError, SourceError

if TYPE_CHECKING:
    from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractExchange


class RabbitDestination(Destination):
    """Publishes each destination record to ``exchange`` with ``routing_key``."""

    Settings: ClassVar[type[RabbitDestinationSettings]] = RabbitDestinationSettings
    requires: ClassVar[Mapping[str, str]] = {"aio_pika": "rabbitmq"}
    settings: RabbitDestinationSettings

    def __init__(self, settings: RabbitDestinationSettings, context: DestinationContext) -> None:
        super().__init__(settings, context)
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        self._exchange: AbstractExchange | None = None
        self._lock = asyncio.Lock()

    def _where(self) -> str:
        s = self.settings
        exchange = repr(s.exchange) if s.exchange else "the default exchange"
        return f"rabbitmq destination {exchange} routing key {s.routing_key!r} on {s.where()}"

    async def _opened(self) -> AbstractExchange:
        async with self._lock:
            if (
                self._exchange is not None
                and self._channel is not None
                and not self._channel.is_closed
            ):
                return self._exchange
            await self._drop()
            name = f"{self.settings.client_name} destination {self.context.mapping_name}"
            try:
                self._connection = await connect(self.settings, name=name)
            except SourceError as e:
                raise DestinationError(f"{self._where()}: {e}") from e
            self._channel = await self._connection.channel(publisher_confirms=True)
            if self.settings.exchange:
                self._exchange = await self._channel.get_exchange(
                    self.settings.exchange, ensure=True
                )
            else:
                self._exchange = self._channel.default_exchange
            return self._exchange

    async def send(self, record: Mapping[str, Any]) -> None:
        import aio_pika
        from aio_pika.exceptions import DeliveryError
        from pamqp.commands import Basic

        s = self.settings
        try:
            exchange = await self._opened()
            message = aio_pika.Message(
                orjson.dumps(record),
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                headers={"x-router-mapping": self.context.mapping_name},
            )
            confirmation = await exchange.publish(
                message, s.routing_key, mandatory=s.mandatory, timeout=s.connection_timeout
            )
        except DestinationError:
            raise
        except DeliveryError as e:
            raise DestinationError(
                f"{self._where()}: the broker did not take the message: {describe(e)}"
            ) from e
        except asyncio.CancelledError:
            raise
        except connect_errors() as e:
            await self._drop()
            raise DestinationError(f"{self._where()}: {describe(e)}") from e
        returned = getattr(confirmation, "delivery", None)
        if isinstance(returned, Basic.Return):
            raise DestinationError(
                f"{self._where()}: the broker did not take the message: it returned it "
                f"({returned.reply_code} {returned.reply_text}: no queue is bound for it)"
            )
        if confirmation is not None and not isinstance(confirmation, Basic.Ack):
            raise DestinationError(
                f"{self._where()}: the broker did not confirm the message "
                f"({type(confirmation).__name__})"
            )

    async def _drop(self) -> None:
        connection, self._connection = self._connection, None
        self._channel = self._exchange = None
        if connection is not None:
            with contextlib.suppress(*connect_errors(), RuntimeError):
                await connection.close()

    async def aclose(self) -> None:
        async with self._lock:
            await self._drop()
