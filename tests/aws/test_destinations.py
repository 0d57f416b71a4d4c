"""The sqs, sns and s3 destinations against the moto server."""

from __future__ import annotations

import re
from typing import Any

import orjson
import pytest

from connectors.aws.destinations import (
    MESSAGE_LIMIT,
    S3Destination,
    SNSDestination,
    SQSDestination,
    fit_message,
)
from connectors.aws.sqs import SQSSettings
from router.abc import DestinationContext, Store
from router.errors import DestinationError
from tests.aws.util import MemoryStore, make_queue
from tests.fixtures.aws import ACCOUNT, unique

pytestmark = pytest.mark.aws

UUID = "6d3f8d9e-1111-4c43-9d5f-6f1f0c1a2b3c"


def context() -> DestinationContext:
    store: Any = MemoryStore()
    store_typed: Store = store
    return DestinationContext(
        store=store_typed, mapping_uuid=UUID, mapping_name="orders", function_name="fn"
    )


def stream_record(payload: Any = None) -> dict[str, Any]:
    return {
        "requestContext": {
            "requestId": "r-1",
            "functionArn": "arn:aws:lambda:us-east-1:123456789012:function:fn",
            "condition": "RetryAttemptsExhausted",
            "approximateInvokeCount": 3,
        },
        "responseContext": {
            "statusCode": 200,
            "executedVersion": "$LATEST",
            "functionError": "Unhandled",
        },
        "version": "1.0",
        "timestamp": "2024-05-01T10:00:00.000Z",
        "KinesisBatchInfo": {"shardId": "shardId-000000000001", "batchSize": 1},
        "payload": payload if payload is not None else {"Records": [{"k": "v"}]},
    }


def async_record() -> dict[str, Any]:
    return {
        "version": "1.0",
        "timestamp": "2024-05-01T10:00:00.000Z",
        "requestContext": {
            "requestId": "r-2",
            "functionArn": "arn:aws:lambda:us-east-1:123456789012:function:fn",
            "condition": "RetriesExhausted",
            "approximateInvokeCount": 3,
        },
        "requestPayload": {"Records": [{"eventSource": "aws:s3"}]},
        "responseContext": {
            "statusCode": 200,
            "executedVersion": "$LATEST",
            "functionError": "Unhandled",
        },
        "responsePayload": {"errorMessage": "boom", "errorType": "ValueError", "stackTrace": []},
    }


def source_settings(endpoint: str) -> SQSSettings:
    return SQSSettings(queue_url=f"{endpoint}/{ACCOUNT}/src", endpoint_url=endpoint)


def test_oversized_records_lose_their_payloads() -> None:
    small = stream_record()
    assert orjson.loads(fit_message(small)) == small
    big = stream_record({"Records": [{"body": "x" * (MESSAGE_LIMIT + 10)}]})
    slim = orjson.loads(fit_message(big))
    assert "payload" not in slim
    assert slim["requestContext"] == big["requestContext"]
    assert slim["KinesisBatchInfo"] == big["KinesisBatchInfo"]
    assert "s3 or table" in slim["payloadOmitted"]["hint"]


def test_from_target_takes_the_sources_endpoint() -> None:
    source = source_settings("http://127.0.0.1:9")
    settings = SQSDestination.from_target("arn:aws:sqs:eu-west-1:123456789012:dlq", source)
    assert settings.endpoint_url == "http://127.0.0.1:9"
    assert settings.region is None
    s3 = S3Destination.from_target("arn:aws:s3:::failures")
    assert s3.bucket_name == "failures" and s3.endpoint_url is None
    with pytest.raises(ValueError, match="sns"):
        SNSDestination.from_target("arn:aws:sqs:us-east-1:123456789012:q")
    with pytest.raises(ValueError, match="bucket"):
        S3Destination.from_target("arn:aws:s3:::bucket/key")


async def test_sqs_destination(aws: Any) -> None:
    async with aws.client("sqs") as sqs:
        url = await make_queue(sqs, unique("dlq"))
        name = url.rsplit("/", 1)[1]
        settings = SQSDestination.from_target(
            f"arn:aws:sqs:us-east-1:{ACCOUNT}:{name}", source_settings(aws.endpoint)
        )
        destination = SQSDestination(settings, context())
        try:
            await destination.send(stream_record())
            big = stream_record({"data": "y" * (MESSAGE_LIMIT + 1)})
            await destination.send(big)
        finally:
            await destination.aclose()
            await destination.aclose()
        response = await sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1
        )
        bodies = sorted(
            (orjson.loads(m["Body"]) for m in response["Messages"]), key=lambda b: "payload" in b
        )
        assert "payloadOmitted" in bodies[0] and "payload" not in bodies[0]
        assert bodies[1] == stream_record()


async def test_sqs_destination_missing_queue(aws: Any) -> None:
    settings = SQSDestination.from_target(
        f"arn:aws:sqs:us-east-1:{ACCOUNT}:{unique('nope')}", source_settings(aws.endpoint)
    )
    destination = SQSDestination(settings, context())
    try:
        with pytest.raises(DestinationError, match="cannot find the queue"):
            await destination.send(stream_record())
    finally:
        await destination.aclose()


async def test_sns_destination(aws: Any) -> None:
    async with aws.client("sqs") as sqs, aws.client("sns") as sns:
        url = await make_queue(sqs, unique("sns-sub"))
        topic = (await sns.create_topic(Name=unique("failures")))["TopicArn"]
        queue_arn = f"arn:aws:sqs:us-east-1:{ACCOUNT}:{url.rsplit('/', 1)[1]}"
        await sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
        destination = SNSDestination(
            SNSDestination.from_target(topic, source_settings(aws.endpoint)), context()
        )
        try:
            await destination.send(async_record())
        finally:
            await destination.aclose()
        response = await sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1)
        envelope = orjson.loads(response["Messages"][0]["Body"])
        assert envelope["Type"] == "Notification" and envelope["TopicArn"] == topic
        assert orjson.loads(envelope["Message"]) == async_record()


async def test_s3_destination_key_layout(aws: Any) -> None:
    async with aws.client("s3") as s3:
        bucket = unique("failures")
        await s3.create_bucket(Bucket=bucket)
        destination = S3Destination(
            S3Destination.from_target(f"arn:aws:s3:::{bucket}", source_settings(aws.endpoint)),
            context(),
        )
        try:
            await destination.send(stream_record())
            await destination.send(async_record())
        finally:
            await destination.aclose()
        listing = await s3.list_objects_v2(Bucket=bucket)
        keys = sorted((o["Key"] for o in listing["Contents"]), key=lambda k: "async" not in k)
        stamp = r"\d{4}/\d{2}/\d{2}/\d{4}-\d{2}-\d{2}T\d{2}\.\d{2}\.\d{2}-[0-9a-f-]{36}"
        assert re.fullmatch(rf"aws/lambda/async/fn/{stamp}", keys[0]), keys[0]
        assert re.fullmatch(rf"aws/lambda/{UUID}/shardId-000000000001/{stamp}", keys[1]), keys[1]
        body = await (await s3.get_object(Bucket=bucket, Key=keys[1]))["Body"].read()
        assert orjson.loads(body) == stream_record()


async def test_s3_destination_missing_bucket(aws: Any) -> None:
    destination = S3Destination(
        S3Destination.from_target(
            f"arn:aws:s3:::{unique('absent')}", source_settings(aws.endpoint)
        ),
        context(),
    )
    try:
        with pytest.raises(DestinationError, match="PutObject failed"):
            await destination.send(stream_record())
    finally:
        await destination.aclose()
