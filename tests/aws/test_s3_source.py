"""The s3 source against the moto server: notifications via SQS and SNS, polling."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from connectors.aws.s3 import TRAITS, S3Settings, S3Source, notification_records
from router.models import SourceKind
from tests.aws.sink import RecordingSink
from tests.aws.util import MemoryStore, context, eventually, make_queue, queue_counts, running
from tests.fixtures.aws import unique

pytestmark = pytest.mark.aws


def make_source(
    aws: Any, store: MemoryStore | None = None, replica: str = "r1", **settings: Any
) -> S3Source:
    validated = S3Settings(endpoint_url=aws.endpoint, region="us-east-1", **settings)
    return S3Source(validated, context("s3", validated, store, replica_id=replica))


async def _queue_arn(sqs: Any, url: str) -> str:
    attrs = await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
    return str(attrs["Attributes"]["QueueArn"])


async def _empty(sqs: Any, url: str) -> bool:
    return await queue_counts(sqs, url) == (0, 0)


def test_settings_and_traits() -> None:
    assert TRAITS.kind is SourceKind.ASYNC and TRAITS.batch_size_max == 1
    assert TRAITS.retry_default == 2 and TRAITS.record_age_max == 21_600
    with pytest.raises(ValueError, match="set queue_url"):
        S3Settings()
    # Beside queue_url, bucket keeps that bucket's notifications (SAM's Bucket property).
    assert S3Settings(queue_url="http://h/1/q", bucket="b").bucket == "b"
    with pytest.raises(ValueError, match="sees new objects only"):
        S3Settings(bucket="b", events=("s3:ObjectRemoved:*",))
    assert notification_records('{"Event": "s3:TestEvent", "Bucket": "b"}') == []
    assert notification_records("not json") is None
    assert notification_records('{"Type": "Notification", "Message": "{\\"x\\": 1}"}') is None


async def test_notifications_through_sqs(aws: Any) -> None:
    async with aws.client("sqs") as sqs, aws.client("s3") as s3:
        url = await make_queue(sqs, unique("s3n"))
        bucket = unique("bucket")
        await s3.create_bucket(Bucket=bucket)
        await s3.put_bucket_notification_configuration(
            Bucket=bucket,
            NotificationConfiguration={
                "QueueConfigurations": [
                    {
                        "Id": "to-queue",
                        "QueueArn": await _queue_arn(sqs, url),
                        "Events": ["s3:ObjectCreated:*"],
                    }
                ]
            },
        )
        # moto sends s3:TestEvent now, as S3 does: it must be skipped and deleted.
        await s3.put_object(Bucket=bucket, Key="in/Happy Face (1).txt", Body=b"hello")
        await s3.put_object(Bucket=bucket, Key="in/skip.csv", Body=b"x")
        await s3.put_object(Bucket=bucket, Key="out/skip.txt", Body=b"x")
        source = make_source(aws, queue_url=url, prefix="in/", suffix=".txt", wait_time_seconds=1)
        sink = RecordingSink()
        async with running(source, sink):
            [record] = await sink.get(1)
            data = record.data
            assert list(data) == [
                "eventVersion",
                "eventSource",
                "awsRegion",
                "eventTime",
                "eventName",
                "userIdentity",
                "requestParameters",
                "responseElements",
                "s3",
            ]
            assert data["eventSource"] == "aws:s3"
            assert data["eventName"] == "ObjectCreated:Put"
            assert data["awsRegion"] == "us-east-1"
            assert data["eventTime"].endswith("Z") and len(data["eventTime"]) == 24
            assert data["userIdentity"]["principalId"]
            assert set(data["responseElements"]) == {"x-amz-request-id", "x-amz-id-2"}
            s3_part = data["s3"]
            assert s3_part["configurationId"] == "to-queue"
            assert s3_part["bucket"] == {
                "name": bucket,
                "ownerIdentity": s3_part["bucket"]["ownerIdentity"],
                "arn": f"arn:aws:s3:::{bucket}",
            }
            obj = s3_part["object"]
            assert obj["key"] == "in/Happy+Face+%281%29.txt"
            assert obj["size"] == 5
            assert obj["eTag"] == "5d41402abc4b2a76b9719d911017c592"
            assert obj["sequencer"]
            assert source.build_event([record]) == {"Records": [data]}
            assert record.lane == f"{bucket}/in/Happy Face (1).txt"
            await source.ack([record])
            await sink.done(1)
            await eventually(lambda: _empty(sqs, url))
            assert sink.pending() == 0


async def test_notifications_of_one_bucket_and_event_type(aws: Any) -> None:
    async with aws.client("sqs") as sqs, aws.client("s3") as s3:
        url = await make_queue(sqs, unique("s3two"))
        arn = await _queue_arn(sqs, url)
        buckets = [unique("wanted"), unique("other")]
        for bucket in buckets:
            await s3.create_bucket(Bucket=bucket)
            await s3.put_bucket_notification_configuration(
                Bucket=bucket,
                NotificationConfiguration={
                    "QueueConfigurations": [
                        {"QueueArn": arn, "Events": ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"]}
                    ]
                },
            )
            await s3.put_object(Bucket=bucket, Key="k.txt", Body=b"x")
            await s3.delete_object(Bucket=bucket, Key="k.txt")
        source = make_source(
            aws,
            queue_url=url,
            Bucket=buckets[0],
            Events=["s3:ObjectRemoved:*"],
            wait_time_seconds=1,
        )
        sink = RecordingSink()
        async with running(source, sink):
            [record] = await sink.get(1)
            assert record.data["eventName"].startswith("ObjectRemoved:")
            assert record.data["s3"]["bucket"]["name"] == buckets[0]
            await source.ack([record])
            await sink.done(1)
            await eventually(lambda: _empty(sqs, url))
            assert sink.pending() == 0


async def test_notifications_through_sns(aws: Any) -> None:
    async with aws.client("sqs") as sqs, aws.client("s3") as s3, aws.client("sns") as sns:
        url = await make_queue(sqs, unique("s3sns"))
        topic = (await sns.create_topic(Name=unique("topic")))["TopicArn"]
        await sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=await _queue_arn(sqs, url))
        bucket = unique("bucket")
        await s3.create_bucket(Bucket=bucket)
        await s3.put_bucket_notification_configuration(
            Bucket=bucket,
            NotificationConfiguration={
                "TopicConfigurations": [{"TopicArn": topic, "Events": ["s3:ObjectCreated:*"]}]
            },
        )
        await s3.put_object(Bucket=bucket, Key="report.json", Body=b"{}")
        source = make_source(aws, queue_url=url, wait_time_seconds=1)
        sink = RecordingSink()
        async with running(source, sink):
            [record] = await sink.get(1)
            assert record.data["s3"]["bucket"]["name"] == bucket
            assert record.data["s3"]["object"]["key"] == "report.json"
            await source.ack([record])
            await sink.done(1)
            await eventually(lambda: _empty(sqs, url))


async def test_message_deleted_when_every_record_is_acked(aws: Any) -> None:
    def s3_record(key: str) -> dict[str, Any]:
        return {
            "eventVersion": "2.1",
            "eventSource": "aws:s3",
            "awsRegion": "us-east-1",
            "eventTime": "2024-05-01T10:00:00.123Z",
            "eventName": "ObjectCreated:Put",
            "userIdentity": {"principalId": "AWS:X"},
            "requestParameters": {"sourceIPAddress": "10.0.0.1"},
            "responseElements": {"x-amz-request-id": "R", "x-amz-id-2": "I"},
            "s3": {
                "s3SchemaVersion": "1.0",
                "configurationId": "c",
                "bucket": {
                    "name": "b",
                    "ownerIdentity": {"principalId": "O"},
                    "arn": "arn:aws:s3:::b",
                },
                "object": {"key": key, "size": 1, "eTag": "e", "sequencer": "0A"},
            },
        }

    async with aws.client("sqs") as sqs:
        url = await make_queue(sqs, unique("multi"))
        body = orjson.dumps({"Records": [s3_record("one"), s3_record("two")]}).decode()
        await sqs.send_message(QueueUrl=url, MessageBody=body)
        await sqs.send_message(QueueUrl=url, MessageBody="not a notification")
        source = make_source(aws, queue_url=url, wait_time_seconds=1)
        sink = RecordingSink()
        async with running(source, sink):
            first, second = await sink.get(2)
            # AWS's own fields pass through untouched.
            assert first.data == s3_record("one")
            await source.ack([first])
            await sink.done(1)
            assert await queue_counts(sqs, url) == (0, 2)
            await source.ack([second])
            await sink.done(1)
            # The foreign message stays for the queue's redrive policy.
            await eventually(lambda: _counts_are(sqs, url, (0, 1)))


async def _counts_are(sqs: Any, url: str, expected: tuple[int, int]) -> bool:
    return await queue_counts(sqs, url) == expected


async def test_polling_survives_a_restart(aws: Any) -> None:
    store = MemoryStore()
    async with aws.client("s3") as s3:
        bucket = unique("poll")
        await s3.create_bucket(Bucket=bucket)
        await s3.put_object(Bucket=bucket, Key="data/a.csv", Body=b"a")
        await s3.put_object(Bucket=bucket, Key="data/b.csv", Body=b"b")
        await s3.put_object(Bucket=bucket, Key="data/ignored.txt", Body=b"c")
        await s3.put_object(Bucket=bucket, Key="other/c.csv", Body=b"c")
        settings: dict[str, Any] = {
            "bucket": bucket,
            "prefix": "data/",
            "suffix": ".csv",
            "poll_interval": 0.2,
        }

        source = make_source(aws, store, **settings)
        sink = RecordingSink()
        async with running(source, sink):
            records = await sink.get(2)
            assert sorted(r.data["s3"]["object"]["key"] for r in records) == [
                "data/a.csv",
                "data/b.csv",
            ]
            assert all(r.data["eventName"] == "ObjectCreated:Put" for r in records)
            assert records[0].data["s3"]["object"]["size"] == 1
            await source.ack(records)
            await sink.done(2)
            # Nothing new: later listings deliver nothing more.
            await asyncio.sleep(0.6)
            assert sink.pending() == 0

        await s3.put_object(Bucket=bucket, Key="data/b.csv", Body=b"changed")
        await s3.put_object(Bucket=bucket, Key="data/new.csv", Body=b"n")
        source = make_source(aws, store, **settings)
        sink = RecordingSink()
        async with running(source, sink):
            records = await sink.get(2)
            assert sorted(r.data["s3"]["object"]["key"] for r in records) == [
                "data/b.csv",
                "data/new.csv",
            ]
            # Not acked: delivered again after the next restart.
        source = make_source(aws, store, **settings)
        sink = RecordingSink()
        async with running(source, sink):
            records = await sink.get(2)
            assert sorted(r.data["s3"]["object"]["key"] for r in records) == [
                "data/b.csv",
                "data/new.csv",
            ]
            await source.ack(records)
            await sink.done(2)
        assert len(store.checkpoints["0d9b5a1e-4b7e-4c43-9d5f-6f1f0c1a2b3c"]) == 3


async def test_only_the_lease_holder_polls(aws: Any) -> None:
    store = MemoryStore()
    async with aws.client("s3") as s3:
        bucket = unique("lease")
        await s3.create_bucket(Bucket=bucket)
        await s3.put_object(Bucket=bucket, Key="x", Body=b"x")
        settings: dict[str, Any] = {"bucket": bucket, "poll_interval": 0.2}
        assert await store.acquire_lease(
            "s3poll:0d9b5a1e-4b7e-4c43-9d5f-6f1f0c1a2b3c", "other-replica", 60
        )
        source = make_source(aws, store, replica="r1", **settings)
        sink = RecordingSink()
        async with running(source, sink):
            await asyncio.sleep(0.6)
            assert sink.pending() == 0
            await store.release_lease(
                "s3poll:0d9b5a1e-4b7e-4c43-9d5f-6f1f0c1a2b3c", "other-replica"
            )
            [record] = await sink.get(1)
            assert record.data["s3"]["object"]["key"] == "x"
