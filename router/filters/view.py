"""What Lambda applies filter patterns to: building blocks of a source's filter view.

Each source declares its own view (``SourceTraits.filter_view``): a function from one record,
as it appears in the source's Lambda event, to what patterns see (the AWS Lambda "event
filtering" documentation, per-service pages). The SQS view lives in
:mod:`connectors.aws.sqs`, the Kafka one in :mod:`connectors.kafka.records`, the RabbitMQ one
in :mod:`connectors.rabbitmq.records`; they decode the payload with :func:`decode_text` /
:func:`decode_base64` below.

A payload that is text but not JSON becomes a :class:`~router.filters.spec.RawText`: patterns
on the plain string (``{"body": [{"prefix": "ERR"}]}``) can match it, patterns that look
inside it (``{"body": {"k": ...}}``) never match it, not even ``{"exists": false}`` ones. This
is AWS's "filter pattern JSON, payload plain string: Lambda drops the record".

The views of AWS event sources that have no connector yet are here, for those connectors
and for ``router test-pattern --source`` (registered under the ``router.filter_views`` entry
points):

``kinesis`` (:func:`kinesis_view`)
    The ``kinesis`` object of the record (``partitionKey``, ``sequenceNumber``,
    ``approximateArrivalTimestamp``, ``kinesisSchemaVersion``, ``data``) with ``data``
    decoded like Kafka's ``value``: patterns are written ``{"data": {...}}`` or
    ``{"partitionKey": [...]}``.  A record given without the ``kinesis`` wrapper is used as is.
``dynamodb`` (:func:`record_view`)
    The stream record as is, patterns written on its ``dynamodb`` object (``Keys``,
    ``NewImage``, ``OldImage`` in DynamoDB JSON) and its metadata:
    ``{"eventName": ["INSERT"], "dynamodb": {"Keys": {"PK": {"S": ["x"]}}}}``.

:func:`record_view` (the record itself) is also the view of S3 notifications, directory and
schedule events, and the default of a source that declares none.
"""

from __future__ import annotations

import binascii
import json
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from router.filters.spec import RawText

View = Callable[[Mapping[str, Any]], Any]
"""A filter view: a record as it appears in the Lambda event -> what patterns see."""


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


def with_decoded(
    record: Mapping[str, Any], key: str, decode: Callable[[Any], Any]
) -> dict[str, Any]:
    """A copy of ``record`` with ``record[key]`` decoded (the record itself is not changed)."""
    view = dict(record)
    if key in view:
        view[key] = decode(view[key])
    return view


def kinesis_view(record: Mapping[str, Any]) -> Any:
    """Kinesis: the ``kinesis`` object of the record, ``data`` base64- then JSON-decoded."""
    inner = record.get("kinesis")
    base = inner if isinstance(inner, Mapping) else record
    return with_decoded(base, "data", decode_base64)


def record_view(record: Mapping[str, Any]) -> Any:
    """The record itself: DynamoDB streams (patterns on ``eventName``, ``dynamodb``...), S3
    notifications, directory and schedule events."""
    return record
