"""SQS and S3 mappings through a running Router (SQLite store, moto server)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from router.store import SQLStore
from tests.aws import e2e_handlers
from tests.aws.util import make_queue, queue_counts
from tests.fixtures.aws import ACCOUNT, unique
from tests.helpers import eventually, run_router

pytestmark = pytest.mark.aws


@pytest.fixture(autouse=True)
def events() -> Iterator[list[dict[str, Any]]]:
    e2e_handlers.EVENTS.clear()
    yield e2e_handlers.EVENTS
    e2e_handlers.EVENTS.clear()


def _config(handler: str, source: str, mapping: str = "", timeout: int = 3) -> str:
    return f"""
functions:
  fn:
    invoker: python
    handler: tests.aws.e2e_handlers:{handler}
    timeout: {timeout}
mappings:
  - name: m
    function: fn
    source:
{source}
{mapping}"""


def _sqs_source(endpoint: str, url: str, receivers: int = 4) -> str:
    return f"""      type: sqs
      queue_url: {url}
      endpoint_url: {endpoint}
      region: us-east-1
      wait_time_seconds: 1
      receivers: {receivers}"""


def _bodies(events: list[dict[str, Any]]) -> list[str]:
    return [r["body"] for e in events for r in e["Records"]]


async def _empty(sqs: Any, url: str) -> bool:
    # moto reads the clock once per message and per count: at the instant a message's
    # visibility timeout ends it can be counted neither visible nor in flight. A second
    # reading later cannot fall on that instant again for the same message.
    if await queue_counts(sqs, url) != (0, 0):
        return False
    await asyncio.sleep(0.2)
    return await queue_counts(sqs, url) == (0, 0)


async def test_partial_batch_failures_are_retried_alone(
    aws: Any, sqlite_store: SQLStore, events: list[dict[str, Any]]
) -> None:
    async with aws.client("sqs") as sqs:
        url = await make_queue(sqs, unique("partial"), visibility=3)
        bodies = [f"good{i}" for i in range(6)] + [f"bad{i}" for i in range(3)]
        await sqs.send_message_batch(
            QueueUrl=url, Entries=[{"Id": str(i), "MessageBody": b} for i, b in enumerate(bodies)]
        )
        mapping = "    function_response_types: [ReportBatchItemFailures]\n    batch_size: 10"
        config = _config("partial", _sqs_source(aws.endpoint, url), mapping)
        async with run_router(config, sqlite_store):
            await eventually(lambda: _empty(sqs, url), timeout=30, what="queue drained")
        # moto now and then hands one message to two racing receives (at least once, as
        # SQS may): count deliveries by receive count, not by occurrence.
        counts: dict[str, set[str]] = {}
        for event in events:
            for r in event["Records"]:
                counts.setdefault(r["body"], set()).add(r["attributes"]["ApproximateReceiveCount"])
        for body in bodies:
            expected = {"1", "2"} if body.startswith("bad") else {"1"}
            assert counts[body] == expected, (body, counts)
        first = events[0]["Records"][0]
        assert first["eventSource"] == "aws:sqs"
        assert first["eventSourceARN"] == f"arn:aws:sqs:us-east-1:{ACCOUNT}:{url.rsplit('/', 1)[1]}"


async def test_filtered_messages_are_deleted(
    aws: Any, sqlite_store: SQLStore, events: list[dict[str, Any]]
) -> None:
    async with aws.client("sqs") as sqs:
        url = await make_queue(sqs, unique("filter"))
        for kind in ("keep", "drop", "keep", "drop", "drop"):
            await sqs.send_message(QueueUrl=url, MessageBody=orjson.dumps({"kind": kind}).decode())
        await sqs.send_message(QueueUrl=url, MessageBody="not json")
        mapping = """    filter_criteria:
      filters:
        - pattern: '{"body": {"kind": ["keep"]}}'"""
        config = _config("record", _sqs_source(aws.endpoint, url, receivers=1), mapping)
        async with run_router(config, sqlite_store):
            await eventually(lambda: _empty(sqs, url), timeout=20, what="queue drained")
            await eventually(lambda: len(_bodies(events)) == 2, what="two kept messages")
        assert sorted(_bodies(events)) == ['{"kind":"keep"}', '{"kind":"keep"}']


async def test_fifo_failure_blocks_its_group_only(
    aws: Any, sqlite_store: SQLStore, events: list[dict[str, Any]]
) -> None:
    async with aws.client("sqs") as sqs:
        url = await make_queue(sqs, unique("fifo"), visibility=2, fifo=True)
        for i, body in enumerate(["a1", "b1", "a2", "b2", "a3", "b3"]):
            await sqs.send_message(
                QueueUrl=url,
                MessageBody=body,
                MessageGroupId=body[0],
                MessageDeduplicationId=str(i),
            )
        config = _config("fail_on_a2", _sqs_source(aws.endpoint, url), "    batch_size: 10")
        async with run_router(config, sqlite_store):
            await eventually(lambda: _empty(sqs, url), timeout=30, what="queue drained")
        # Every batch holds one group, in order; the failed a-batch comes back whole.
        for event in events:
            groups = {r["attributes"]["MessageGroupId"] for r in event["Records"]}
            assert len(groups) == 1
        a_seen = [b for b in _bodies(events) if b.startswith("a")]
        b_seen = [b for b in _bodies(events) if b.startswith("b")]
        assert b_seen == ["b1", "b2", "b3"]
        assert a_seen[:3] == ["a1", "a2", "a3"]
        # The whole a-batch went back to the queue and came back once, in order.
        assert a_seen[3:] == ["a1", "a2", "a3"]
        assert a_seen.count("a1") == 2 and a_seen.count("a3") == 2
        # b's group went on while a's waited for its visibility timeout.
        last_b = max(i for i, e in enumerate(events) if e["Records"][0]["body"].startswith("b"))
        last_a = max(i for i, e in enumerate(events) if e["Records"][0]["body"].startswith("a"))
        assert last_b < last_a


@pytest.mark.slow
async def test_slow_handler_causes_no_duplicate(
    aws: Any, sqlite_store: SQLStore, events: list[dict[str, Any]]
) -> None:
    async with aws.client("sqs") as sqs:
        url = await make_queue(sqs, unique("slow"), visibility=2)
        await sqs.send_message(QueueUrl=url, MessageBody="slow")
        # One receiver: racing receives on moto can duplicate a message by themselves, and
        # this test is about visibility extension.
        config = _config("slow", _sqs_source(aws.endpoint, url, receivers=1), timeout=10)
        async with run_router(config, sqlite_store):
            await eventually(lambda: _empty(sqs, url), timeout=30, what="queue drained")
        assert _bodies(events) == ["slow"]


async def test_s3_notification_failure_goes_to_the_sqs_destination(
    aws: Any, sqlite_store: SQLStore, events: list[dict[str, Any]]
) -> None:
    async with aws.client("sqs") as sqs, aws.client("s3") as s3:
        url = await make_queue(sqs, unique("s3e2e"))
        dlq = await make_queue(sqs, unique("s3dlq"))
        bucket = unique("e2e")
        await s3.create_bucket(Bucket=bucket)
        queue_arn = f"arn:aws:sqs:us-east-1:{ACCOUNT}:{url.rsplit('/', 1)[1]}"
        await s3.put_bucket_notification_configuration(
            Bucket=bucket,
            NotificationConfiguration={
                "QueueConfigurations": [{"QueueArn": queue_arn, "Events": ["s3:ObjectCreated:*"]}]
            },
        )
        source = f"""      type: s3
      queue_url: {url}
      endpoint_url: {aws.endpoint}
      region: us-east-1
      wait_time_seconds: 1"""
        mapping = f"""    maximum_retry_attempts: 1
    destination_config:
      on_failure:
        destination: arn:aws:sqs:us-east-1:{ACCOUNT}:{dlq.rsplit("/", 1)[1]}"""
        config = _config("fail", source, mapping)
        async with run_router(config, sqlite_store):
            await s3.put_object(Bucket=bucket, Key="in/doc 1.txt", Body=b"x")

            async def dead_letter() -> list[Any]:
                response = await sqs.receive_message(QueueUrl=dlq, WaitTimeSeconds=1)
                return list(response.get("Messages") or [])

            [message] = await eventually(dead_letter, timeout=60, what="on-failure record")
            await eventually(lambda: _empty(sqs, url), timeout=20, what="notification deleted")
        record = orjson.loads(message["Body"])
        assert record["requestContext"]["condition"] == "RetriesExhausted"
        assert record["requestContext"]["approximateInvokeCount"] == 2
        [s3_record] = record["requestPayload"]["Records"]
        assert s3_record["s3"]["object"]["key"] == "in/doc+1.txt"
        assert len(events) == 2 and all(len(e["Records"]) == 1 for e in events)


async def test_batching_window_gathers_several_receives(
    aws: Any, sqlite_store: SQLStore, events: list[dict[str, Any]]
) -> None:
    """Batches up to the batch size, gathered over the batching window."""
    async with aws.client("sqs") as sqs:
        url = await make_queue(sqs, unique("window"))
        for start in range(0, 60, 10):
            await sqs.send_message_batch(
                QueueUrl=url,
                Entries=[{"Id": str(i), "MessageBody": str(i)} for i in range(start, start + 10)],
            )
        mapping = "    batch_size: 50\n    maximum_batching_window: 1"
        config = _config("record", _sqs_source(aws.endpoint, url), mapping)
        async with run_router(config, sqlite_store):
            await eventually(lambda: len(set(_bodies(events))) == 60, timeout=30, what="all")
            await eventually(lambda: _empty(sqs, url), timeout=20, what="queue drained")
        assert max(len(e["Records"]) for e in events) > 10


async def test_maximum_concurrency_bounds_parallel_batches(
    aws: Any, sqlite_store: SQLStore, events: list[dict[str, Any]]
) -> None:
    e2e_handlers.CONCURRENCY.peak = 0
    async with aws.client("sqs") as sqs:
        url = await make_queue(sqs, unique("conc"))
        for start in range(0, 30, 10):
            await sqs.send_message_batch(
                QueueUrl=url,
                Entries=[{"Id": str(i), "MessageBody": str(i)} for i in range(start, start + 10)],
            )
        mapping = "    batch_size: 2\n    scaling_config:\n      maximum_concurrency: 2"
        config = _config("busy", _sqs_source(aws.endpoint, url), mapping)
        async with run_router(config, sqlite_store):
            await eventually(lambda: len(set(_bodies(events))) == 30, timeout=30, what="all")
            await eventually(lambda: _empty(sqs, url), timeout=20, what="queue drained")
        assert e2e_handlers.CONCURRENCY.peak == 2


async def test_bucket_polling_resumes_after_a_restart(
    aws: Any, sqlite_store: SQLStore, events: list[dict[str, Any]]
) -> None:
    async with aws.client("s3") as s3:
        bucket = unique("polle2e")
        await s3.create_bucket(Bucket=bucket)
        await s3.put_object(Bucket=bucket, Key="in/first.json", Body=b"{}")
        source = f"""      type: s3
      bucket: {bucket}
      prefix: in/
      endpoint_url: {aws.endpoint}
      region: us-east-1
      poll_interval: 0.2"""
        config = _config("record", source)

        def keys() -> list[str]:
            return [e["Records"][0]["s3"]["object"]["key"] for e in events]

        async with run_router(config, sqlite_store):
            await eventually(lambda: keys() == ["in/first.json"], what="first object")
        await s3.put_object(Bucket=bucket, Key="in/second.json", Body=b"{}")
        async with run_router(config, sqlite_store):
            await eventually(lambda: len(keys()) == 2, what="second object")
            await s3.put_object(Bucket=bucket, Key="in/first.json", Body=b'{"changed": true}')
            await eventually(lambda: len(keys()) == 3, what="changed object")
        assert keys() == ["in/first.json", "in/second.json", "in/first.json"]
        assert all(e["Records"][0]["eventName"] == "ObjectCreated:Put" for e in events)


async def test_a_redelivered_message_is_logged(
    aws: Any, sqlite_store: SQLStore, events: list[dict[str, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    """The first delivery fails; the message comes back after its visibility timeout, and the
    router says so (at WARNING, naming the mapping) before it succeeds."""
    caplog.set_level(logging.WARNING)
    async with aws.client("sqs") as sqs:
        url = await make_queue(sqs, unique("again"), visibility=1)
        await sqs.send_message(QueueUrl=url, MessageBody="a2")
        config = _config("fail_on_a2", _sqs_source(aws.endpoint, url, receivers=1))
        async with run_router(config, sqlite_store):
            await eventually(lambda: _empty(sqs, url), timeout=30, what="queue drained")
    assert _bodies(events) == ["a2", "a2"]
    failed = [r for r in caplog.records if getattr(r, "cause", None) == "function_error"]
    assert [getattr(r, "errorMessage", None) for r in failed] == ["a2 fails once"]
    [again] = [r for r in caplog.records if getattr(r, "cause", None) == "redelivery"]
    assert again.levelno == logging.WARNING
    assert getattr(again, "mapping", None) == "m"
    text = again.getMessage()
    assert text.startswith("mapping m: 1 of 1 messages received from ")
    assert "ApproximateReceiveCount up to 2" in text
