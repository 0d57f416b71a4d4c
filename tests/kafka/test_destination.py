"""KafkaDestination: settings from a ``kafka://`` target, JSON records produced to a topic."""

from __future__ import annotations

import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from connectors.kafka.destination import KafkaDestination
from connectors.kafka.settings import KafkaDestinationSettings, KafkaSourceSettings
from router.abc import DestinationContext
from router.errors import DestinationError
from router.secrets import Secret
from router.store import SQLStore


def test_target_with_servers() -> None:
    settings = KafkaDestination.from_target("kafka://h1:9092,h2:9093/failures")
    assert settings.bootstrap_servers == ["h1:9092", "h2:9093"]
    assert settings.topic == "failures"


def test_lambda_style_target_uses_the_source_cluster() -> None:
    source = KafkaSourceSettings(
        bootstrap_servers=["b1:9096"],
        topics=["orders"],
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_plain_username="router",
        sasl_plain_password=Secret("s3cret"),
    )
    settings = KafkaDestination.from_target("kafka://orders-dlq", source)
    assert settings.topic == "orders-dlq"
    assert settings.bootstrap_servers == ["b1:9096"]
    assert settings.sasl_plain_password == Secret("s3cret")
    assert "s3cret" not in repr(settings)
    assert settings.client_kwargs()["sasl_plain_password"] == "s3cret"


@pytest.mark.parametrize("target", ["kafka://", "sqs://x", "kafka://only-topic"])
def test_bad_targets(target: str) -> None:
    with pytest.raises(ValueError):
        KafkaDestination.from_target(target)


def _context(store: SQLStore) -> DestinationContext:
    return DestinationContext(
        store=store, mapping_uuid="u-1", mapping_name="orders", function_name="echo"
    )


@pytest.mark.kafka
async def test_produces_json_records(
    sqlite_store: SQLStore, kafka_broker: str, kafka_topic: str
) -> None:
    settings = KafkaDestinationSettings(bootstrap_servers=[kafka_broker], topic=kafka_topic)
    destination = KafkaDestination(settings, _context(sqlite_store))
    records = [
        {"requestContext": {"condition": "RetryAttemptsExhausted"}, "n": 1},
        {"requestContext": {"condition": "RetryAttemptsExhausted"}, "n": 2},
    ]
    try:
        for record in records:
            await destination.send(record)
    finally:
        await destination.aclose()
        await destination.aclose()  # idempotent
    consumer = AIOKafkaConsumer(
        kafka_topic, bootstrap_servers=kafka_broker, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        got: list[object] = []
        while len(got) < 2:
            for messages in (await consumer.getmany(timeout_ms=1000)).values():
                got.extend(orjson.loads(m.value) for m in messages)
    finally:
        await consumer.stop()
    assert got == records


async def test_unreachable_broker_is_a_destination_error(sqlite_store: SQLStore) -> None:
    from tests.fixtures.procs import free_port

    settings = KafkaDestinationSettings(
        bootstrap_servers=[f"127.0.0.1:{free_port()}"], topic="dlq", request_timeout_ms=1000
    )
    destination = KafkaDestination(settings, _context(sqlite_store))
    with pytest.raises(DestinationError, match="kafka destination 'dlq'"):
        await destination.send({"x": 1})
    await destination.aclose()
