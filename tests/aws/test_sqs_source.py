"""The sqs source against the moto server: event shape, lanes, deletes, visibility."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time
from typing import Any

import pytest

from connectors.aws.sqs import FIFO_TRAITS, STANDARD_TRAITS, SQSSettings, SQSSource
from router.errors import SourceError
from router.lag import Lag, lag_of
from tests.aws.sink import RecordingSink
from tests.aws.util import context, eventually, make_queue, queue_counts, running
from tests.fixtures.aws import ACCOUNT, unique

pytestmark = pytest.mark.aws


def make_source(url: str, endpoint: str, **extra: Any) -> SQSSource:
    # One receiver unless a test says otherwise: racing receives on moto now and then hand
    # out one message twice, which would blur what these tests look at.
    extra.setdefault("receivers", 1)
    settings = SQSSettings(queue_url=url, endpoint_url=endpoint, region="us-east-1", **extra)
    return SQSSource(settings, context("sqs", settings))


async def test_settings_as_documented() -> None:
    settings = SQSSettings.model_validate(
        {
            "queue_url": "http://127.0.0.1:5000/123456789012/orders",
            "endpoint_url": "http://127.0.0.1:5000",
            "region": "us-east-1",
        }
    )
    assert SQSSource.traits_for(settings) is STANDARD_TRAITS
    fifo = settings.model_copy(update={"queue_url": settings.queue_url + ".fifo"})
    assert SQSSource.traits_for(fifo) is FIFO_TRAITS
    assert FIFO_TRAITS.batch_size_max == 10
    assert STANDARD_TRAITS.batch_size_max == 10_000
    with pytest.raises(ValueError, match="queue_url"):
        SQSSettings.model_validate({"queue_url": "orders"})
    with pytest.raises(ValueError, match="aws_secret_access_key"):
        SQSSettings.model_validate({"queue_url": settings.queue_url, "aws_access_key_id": "AKIA"})
    secret = SQSSettings.model_validate(
        {
            "queue_url": settings.queue_url,
            "aws_access_key_id": "AKIA1",
            "aws_secret_access_key": "s3cr3t",
        }
    )
    assert "s3cr3t" not in repr(secret)


async def test_standard_record_shape_and_delete(aws: Any) -> None:
    async with aws.client("sqs") as sqs:
        url = await make_queue(sqs, unique("shape"))
        await sqs.send_message(
            QueueUrl=url,
            MessageBody='{"order": 1}',
            MessageAttributes={
                "Attribute1": {"StringValue": "AttributeValue1", "DataType": "String"},
                "Attribute2": {"StringValue": "123", "DataType": "Number"},
                "Attribute3": {"BinaryValue": b"1100", "DataType": "Binary"},
            },
        )
        await sqs.send_message(QueueUrl=url, MessageBody="plain text")
        source = make_source(url, aws.endpoint)
        sink = RecordingSink()
        async with running(source, sink):
            records = await sink.get(2)
            by_body = {r.data["body"]: r for r in records}
            first, second = by_body['{"order": 1}'], by_body["plain text"]
            assert list(first.data) == [
                "messageId",
                "receiptHandle",
                "body",
                "attributes",
                "messageAttributes",
                "md5OfBody",
                "md5OfMessageAttributes",
                "eventSource",
                "eventSourceARN",
                "awsRegion",
            ]
            assert "md5OfMessageAttributes" not in second.data
            assert second.data["messageAttributes"] == {}
            data = first.data
            assert data["eventSource"] == "aws:sqs"
            assert (
                data["eventSourceARN"] == f"arn:aws:sqs:us-east-1:{ACCOUNT}:{url.rsplit('/', 1)[1]}"
            )
            assert data["awsRegion"] == "us-east-1"
            assert data["md5OfBody"] == hashlib.md5(b'{"order": 1}').hexdigest()
            attributes = data["attributes"]
            for key in (
                "ApproximateReceiveCount",
                "SentTimestamp",
                "SenderId",
                "ApproximateFirstReceiveTimestamp",
            ):
                assert isinstance(attributes[key], str), key
            assert attributes["ApproximateReceiveCount"] == "1"
            assert "MessageGroupId" not in attributes
            assert data["messageAttributes"] == {
                "Attribute1": {
                    "stringValue": "AttributeValue1",
                    "stringListValues": [],
                    "binaryListValues": [],
                    "dataType": "String",
                },
                "Attribute2": {
                    "stringValue": "123",
                    "stringListValues": [],
                    "binaryListValues": [],
                    "dataType": "Number",
                },
                "Attribute3": {
                    "binaryValue": base64.b64encode(b"1100").decode(),
                    "stringListValues": [],
                    "binaryListValues": [],
                    "dataType": "Binary",
                },
            }
            assert first.lane is None and second.lane is None
            assert first.identifier == data["messageId"]
            assert abs(first.arrival - time.time()) < 60
            assert source.build_event(records) == {"Records": [r.data for r in records]}

            await source.ack(records)
            await sink.done(2)
            assert await queue_counts(sqs, url) == (0, 0)


async def test_fifo_lanes_attributes_and_order(aws: Any) -> None:
    async with aws.client("sqs") as sqs:
        url = await make_queue(sqs, unique("fifo"), fifo=True)
        for i in range(6):
            group = "a" if i % 2 == 0 else "b"
            # An explicit deduplication id: moto gives SequenceNumber only then.
            await sqs.send_message(
                QueueUrl=url,
                MessageBody=f"{group}{i}",
                MessageGroupId=group,
                MessageDeduplicationId=f"d{i}",
            )
        source = make_source(url, aws.endpoint)
        assert SQSSource.traits_for(source.settings) is FIFO_TRAITS
        sink = RecordingSink()
        async with running(source, sink):
            records = await sink.get(6)
            lanes = {r.lane for r in records}
            assert lanes == {"a", "b"}
            for lane in ("a", "b"):
                bodies = [r.data["body"] for r in records if r.lane == lane]
                assert bodies == sorted(bodies, key=lambda b: int(b[1:]))
            attributes = records[0].data["attributes"]
            assert attributes["MessageGroupId"] == records[0].lane
            assert attributes["SequenceNumber"].isdigit()
            assert attributes["MessageDeduplicationId"]
            assert records[0].data["eventSourceARN"].endswith(".fifo")
            await source.ack(records)
            await sink.done(6)
            assert await queue_counts(sqs, url) == (0, 0)


async def test_released_messages_return_after_the_visibility_timeout(aws: Any) -> None:
    async with aws.client("sqs") as sqs:
        url = await make_queue(sqs, unique("release"), visibility=1)
        await sqs.send_message(QueueUrl=url, MessageBody="again")
        source = make_source(url, aws.endpoint, wait_time_seconds=1)
        sink = RecordingSink()
        async with running(source, sink):
            [first] = await sink.get(1)
            await source.release([first])
            await sink.done(1)
            [second] = await sink.get(1)
            assert second.identifier == first.identifier
            assert second.data["attributes"]["ApproximateReceiveCount"] == "2"
            await source.ack([second])
            await sink.done(1)
            assert await queue_counts(sqs, url) == (0, 0)


async def test_a_message_delivered_twice_in_one_batch_is_deleted_once(aws: Any) -> None:
    # A standard queue may hand one message to two receives; both copies can land in one
    # batch. A DeleteMessageBatch that repeats a receipt handle is rejected whole (moto does
    # so), which would make the ack fail on every retry and the message come back forever.
    async with aws.client("sqs") as sqs:
        url = await make_queue(sqs, unique("twice"))
        await sqs.send_message(QueueUrl=url, MessageBody="once")
        source = make_source(url, aws.endpoint, wait_time_seconds=1)
        sink = RecordingSink()
        async with running(source, sink):
            [record] = await sink.get(1)
            await source.ack([record, record])
            await sink.done(1)
            assert await queue_counts(sqs, url) == (0, 0)


async def test_visibility_is_extended_while_in_flight(aws: Any) -> None:
    async with aws.client("sqs") as sqs:
        url = await make_queue(sqs, unique("slow"), visibility=2)
        await sqs.send_message(QueueUrl=url, MessageBody="slow")
        source = make_source(url, aws.endpoint, wait_time_seconds=1)
        sink = RecordingSink()
        async with running(source, sink):
            [record] = await sink.get(1)
            # A handler taking 5 s on a 2 s visibility timeout: no second delivery meanwhile.
            await asyncio.sleep(5)
            assert sink.pending() == 0 and len(sink.records) == 1
            assert await queue_counts(sqs, url) == (0, 1)
            await source.ack([record])
            await sink.done(1)
            assert await queue_counts(sqs, url) == (0, 0)


async def test_never_holds_more_than_the_sink_has_room_for(aws: Any) -> None:
    async with aws.client("sqs") as sqs:
        url = await make_queue(sqs, unique("room"))
        for start in range(0, 45, 10):
            await sqs.send_message_batch(
                QueueUrl=url,
                Entries=[
                    {"Id": str(i), "MessageBody": f"m{i}"}
                    for i in range(start, min(start + 10, 45))
                ],
            )
        source = make_source(url, aws.endpoint, wait_time_seconds=1, receivers=4)
        sink = RecordingSink(capacity=7)
        async with running(source, sink):
            seen: list[str] = []
            while len(set(seen)) < 45:
                batch = await sink.get(1)
                more = [batch[0], *await sink.get(min(sink.pending(), 6), timeout=5)]
                seen.extend(r.data["body"] for r in more)
                await source.ack(more)
                await sink.done(len(more))
            assert sink.max_held <= 7
            assert set(seen) == {f"m{i}" for i in range(45)}
            await eventually(lambda: _empty(sqs, url))


async def _empty(sqs: Any, url: str) -> bool:
    return await queue_counts(sqs, url) == (0, 0)


async def test_many_deletes_in_parallel_batches(aws: Any) -> None:
    async with aws.client("sqs") as sqs:
        url = await make_queue(sqs, unique("bulk"))
        for start in range(0, 35, 10):
            await sqs.send_message_batch(
                QueueUrl=url,
                Entries=[
                    {"Id": str(i), "MessageBody": str(i)} for i in range(start, min(start + 10, 35))
                ],
            )
        source = make_source(url, aws.endpoint, wait_time_seconds=1, receivers=4)
        sink = RecordingSink()
        async with running(source, sink):
            # Standard queues deliver at least once (moto, under parallel receives, now and
            # then hands a message out twice): collect until every message was seen.
            records = await sink.get(35)
            while len({r.identifier for r in records}) < 35:
                records += await sink.get(1)
            await source.ack(records)
            await sink.done(len(records))
            assert await queue_counts(sqs, url) == (0, 0)


async def test_missing_queue_is_a_source_error(aws: Any) -> None:
    url = f"{aws.endpoint}/{ACCOUNT}/{unique('missing')}"
    source = make_source(url, aws.endpoint)
    try:
        with pytest.raises(SourceError, match="does not exist"):
            await source.run(RecordingSink())
    finally:
        await source.aclose()
        await source.aclose()


async def test_unreachable_endpoint_is_a_source_error(aws_credentials: None) -> None:
    from tests.fixtures.procs import free_port

    endpoint = f"http://127.0.0.1:{free_port()}"
    source = make_source(f"{endpoint}/{ACCOUNT}/nothing", endpoint, max_attempts=1)
    try:
        with pytest.raises(SourceError, match="nothing"):
            await source.run(RecordingSink())
    finally:
        await source.aclose()


async def test_receives_no_further_ahead_than_max_in_flight(aws: Any) -> None:
    async with aws.client("sqs") as sqs:
        url = await make_queue(sqs, unique("ahead"))
        for start in range(0, 30, 10):
            await sqs.send_message_batch(
                QueueUrl=url,
                Entries=[{"Id": str(i), "MessageBody": str(i)} for i in range(start, start + 10)],
            )
        source = make_source(url, aws.endpoint, wait_time_seconds=1, max_in_flight=10)
        sink = RecordingSink(capacity=1000)
        async with running(source, sink):
            first = await sink.get(10)
            await asyncio.sleep(0.5)  # further receives would show up here
            assert sink.pending() == 0 and source.queue.inflight == 10
            assert await queue_counts(sqs, url) == (20, 10)
            await source.ack(first)
            await sink.done(10)
            await sink.get(10)


async def _receive_and_delete(sqs: Any, url: str, count: int, wait: int) -> list[str]:
    """Bodies of the next ``count`` messages in the order the queue hands them out."""
    seen: list[str] = []
    while len(seen) < count:
        got = await sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=wait)
        for m in got.get("Messages") or []:
            seen.append(m["Body"])
            await sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    return seen


async def test_the_emulator_returns_a_timed_out_fifo_group_in_order(aws: Any) -> None:
    # What the fault tests rely on, as SQS does it: a group whose in-flight messages all time
    # out (their consumer died) comes back first message first, the rest behind it. moto on
    # its own hands out the *last* of them first (tests/fixtures/moto_server.py).
    async with aws.client("sqs") as sqs:
        url = await make_queue(sqs, unique("rotate"), visibility=1, fifo=True)
        for body in ("m1", "m2", "m3", "m4"):
            await sqs.send_message(QueueUrl=url, MessageBody=body, MessageGroupId="g")
        first = await sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=3)
        assert [m["Body"] for m in first["Messages"]] == ["m1", "m2", "m3"]
        await asyncio.sleep(1.5)
        assert await _receive_and_delete(sqs, url, 4, wait=1) == ["m1", "m2", "m3", "m4"]


async def test_the_emulator_keeps_a_group_locked_until_its_last_in_flight_message_times_out(
    aws: Any,
) -> None:
    # In-flight messages of one group whose visibility ends at different times (extended in
    # separate calls before their consumer died): the group stays locked until the last one
    # is visible again, then comes back first message first, also within one long poll.
    # moto on its own hands out the last one first (tests/fixtures/moto_server.py).
    async with aws.client("sqs") as sqs:
        url = await make_queue(sqs, unique("stagger"), visibility=1, fifo=True)
        for body in ("m1", "m2", "m3", "m4"):
            await sqs.send_message(QueueUrl=url, MessageBody=body, MessageGroupId="g")
        first = await sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=3)
        assert [m["Body"] for m in first["Messages"]] == ["m1", "m2", "m3"]
        await sqs.change_message_visibility(
            QueueUrl=url, ReceiptHandle=first["Messages"][2]["ReceiptHandle"], VisibilityTimeout=3
        )
        await asyncio.sleep(1.5)  # m1, m2 visible again; m3 still in flight
        early = await sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)
        assert early.get("Messages", []) == []
        assert await _receive_and_delete(sqs, url, 4, wait=3) == ["m1", "m2", "m3", "m4"]


async def test_the_emulator_keeps_a_group_locked_by_a_late_visibility_extension(aws: Any) -> None:
    # A consumer extends a message's visibility just after it turned visible (a paused or
    # loaded router): the message is in flight again and its group stays locked; the message
    # behind it must not go out first.
    async with aws.client("sqs") as sqs:
        url = await make_queue(sqs, unique("late"), visibility=1, fifo=True)
        for body in ("m1", "m2"):
            await sqs.send_message(QueueUrl=url, MessageBody=body, MessageGroupId="g")
        first = await sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=2)
        m1, m2 = first["Messages"]
        await sqs.change_message_visibility(
            QueueUrl=url, ReceiptHandle=m2["ReceiptHandle"], VisibilityTimeout=2
        )
        await asyncio.sleep(1.3)  # m1 visible again, m2 in flight
        assert (await sqs.receive_message(QueueUrl=url)).get("Messages", []) == []
        await sqs.change_message_visibility(
            QueueUrl=url, ReceiptHandle=m1["ReceiptHandle"], VisibilityTimeout=3
        )
        await asyncio.sleep(1.2)  # m2 visible again, m1 in flight until ~2.5 s from here
        assert (await sqs.receive_message(QueueUrl=url)).get("Messages", []) == []
        assert await _receive_and_delete(sqs, url, 2, wait=5) == ["m1", "m2"]


async def test_failed_visibility_extensions_are_rate_limited(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # An endpoint that is away makes every extension tick fail: a few lines a minute, not one
    # per tick.
    from connectors.aws.sqs import SQSQueue, _InFlight
    from router import logs

    class Away:
        async def change_message_visibility_batch(self, **_: Any) -> Any:
            raise ConnectionRefusedError("connection refused")

    settings = SQSSettings(
        queue_url=f"http://127.0.0.1:1/{ACCOUNT}/gone", endpoint_url="http://127.0.0.1:1"
    )
    queue = SQSQueue(settings, settings.queue_url, wait_time=0, receivers=1)
    queue._client = Away()
    entry = _InFlight("receipt", time.monotonic())
    with caplog.at_level("WARNING", logger="connectors.aws.sqs"):
        for _ in range(50):
            await queue._extend_chunk([("m", entry)], time.monotonic())
    lines = [r for r in caplog.records if "extending visibility failed" in r.getMessage()]
    assert len(lines) == logs.LINES


async def test_approximate_depth_is_the_lag(aws: Any) -> None:
    """``router_sqs_approximate_messages`` (visible) and ``..._not_visible`` (received, not
    deleted) from GetQueueAttributes, per mapping and queue."""
    async with aws.client("sqs") as sqs:
        url = await make_queue(sqs, unique("depth"))
        for i in range(5):
            await sqs.send_message(QueueUrl=url, MessageBody=str(i))
        idle = make_source(url, aws.endpoint)
        try:
            assert idle.metrics() == []  # nothing read yet
            await idle.queue.open()
            await idle.depth.read()
            depth = {f.name: f.samples for f in idle.metrics()}
            labels = {"mapping": "test-mapping", "queue": url}
            assert depth == {
                "router_sqs_approximate_messages": [
                    ("router_sqs_approximate_messages", labels, 5.0)
                ],
                "router_sqs_approximate_messages_not_visible": [
                    ("router_sqs_approximate_messages_not_visible", labels, 0.0)
                ],
            }
            assert lag_of(idle.metrics()) == Lag(5.0, "messages waiting")
        finally:
            await idle.aclose()
        source = make_source(url, aws.endpoint)
        sink = RecordingSink()
        async with running(source, sink):
            records = await sink.get(5)
            await source.depth.read()  # what the source's own loop reads every 15 s
            assert lag_of(source.metrics()) == Lag(0.0, "messages waiting")
            in_flight = {f.name: f.samples[0][2] for f in source.metrics()}
            assert in_flight["router_sqs_approximate_messages_not_visible"] == 5.0
            await source.ack(records)
