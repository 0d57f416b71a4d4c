"""Kafka records built lazily: the Lambda record, identifiers and the filter view (pure)."""

from __future__ import annotations

import base64
import time
from typing import Any

import pytest
from aiokafka.structs import ConsumerRecord

from connectors.kafka.records import (
    build_event,
    filter_viewer,
    identifiers,
    kafka_view,
    lambda_record,
    record_converter,
)
from router.filters import compile_patterns

VALUES: list[bytes | None] = [
    b'{"kind": "order", "amount": 60, "tags": ["a", "b"]}',
    b'{"kind": "refund", "amount": null}',
    b'"just a json string"',
    b"42",
    b"null",
    b"plain text, not json",
    b"\xff\xfe not utf-8",
    b"",
    None,  # a tombstone
]

PATTERNS = [
    '{"value": {"kind": ["order"]}}',
    '{"value": {"amount": [{"numeric": [">", 50]}]}}',
    '{"value": {"amount": [null]}}',
    '{"value": [{"exists": false}]}',
    '{"value": [{"exists": true}]}',
    '{"value": [null]}',
    '{"value": ["just a json string"]}',
    '{"value": [{"prefix": "plain"}]}',
    '{"value": [42]}',
    '{"value": [{"anything-but": "x"}]}',
    '{"value": {"tags": ["b"]}}',
    '{"value": {"kind": [{"exists": false}]}}',
]


def message(offset: int, value: bytes | None, key: bytes | None = b"k") -> Any:
    return ConsumerRecord(
        "orders",
        3,
        offset,
        1_700_000_000_000 + offset,
        0,
        key,
        value,
        None,
        -1 if key is None else len(key),
        -1 if value is None else len(value),
        (),
    )


@pytest.mark.parametrize("pattern", PATTERNS)
def test_value_only_view_matches_as_the_full_lambda_record(pattern: str) -> None:
    matcher = compile_patterns([pattern])
    assert matcher.fields == frozenset({"value"})
    fast = filter_viewer(matcher.fields)
    records = record_converter(1)("orders", 3, [message(i, v) for i, v in enumerate(VALUES)])
    for record in records:
        full = kafka_view(lambda_record("orders", 3, record.data))
        assert matcher.matches(fast(record)) == matcher.matches(full), record.data.value


def test_patterns_on_other_fields_see_the_whole_record() -> None:
    matcher = compile_patterns(['{"key": ["aw=="], "value": {"kind": ["order"]}}'])
    view = filter_viewer(matcher.fields)
    record = record_converter(1)("orders", 3, [message(0, VALUES[0])])[0]
    assert view(record)["key"] == "aw=="
    assert matcher.matches(view(record))
    assert filter_viewer(None)(record) == kafka_view(lambda_record("orders", 3, record.data))


def test_event_identifiers_and_lanes() -> None:
    convert = record_converter(1)
    first = convert("orders", 3, [message(7, b"x"), message(8, None, key=None)])
    again = convert("orders", 3, [message(9, b"y")])
    assert first[0].lane is again[0].lane  # one shared lane tuple per partition
    records = first + again
    assert [r.position for r in records] == [7, 8, 9]
    assert identifiers(records) == ["orders-3:7", "orders-3:8", "orders-3:9"]
    event = build_event("b:9092", records)
    assert event["eventSource"] == "SelfManagedKafka"
    assert event["bootstrapServers"] == "b:9092"
    assert event["records"] == {"orders-3": [lambda_record("orders", 3, r.data) for r in records]}
    tombstone = event["records"]["orders-3"][1]
    assert "key" not in tombstone
    assert "value" not in tombstone
    assert event["records"]["orders-3"][0]["value"] == base64.b64encode(b"x").decode()


def test_a_record_without_a_timestamp_arrives_when_fetched() -> None:
    # Old message formats carry timestamp -1: such a record must not count as expired at
    # once for maximum_record_age.
    msg = message(0, b"{}")
    msg.timestamp = -1
    before = time.time()
    (record,) = record_converter(1)("orders", 3, [msg])
    assert before <= record.arrival <= time.time()
