"""RabbitMQ mappings through the Router on a real store and the real broker: the issue's
configuration, the exact ``aws:rmq`` event, filtering, order, requeue on failure, partial
batch responses, retry mode with bisect to an on-failure destination, outages shown in
last_processing_result, the queue depth metric."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

import connectors.rabbitmq.source as rabbit_source
from router.backoff import Backoff
from router.config import load_config_text
from router.ops import render_metrics
from router.store import SQLStore
from tests.fixtures.rabbitmq import URL, Queues
from tests.helpers import eventually, run_router
from tests.rabbitmq.helpers import (
    bodies,
    delivered,
    depth,
    drain,
    handlers,
    mapping_yaml,
    publish,
)

__all__ = ["handlers"]

SAMPLE_PROPERTIES = [
    # Lambda's sample Amazon MQ (RabbitMQ) event: basicProperties' keys in its order.
    "contentType", "contentEncoding", "headers", "deliveryMode", "priority", "correlationId",
    "replyTo", "expiration", "messageId", "timestamp", "type", "userId", "appId",
    "clusterId", "bodySize",
]  # fmt: skip
VALUE1 = {"bytes": [118, 97, 108, 117, 101, 49]}
"""``value1`` as a string header of Lambda's sample event."""


@pytest.fixture(autouse=True)
def fast_requeue(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rabbit_source, "REQUEUE_BACKOFF", Backoff(base=0.05, cap=0.2))
    monkeypatch.setattr(rabbit_source, "DEPTH_EVERY", 0.2)


async def settled(queue: str) -> bool:
    ready, _ = await depth(queue)
    return ready == 0


async def holds(queue: str) -> bool:
    ready, _ = await depth(queue)
    return ready > 0


ISSUE_YAML = """
functions:
  f: {invoker: python, handler: rmq_handlers:record}
mappings:
  - name: rmq
    function: f
    source:
      type: rabbitmq
      url: amqp://127.0.0.1:5672/
      virtual_host: /
      queues: [orders]
      username: guest
      password: ${RABBIT_PASSWORD}
"""


def test_issue_configuration_loads(handlers: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RABBIT_PASSWORD", "guest")
    config = load_config_text(ISSUE_YAML, "router.yaml")
    (mapping,) = config.mappings
    settings = mapping.source.settings
    assert mapping.batch_size == 100
    assert mapping.maximum_batching_window == 0.5
    assert settings.queue == "orders"  # type: ignore[attr-defined]
    assert settings.credentials() == ("guest", "guest")  # type: ignore[attr-defined]
    assert "password=Secret('${RABBIT_PASSWORD}')" in repr(settings)


def test_aws_spelling(handlers: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RABBIT_CREDENTIALS", '{"username": "guest", "password": "guest"}')
    text = """
functions:
  f: {invoker: python, handler: rmq_handlers:record}
mappings:
  - name: rmq
    function: f
    BatchSize: 500
    MaximumBatchingWindowInSeconds: 2
    source:
      type: rabbitmq
      url: amqp://127.0.0.1:5672/
      Queues: [orders]
      SourceAccessConfigurations:
        - {Type: BASIC_AUTH, URI: "${RABBIT_CREDENTIALS}"}
        - {Type: VIRTUAL_HOST, URI: /prod}
"""
    (mapping,) = load_config_text(text, "router.yaml").mappings
    settings = mapping.source.settings
    assert (mapping.batch_size, mapping.maximum_batching_window) == (500, 2)
    assert settings.vhost == "/prod"  # type: ignore[attr-defined]
    assert settings.credentials() == ("guest", "guest")  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("queues: [a, b]", "exactly one queue"),
        ("queues: [a]\n      batch_size: 1", "batch_size"),
        ("queues: [a]\n      password: guest\n      username: guest", "reference"),
        (
            "queues: [a]\n      SourceAccessConfigurations: [{Type: SASL_SCRAM_512_AUTH, URI: x}]",
            "not supported",
        ),
    ],
)
def test_bad_configuration_says_where(handlers: Path, source: str, expected: str) -> None:
    from router.errors import ConfigError

    text = f"""
functions:
  f: {{invoker: python, handler: rmq_handlers:record}}
mappings:
  - name: rmq
    function: f
    source:
      type: rabbitmq
      url: amqp://127.0.0.1:5672/
      {source}
"""
    with pytest.raises(ConfigError) as caught:
        load_config_text(text, "router.yaml")
    assert "router.yaml:" in str(caught.value)
    assert expected in str(caught.value)


