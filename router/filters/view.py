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
    The stream record as is, patterns written on its ``dynamodb`` object (``Keys``,
    ``NewImage``, ``OldImage`` in DynamoDB JSON) and its metadata:
    ``{"eventName": ["INSERT"], "dynamodb": {"Keys": {"PK": {"S": ["x"]}}}}``.
``s3``, ``directory``, ``schedule``
    The event record itself.
"""

from __future__ import annotations

import binascii
import json
from collections.abc import Callable, Mapping
from typing import Any, Final

import orjson

from router.filters.spec import RawText


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


def _with(record: Mapping[str, Any], key: str, transform: Callable[[Any], Any]) -> dict[str, Any]:
    view = dict(record)
    if key in view:
        view[key] = transform(view[key])
    return view


# One function per source type, each taking the record as it appears in that source's Lambda
# event.  Each is self-contained, so it can live with its source.


def sqs_view(record: Mapping[str, Any]) -> Any:
    """SQS: the record with ``body`` JSON-decoded (text that is not JSON stays RawText)."""
    return _with(record, "body", lambda b: decode_text(b) if isinstance(b, str) else b)


def kafka_view(record: Mapping[str, Any]) -> Any:
    """Kafka (MSK, self-managed): the record with ``value`` base64- then JSON-decoded."""
    return _with(record, "value", decode_base64)


def kinesis_view(record: Mapping[str, Any]) -> Any:
    """Kinesis: the ``kinesis`` object of the record, ``data`` base64- then JSON-decoded."""
    inner = record.get("kinesis")
    base = inner if isinstance(inner, Mapping) else record
    return _with(base, "data", decode_base64)


def rabbitmq_view(record: Mapping[str, Any]) -> Any:
    """Amazon MQ (RabbitMQ): the message with ``data`` base64- then JSON-decoded."""
    return _with(record, "data", decode_base64)


def record_view(record: Mapping[str, Any]) -> Any:
    """The record itself: DynamoDB streams (patterns on ``eventName``, ``dynamodb``...), S3
    notifications, directory and schedule events."""
    return record


_VIEWS: Final[dict[str, Callable[[Mapping[str, Any]], Any]]] = {
    "sqs": sqs_view,
    "kafka": kafka_view,
    "kinesis": kinesis_view,
    "rabbitmq": rabbitmq_view,
    "dynamodb": record_view,
    "s3": record_view,
    "directory": record_view,
    "schedule": record_view,
}
SOURCE_TYPES: Final = frozenset(_VIEWS)


def view_for(source_type: str) -> Callable[[Mapping[str, Any]], Any]:
    """The filter view of a source type: a function from a record, as it appears in the
    Lambda event for that source, to what filter patterns are applied to.

    Raises ``ValueError`` for an unknown ``source_type``.
    """
    try:
        return _VIEWS[source_type]
    except KeyError:
        raise ValueError(
            f"unknown source type {source_type!r}; expected one of {sorted(SOURCE_TYPES)}"
        ) from None


def filter_view(source_type: str, record: Mapping[str, Any]) -> Any:
    """Return the object that filter patterns are applied to for one record of a source.

    ``record`` is the record as it appears in the Lambda event for that source; it is not
    modified.  Raises ``ValueError`` for an unknown ``source_type``.
    """
    return view_for(source_type)(record)
