"""The ``aws:rmq`` records: a RabbitMQ message as Lambda's Amazon MQ event source mapping puts
it into the event, and what filter patterns see of it.

Lambda serialises the message's properties with Java's AMQP client and Gson: every property
is present (``null`` when the message has none), ``timestamp`` is a date in Gson's default
format (``Jan 1, 1970, 12:33:41 AM``, UTC), string header values are ``{"bytes": [...]}`` of
signed bytes (Java's ``byte``), numbers and booleans stay themselves, and ``bodySize`` is the
body's length. ``data`` is the body in base64.
"""

from __future__ import annotations

import base64
import decimal
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from router.filters.view import decode_base64, with_decoded

if TYPE_CHECKING:
    from pamqp.commands import Basic

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def java_date(value: datetime) -> str:
    """A timestamp as Gson writes a ``java.util.Date``: ``Jan 1, 1970, 12:33:41 AM`` (UTC)."""
    if value.tzinfo is not None:
        value = value.astimezone(UTC)
    hour = value.hour % 12 or 12
    half = "AM" if value.hour < 12 else "PM"
    return (
        f"{_MONTHS[value.month - 1]} {value.day}, {value.year}, "
        f"{hour}:{value.minute:02d}:{value.second:02d} {half}"
    )


def _signed(data: bytes) -> list[int]:
    return [b - 256 if b > 127 else b for b in data]


def header_value(value: Any) -> Any:
    """A header value as Lambda's event shows it."""
    if isinstance(value, str):
        return {"bytes": _signed(value.encode())}
    if isinstance(value, bytes | bytearray | memoryview):
        return {"bytes": _signed(bytes(value))}
    if isinstance(value, bool | int | float) or value is None:
        return value
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, datetime):
        return java_date(value)
    if isinstance(value, Mapping):
        return {str(k): header_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [header_value(v) for v in value]
    return str(value)


def basic_properties(properties: Basic.Properties, body_size: int) -> dict[str, Any]:
    """``basicProperties`` with AWS's field names, order and types."""
    headers = properties.headers
    timestamp = properties.timestamp
    return {
        "contentType": properties.content_type,
        "contentEncoding": properties.content_encoding,
        "headers": header_value(headers) if headers else None,
        "deliveryMode": properties.delivery_mode,
        "priority": properties.priority,
        "correlationId": properties.correlation_id,
        "replyTo": properties.reply_to,
        "expiration": properties.expiration,
        "messageId": properties.message_id,
        "timestamp": java_date(timestamp) if timestamp is not None else None,
        "type": properties.message_type,
        "userId": properties.user_id,
        "appId": properties.app_id,
        "clusterId": properties.cluster_id or None,
        "bodySize": body_size,
    }


def rmq_message(properties: Basic.Properties, body: bytes, redelivered: bool) -> dict[str, Any]:
    """One message of ``rmqMessagesByQueue``."""
    return {
        "basicProperties": basic_properties(properties, len(body)),
        "redelivered": redelivered,
        "data": base64.b64encode(body).decode("ascii"),
    }


def rabbitmq_view(record: Mapping[str, Any]) -> Any:
    """What filter patterns see of an Amazon MQ (RabbitMQ) message: the message with
    ``data`` base64- then JSON-decoded (text that is not JSON stays a string: patterns on the
    string match it, patterns inside it never do)."""
    return with_decoded(record, "data", decode_base64)