def test_batch_size_limit(handlers: Path) -> None:
    from router.errors import ConfigError

    text = mapping_yaml("q", "record").replace("batch_size: 10", "batch_size: 10001")
    with pytest.raises(ConfigError, match=r"10000|10,000"):
        load_config_text(text, "router.yaml")


async def test_issue_configuration_runs(
    sqlite_store: SQLStore,
    rabbit_queues: Queues,
    handlers: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RABBIT_PASSWORD", "guest")
    queue = await rabbit_queues.new("orders")
    await publish(queue, ['{"order": 1}', '{"order": 2}'])
    text = ISSUE_YAML.replace("[orders]", f"[{queue}]")
    async with run_router(text, sqlite_store):
        await eventually(lambda: len(delivered(handlers)) == 2, what="both orders")
        await eventually(lambda: settled(queue), what="acked")
    assert bodies(handlers) == ['{"order": 1}', '{"order": 2}']


async def test_event_is_lambdas_aws_rmq_event(
    sqlite_store: SQLStore, rabbit_queues: Queues, handlers: Path
) -> None:
    queue = await rabbit_queues.new()
    stamp = datetime(1970, 1, 1, 0, 33, 41, tzinfo=UTC)
    await publish(
        queue,
        ['{"timeout":0,"data":"CZrmf0Gw8Ov4bqLQxD4E"}'],
        content_type="text/plain",
        headers={"header1": "value1", "numberInHeader": 10, "flag": True},
        delivery_mode=1,
        priority=34,
        expiration=60,
        message_id="m-1",
        timestamp=stamp,
        user_id="guest",
        correlation_id="c-1",
    )
    async with run_router(mapping_yaml(queue, "record"), sqlite_store):
        await eventually(lambda: len(delivered(handlers)) == 1, what="the message")
    (line,) = Path(str(handlers) + ".events").read_bytes().splitlines()
    event = orjson.loads(line)
    assert list(event) == ["eventSource", "eventSourceArn", "rmqMessagesByQueue"]
    assert event["eventSource"] == "aws:rmq"
    assert event["eventSourceArn"].startswith("arn:aws:mq:")
    assert list(event["rmqMessagesByQueue"]) == [f"{queue}::/"]
    (message,) = event["rmqMessagesByQueue"][f"{queue}::/"]
    assert list(message) == ["basicProperties", "redelivered", "data"]
    assert list(message["basicProperties"]) == SAMPLE_PROPERTIES
    assert message["redelivered"] is False
    body = b'{"timeout":0,"data":"CZrmf0Gw8Ov4bqLQxD4E"}'
    assert base64.b64decode(message["data"]) == body
    assert message["basicProperties"] == {
        "contentType": "text/plain",
        "contentEncoding": None,
        "headers": {
            "header1": VALUE1,
            "numberInHeader": 10,
            "flag": True,
        },
        "deliveryMode": 1,
        "priority": 34,
        "correlationId": "c-1",
        "replyTo": None,
        "expiration": "60000",
        "messageId": "m-1",
        "timestamp": "Jan 1, 1970, 12:33:41 AM",
        "type": None,
        "userId": "guest",
        "appId": None,
        "clusterId": None,
        "bodySize": len(body),
    }


async def test_filter_on_data_and_filtered_messages_are_acked(
    sqlite_store: SQLStore, rabbit_queues: Queues, handlers: Path
) -> None:
    queue = await rabbit_queues.new()
    messages = [orjson.dumps({"keep": i % 3 == 0, "i": i}).decode() for i in range(30)]
    messages += ["not json", "Result: ok"]
    await publish(queue, messages)
    extra = """    filter_criteria:
      filters:
        - pattern: '{"data": {"keep": [true]}}'
        - pattern: '{"data": [{"prefix": "Result: "}]}'"""
    async with run_router(mapping_yaml(queue, "record", extra=extra), sqlite_store) as router:
        want = [m for m in messages if '"keep":true' in m] + ["Result: ok"]
        await eventually(
            lambda: sorted(bodies(handlers)) == sorted(want), what="the matching messages"
        )
        await eventually(lambda: settled(queue), what="everything acked")
        (running,) = router.running.values()
        await eventually(lambda: running.pipeline.held == 0, what="nothing held")
        assert running.pipeline.source._outstanding == {}  # type: ignore[attr-defined]


async def test_order_and_batching(
    sqlite_store: SQLStore, rabbit_queues: Queues, handlers: Path
) -> None:
    queue = await rabbit_queues.new()
    messages = [f"m{i}" for i in range(300)]
    await publish(queue, messages)
    text = mapping_yaml(queue, "record", source_extra="\n      ordered: true")
    async with run_router(text, sqlite_store):
        await eventually(lambda: len(delivered(handlers)) == 300, what="all messages")
        await eventually(lambda: settled(queue), what="acked")
    assert bodies(handlers) == messages
    events = Path(str(handlers) + ".events").read_bytes().splitlines()
    sizes = [len(next(iter(orjson.loads(e)["rmqMessagesByQueue"].values()))) for e in events]
    assert max(sizes) == 10


async def test_failed_batch_is_requeued_in_order(
    sqlite_store: SQLStore, rabbit_queues: Queues, handlers: Path
) -> None:
    queue = await rabbit_queues.new()
    messages = [f"m{i}" for i in range(40)]
    await publish(queue, messages)
    text = mapping_yaml(queue, "fail_once", source_extra="\n      ordered: true")
    async with run_router(text, sqlite_store):
        await eventually(lambda: len(delivered(handlers)) >= 40, what="all messages")
        await eventually(lambda: settled(queue), what="acked")
    got = delivered(handlers)
    assert [b for b, _, _ in got] == messages
    assert all(redelivered for _, redelivered, _ in got)


async def test_partial_batch_response_requeues_from_the_first_failure(
    sqlite_store: SQLStore, rabbit_queues: Queues, handlers: Path
) -> None:
    queue = await rabbit_queues.new()
    messages = [f"ok{i}" for i in range(5)] + ["flaky5"] + [f"ok{i}" for i in range(6, 10)]
    await publish(queue, messages, message_id="id-{i}")
    extra = "    function_response_types: [ReportBatchItemFailures]"
    # A window long enough for the first batch to take all ten.
    text = mapping_yaml(queue, "partial", extra=extra, source_extra="\n      ordered: true")
    text = text.replace("window: 0", "window: 5")
    async with run_router(text, sqlite_store):
        await eventually(lambda: len(delivered(handlers)) >= 15, what="the redelivery")
        await eventually(lambda: settled(queue), what="acked")
    got = delivered(handlers)
    # The first batch: all 10; ok0..ok4 acked, flaky5 and what follows it requeued.
    assert [b for b, _, _ in got[:10]] == messages
    assert [(b, again) for b, again, _ in got[10:]] == [(m, True) for m in messages[5:]]


async def test_poison_message_dead_lettered_by_the_broker(
    sqlite_store: SQLStore, rabbit_queues: Queues, handlers: Path
) -> None:
    # As with Lambda: the queue's delivery limit and dead-letter exchange end a poison
    # message's redeliveries; partial batch responses keep its neighbours out of it.
    dlq = await rabbit_queues.new("dlq")
    queue = await rabbit_queues.new(
        "quorum",
        {
            "x-queue-type": "quorum",
            "x-delivery-limit": 2,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": dlq,
        },
    )
    messages = [f"ok{i}" for i in range(4)] + ["poison"] + [f"ok{i}" for i in range(5, 8)]
    await publish(queue, messages, message_id="id-{i}")
    extra = "    function_response_types: [ReportBatchItemFailures]"
    async with run_router(mapping_yaml(queue, "partial", extra=extra), sqlite_store):
        await eventually(lambda: holds(dlq), what="the dead-lettered message", timeout=30)
        await eventually(lambda: settled(queue), what="acked")
    assert await drain(dlq) == [b"poison"]
    good = {b for b, _, _ in delivered(handlers)} - {"poison"}
    assert good == {m for m in messages if m != "poison"}


async def test_retry_mode_bisects_to_the_poison_message_and_sends_it_to_the_destination(
    sqlite_store: SQLStore, rabbit_queues: Queues, handlers: Path
) -> None:
    queue = await rabbit_queues.new()
    failed = await rabbit_queues.new("failed")
    messages = [f"ok{i}" for i in range(13)] + ["poison"] + [f"ok{i}" for i in range(14, 20)]
    await publish(queue, messages)
    extra = f"""    bisect_batch_on_function_error: true
    maximum_retry_attempts: 1
    destination_config:
      on_failure:
        type: rabbitmq
        url: {URL}
        routing_key: {failed}"""
    text = mapping_yaml(
        queue, "poison", extra=extra, source_extra="\n      on_function_error: retry"
    )
    async with run_router(text, sqlite_store):
        await eventually(lambda: holds(failed), what="the on-failure record", timeout=30)
        await eventually(lambda: len(delivered(handlers)) == 19, what="the good messages")
        await eventually(lambda: settled(queue), what="acked")
    assert bodies(handlers) == [m for m in messages if m != "poison"]
    (record,) = [orjson.loads(b) for b in await drain(failed)]
    assert record["requestContext"]["condition"] == "RetryAttemptsExhausted"
    info = record["RabbitMQBatchInfo"]
    assert (info["queue"], info["batchSize"]) == (queue, 1)
    (message,) = record["payload"]["rmqMessagesByQueue"][f"{queue}::/"]
    assert base64.b64decode(message["data"]) == b"poison"


async def test_missing_queue_is_an_outage_then_runs(
    sqlite_store: SQLStore, rabbit_queues: Queues, handlers: Path
) -> None:
    name = f"later-{id(handlers):x}"
    async with run_router(mapping_yaml(name, "record"), sqlite_store):

        async def problem() -> str | None:
            row = await sqlite_store.get_mapping_by_name("rmq")
            result = row.last_processing_result if row else ""
            return result if "does not exist" in result else None

        result = await eventually(problem, what="the problem shown")
        assert result.startswith("PROBLEM:") and name in result
        import aio_pika

        connection = await aio_pika.connect(URL)
        channel = await connection.channel()
        await channel.declare_queue(name, durable=True)
        await connection.close()
        rabbit_queues.names.append(name)
        await publish(name, ["late"])
        await eventually(lambda: bodies(handlers) == ["late"], what="delivery", timeout=30)


async def test_queue_depth_metric(
    sqlite_store: SQLStore, rabbit_queues: Queues, handlers: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RMQ_SLOW", "0.5")
    queue = await rabbit_queues.new()
    await publish(queue, [f"m{i}" for i in range(500)])
    text = mapping_yaml(queue, "slow").replace("queues: [", "prefetch_count: 20\n      queues: [")
    async with run_router(text, sqlite_store) as router:

        def ready() -> float | None:
            for line in render_metrics(router).splitlines():
                if line.startswith("router_rabbitmq_messages_ready{"):
                    return float(line.rsplit(" ", 1)[1])
            return None

        value = await eventually(
            lambda: (v := ready()) is not None and v < 500 and v, what="the depth going down"
        )
        assert 400 <= value <= 490
        assert "router_rabbitmq_messages_unacknowledged{" in render_metrics(router)


async def test_own_virtual_host(sqlite_store: SQLStore, rabbit_vhost: str, handlers: Path) -> None:
    queues = Queues(URL, vhost=rabbit_vhost)
    queue = await queues.new()
    await publish(queue, ["in a vhost"], vhost=rabbit_vhost)
    async with run_router(mapping_yaml(queue, "record", vhost=rabbit_vhost), sqlite_store):
        await eventually(lambda: len(delivered(handlers)) == 1, what="the message")
    event = orjson.loads(Path(str(handlers) + ".events").read_bytes().splitlines()[0])
    assert list(event["rmqMessagesByQueue"]) == [f"{queue}::{rabbit_vhost}"]
