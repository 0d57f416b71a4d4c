"""Connecting to RabbitMQ with the settings both the source and the destination take."""

from __future__ import annotations

import asyncio
import functools
from typing import TYPE_CHECKING

from connectors.rabbitmq.settings import RabbitConnection, describe
from router.errors import ConfigError, SourceError
from router.secrets import SecretError

if TYPE_CHECKING:
    from aio_pika.abc import AbstractConnection


@functools.cache
def connect_errors() -> tuple[type[BaseException], ...]:
    """What a broker that is down, unreachable, refusing or closing looks like to the client
    (aiormq imported here: the connectors' classes and settings import without it)."""
    import aiormq

    return (
        aiormq.exceptions.AMQPError,
        ConnectionError,
        OSError,
        TimeoutError,
        asyncio.TimeoutError,
    )


async def connect(settings: RabbitConnection, *, name: str) -> AbstractConnection:
    """A plain (not self-reconnecting: the caller starts over) connection. Raises
    :class:`ConfigError` for settings that cannot work and :class:`SourceError` when the
    broker cannot be reached or refuses the credentials."""
    import aio_pika

    try:
        scheme, host, port, vhost = settings.address()
        login, password = settings.credentials()
        context = settings.ssl_context()
    except SecretError:
        raise
    except (OSError, ValueError) as e:
        raise ConfigError(f"rabbitmq {settings.where()}: TLS settings: {e}") from e
    try:
        connection = await aio_pika.connect(
            host=host,
            port=port,
            login=login,
            password=password,
            virtualhost=vhost,
            ssl=context is not None,
            ssl_context=context,
            timeout=settings.connection_timeout,
            client_properties={"connection_name": name},
            heartbeat=settings.heartbeat,
        )
    except asyncio.CancelledError:
        raise
    except connect_errors() as e:
        raise SourceError(
            f"rabbitmq {scheme}://{host}:{port} vhost {vhost!r}: cannot connect: {describe(e)}"
        ) from e
    return connection
