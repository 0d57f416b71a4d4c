"""The ``rabbitmq`` destination against the real broker: confirmed publishes, a message no
queue takes is a failed send, an unreachable broker is a DestinationError."""

from __future__ import annotations

import orjson
import pytest

from connectors.rabbitmq.destination import RabbitDestination
from connectors.rabbitmq.settings import RabbitDestinationSettings
from router.abc import DestinationContext
from router.errors import DestinationError
from router.store import SQLStore
from tests.fixtures.rabbitmq import URL, Queues
from tests.rabbitmq.helpers import drain


def destination(store: SQLStore, **settings: object) -> RabbitDestination:
    context = DestinationContext(
        store=store, mapping_uuid="u", mapping_name="orders", function_name="fn"
    )
    return RabbitDestination(RabbitDestinationSettings.model_validate(settings), context)


async def test_records_are_published_as_json(sqlite_store: SQLStore, rabbit_queues: Queues) -> None:
    queue = await rabbit_queues.new("dest")
    dest = destination(sqlite_store, url=URL, routing_key=queue)
    try:
        for i in range(3):
            await dest.send({"requestContext": {"condition": "RetryAttemptsExhausted"}, "i": i})
    finally:
        await dest.aclose()
    got = [orjson.loads(b) for b in await drain(queue)]
    assert [r["i"] for r in got] == [0, 1, 2]


async def test_unroutable_message_is_a_failed_send(
    sqlite_store: SQLStore, rabbit_queues: Queues
) -> None:
    dest = destination(sqlite_store, url=URL, routing_key="no-such-queue-anywhere")
    try:
        with pytest.raises(DestinationError, match="did not take the message"):
            await dest.send({"x": 1})
    finally:
        await dest.aclose()


async def test_missing_exchange_and_unreachable_broker(
    sqlite_store: SQLStore, rabbitmq_url: str
) -> None:
    dest = destination(sqlite_store, url=URL, exchange="no-such-exchange", routing_key="k")
    try:
        with pytest.raises(DestinationError, match="no-such-exchange"):
            await dest.send({"x": 1})
    finally:
        await dest.aclose()
    down = destination(sqlite_store, url="amqp://127.0.0.1:1/", routing_key="k")
    with pytest.raises(DestinationError, match="cannot connect"):
        await down.send({"x": 1})
    await down.aclose()


def test_needs_somewhere_to_route() -> None:
    with pytest.raises(ValueError, match="routing_key"):
        RabbitDestinationSettings.model_validate({"url": URL})
