"""The filter view of each source type, and patterns applied to the views as Lambda does."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from router.filters import RawText, compile_patterns
from router.registry import filter_view as view_of


def filter_view(source_type: str, record: dict[str, Any]) -> Any:
    """The view a mapping of ``source_type`` applies to ``record``."""
    return view_of(source_type)(record)


def b64(data: bytes | str) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.b64encode(raw).decode()


def sqs_record(body: str) -> dict[str, Any]:
    return {
        "messageId": "059f36b4",
        "body": body,
        "attributes": {"ApproximateReceiveCount": "1"},
        "messageAttributes": {},
        "eventSource": "aws:sqs",
    }


def matches(pattern: dict[str, Any], view: Any) -> bool:
    return compile_patterns([pattern]).matches(view)


def test_sqs_json_body_is_decoded() -> None:
    record = sqs_record('{"RequestCode": "BBBB", "RecordNumber": 10000}')
    view = filter_view("sqs", record)
    assert view["body"] == {"RequestCode": "BBBB", "RecordNumber": 10000}
    assert view["messageId"] == "059f36b4"
    assert record["body"].startswith("{"), "the record itself is not modified"
    assert matches({"body": {"RequestCode": ["BBBB"]}}, view)
    assert matches({"body": {"RecordNumber": [{"numeric": [">", 9999]}]}}, view)
    assert not matches({"body": ["BBBB"]}, view)


def test_sqs_plain_body_stays_text() -> None:
    view = filter_view("sqs", sqs_record("Hello, this is a test."))
    assert type(view["body"]) is RawText
    assert view["body"] == "Hello, this is a test."
    assert matches({"body": [{"prefix": "Hello"}]}, view)
    assert matches({"body": ["Hello, this is a test."]}, view)
    assert not matches({"body": {"RequestCode": ["BBBB"]}}, view)


def test_sqs_plain_body_never_matches_patterns_inside_it() -> None:
    view = filter_view("sqs", sqs_record("not json"))
    assert not matches({"body": {"k": [{"exists": False}]}}, view)
    # Metadata-only patterns still apply.
    assert matches({"attributes": {"ApproximateReceiveCount": ["1"]}}, view)


def test_sqs_json_scalar_body() -> None:
    view = filter_view("sqs", sqs_record("123"))
    assert view["body"] == 123
    assert matches({"body": [{"numeric": [">", 100]}]}, view)
    assert not matches({"body": ["123"]}, view)


def kafka_record(value: str | None) -> dict[str, Any]:
    return {
        "topic": "mytopic",
        "partition": 0,
        "offset": 15,
        "timestamp": 1545084650987,
        "timestampType": "CREATE_TIME",
        "key": b64("k1"),
        "value": value,
        "headers": [],
    }


def test_kafka_json_value() -> None:
    value = b64(json.dumps({"device_ID": "AB1234", "session": {"duration": 162}}))
    view = filter_view("kafka", kafka_record(value))
    assert view["value"]["device_ID"] == "AB1234"
    assert view["topic"] == "mytopic"
    assert matches({"value": {"device_ID": [{"prefix": "AB"}]}}, view)
    assert matches({"topic": ["mytopic"], "value": {"session": {"duration": [162]}}}, view)


def test_kafka_plain_string_value() -> None:
    view = filter_view("kafka", kafka_record(b64("Hello, this is a test.")))
    assert view["value"] == "Hello, this is a test."
    assert matches({"value": [{"anything-but": ["error"]}]}, view)
    assert not matches({"value": {"device_ID": [{"exists": False}]}}, view)
    error = filter_view("kafka", kafka_record(b64("error")))
    assert not matches({"value": [{"anything-but": ["error"]}]}, error)


def test_kafka_invalid_utf8_and_tombstone() -> None:
    view = filter_view("kafka", kafka_record(b64(b"\xff\xfe")))
    assert type(view["value"]) is RawText
    assert not matches({"value": {"a": [{"exists": False}]}}, view)
    tombstone = filter_view("kafka", kafka_record(None))
    assert tombstone["value"] is None
    assert matches({"value": [None]}, tombstone)


def test_kafka_value_that_is_not_base64() -> None:
    view = filter_view("kafka", kafka_record("%%% not base64"))
    assert type(view["value"]) is RawText


def test_kinesis_uses_inner_object_with_decoded_data() -> None:
    data = b64(json.dumps({"record": 12345, "order": {"type": "buy", "quantity": 1000}}))
    record: dict[str, Any] = {
        "kinesis": {
            "kinesisSchemaVersion": "1.0",
            "partitionKey": "1",
            "sequenceNumber": "4959",
            "data": data,
            "approximateArrivalTimestamp": 1545084650.987,
        },
        "eventSource": "aws:kinesis",
        "eventID": "shardId-000000000006:4959",
    }
    view = filter_view("kinesis", record)
    assert view["data"]["order"]["type"] == "buy"
    assert matches({"data": {"order": {"type": ["buy"]}}}, view)
    assert matches({"partitionKey": ["1"], "data": {"record": [12345]}}, view)
    assert not matches({"eventSource": ["aws:kinesis"]}, view)
    assert record["kinesis"]["data"] == data


def test_kinesis_record_without_wrapper() -> None:
    view = filter_view("kinesis", {"partitionKey": "p", "data": b64("plain")})
    assert view["data"] == "plain"
    assert matches({"data": [{"prefix": "pl"}]}, view)


def test_rabbitmq_data_decoded() -> None:
    view = filter_view("rabbitmq", {"basicProperties": {}, "data": b64('{"timeout": 3}')})
    assert matches({"data": {"timeout": [{"numeric": [">", 0]}]}}, view)
    plain = filter_view("rabbitmq", {"data": b64("Result: ok")})
    assert matches({"data": [{"prefix": "Result: "}]}, plain)


def test_dynamodb_record_as_is() -> None:
    record = {
        "eventName": "INSERT",
        "dynamodb": {"Keys": {"PK": {"S": "DONATION#1"}}, "NewImage": {"n": {"N": "5"}}},
    }
    view = filter_view("dynamodb", record)
    assert view is record
    assert matches(
        {"eventName": ["INSERT"], "dynamodb": {"Keys": {"PK": {"S": [{"prefix": "DONATION"}]}}}},
        view,
    )


@pytest.mark.parametrize("source", ["s3", "directory", "schedule"])
def test_record_itself(source: str) -> None:
    record = {"eventName": "ObjectCreated:Put", "s3": {"object": {"key": "a/b.png"}}}
    assert filter_view(source, record) is record


def test_unknown_source_type() -> None:
    with pytest.raises(ValueError, match="unknown source type"):
        filter_view("no-such-source", {})
