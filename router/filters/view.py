"""The filterable view of a source record: what Lambda applies filter patterns to.

Rules per source type (AWS Lambda "event filtering" documentation, per-service pages):

``sqs``
    The record (``messageId``, ``attributes``, ``messageAttributes``, ``body``, ...) with
    ``body`` replaced by its decoded JSON value when the body is valid JSON.  Otherwise the
    body stays text (a :class:`~router.filters.spec.RawText`): patterns on the plain string
    (``{"body": [{"prefix": "ERR"}]}``) can match it, patterns that look inside it
    (``{"body": {"k": ...}}``) never match it, not even ``{"exists": false}`` ones.  This is
    AWS's "filter pattern JSON, body plain string: Lambda drops the message".
``kafka``
    The record (``topic``, ``partition``, ``offset``, ``timestamp``, ``timestampType``,
    ``key``, ``headers``, ``value``) with ``value`` base64-decoded, then UTF-8-decoded, then
    JSON-decoded when it is JSON; text that is not JSON is kept as RawText as for SQS.  Bytes
    that are not valid UTF-8 are decoded with replacement characters (AWS documents such
    records as only matching metadata filters; this keeps string patterns meaningful and
    makes every pattern inside ``value`` fail).  A null value (tombstone) stays null.
    ``key`` stays base64, as in the Lambda event (AWS only documents filtering on ``value``).
``kinesis``
    The ``kinesis`` object of the record (``partitionKey``, ``sequenceNumber``,
    ``approximateArrivalTimestamp``, ``kinesisSchemaVersion``, ``data``) with ``data``
    decoded like Kafka's ``value``: patterns are written ``{"data": {...}}`` or
    ``{"partitionKey": [...]}``.  A record given without the ``kinesis`` wrapper is used as is.
``rabbitmq``
    Amazon MQ: the message with ``data`` decoded like Kafka's ``value``.
``dynamodb``
    The stream record as is: ``{"eventName": ["INSERT"], "dynamodb": {"Keys": ...}}``.
``s3``, ``directory``, ``schedule``
    The event record itself.
"""

from __future__ import annotations

import binascii
import json
from collections.abc import Mapping
from typing import Any, Final

import orjson

from router.filters.spec import RawText

SOURCE_TYPES: Final = frozenset(
    {"sqs", "kafka", "kinesis", "dynamodb", "s3", "directory", "schedule", "rabbitmq"}
)


def decode_text(text: str | bytes) -> Any:
    """A text payload as the matcher sees it: its JSON value, or RawText when not JSON."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        pass
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    try:
        # What orjson refuses but is still JSON to Python (integers beyond 64 bits, or
        # invalid UTF-8 replaced above) is parsed the slow way.
        return json.loads(text)
    except ValueError:
        return RawText(text)


def decode_base64(data: Any) -> Any:
    """A base64 payload (Kafka value, Kinesis/MQ data) decoded to JSON or RawText."""
    if not isinstance(data, str | bytes):
        return data  # null (Kafka tombstone) or already decoded
    try:
        raw = binascii.a2b_base64(data, strict_mode=True)
    except (binascii.Error, ValueError):
        return RawText(data if isinstance(data, str) else data.decode("latin-1"))
    return decode_text(raw)


def _with(record: Mapping[str, Any], key: str, transform: Any) -> dict[str, Any]:
    view = dict(record)
    if key in view:
        view[key] = transform(view[key])
    return view


def filter_view(source_type: str, record: Mapping[str, Any]) -> Any:
    """Return the object that filter patterns are applied to for one record of a source.

    ``record`` is the record as it appears in the Lambda event for that source; it is not
    modified.  Raises ``ValueError`` for an unknown ``source_type``.
    """
    if source_type == "sqs":
        return _with(record, "body", lambda b: decode_text(b) if isinstance(b, str) else b)
    if source_type == "kafka":
        return _with(record, "value", decode_base64)
    if source_type == "kinesis":
        inner = record.get("kinesis")
        base = inner if isinstance(inner, Mapping) else record
        return _with(base, "data", decode_base64)
    if source_type == "rabbitmq":
        return _with(record, "data", decode_base64)
    if source_type in SOURCE_TYPES:
        return record
    raise ValueError(f"unknown source type {source_type!r}; expected one of {sorted(SOURCE_TYPES)}")
