"""Mappings written as AWS writes them: the ``Properties`` of a SAM ``Events:`` entry or of
an ``AWS::Lambda::EventSourceMapping``, with no ``source:`` block.

The source type is derived from the property that names the event source (the service of
its ARN, or the property itself: ``Topics`` is Kafka, ``Queues`` a RabbitMQ / Amazon MQ
queue). Every key that is not a mapping setting then goes to that source's settings model,
which reads the AWS spellings (``Queue``, ``Stream``, ``KafkaBootstrapServers``...) next to
its own keys (``endpoint_url``, ``region``, credentials).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

NOT_SUPPORTED = {
    "TumblingWindowInSeconds": "tumbling windows (a state carried from one invocation to the "
    "next) are not supported; remove the key and keep the window's state in the function",
    "tumbling_window": "tumbling windows (a state carried from one invocation to the next) are "
    "not supported; remove the key and keep the window's state in the function",
}
"""AWS mapping properties this router knows and does not do, with what to do instead."""

NAMING_PROPERTIES = ("Queue", "Stream", "EventSourceArn", "Topics", "Queues")
"""The properties that name an event source, in the order they are looked at."""

ARN_SERVICES = {
    "sqs": "sqs",
    "kinesis": "kinesis",
    "dynamodb": "dynamodb",
    "kafka": "kafka",
    "mq": "rabbitmq",
}
"""The source type of an event source ARN, by the ARN's service."""

PROPERTY_TYPES = {"Topics": "kafka", "Queues": "rabbitmq"}
"""The source type of a naming property that is not an ARN."""


def derived_source_type(raw: Mapping[str, Any]) -> tuple[str, str] | None:
    """``(property, source type)`` for a mapping without ``source:`` that names its source
    the AWS way, or None. Raises ValueError (saying how to fix) when the property is there
    but names no source type this router has."""
    for key in NAMING_PROPERTIES:
        if key not in raw:
            continue
        value = raw[key]
        if key in PROPERTY_TYPES:
            return key, PROPERTY_TYPES[key]
        parts = value.split(":", 5) if isinstance(value, str) else []
        if len(parts) != 6 or parts[0] != "arn":
            raise ValueError(
                f"{key} must be an ARN (arn:aws:SERVICE:REGION:ACCOUNT:NAME), e.g. "
                "arn:aws:sqs:us-east-1:123456789012:orders"
            )
        source_type = ARN_SERVICES.get(parts[2])
        if source_type is None:
            known = ", ".join(sorted(ARN_SERVICES))
            raise ValueError(
                f"{key}: no source type reads {parts[2]!r} ARNs (known: {known}); "
                "write source: {type: ..., ...} instead"
            )
        return key, source_type
    return None
