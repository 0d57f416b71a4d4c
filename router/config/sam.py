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

NOT_SUPPORTED: dict[str, str] = {}
"""AWS mapping properties this router knows and does not do, with what to do instead."""

NAMING_PROPERTIES = (
    "Queue",
    "Stream",
    "EventSourceArn",
    "Topics",
    "Queues",
    "Topic",
    "Bucket",
    "ScheduleExpression",
    "Schedule",
    "Pattern",
    "Path",
)
"""The properties that name an event source, in the order they are looked at: SQS,
Kinesis / DynamoDB / MSK, CloudFormation's ARN, SelfManagedKafka, MQ, SNS, S3, ScheduleV2,
Schedule, EventBridgeRule, HttpApi."""

ARN_SERVICES = {
    "sqs": "sqs",
    "kinesis": "kinesis",
    "dynamodb": "dynamodb",
    "kafka": "kafka",
    "mq": "rabbitmq",
    "sns": "sns",
}
"""The source type of an event source ARN, by the ARN's service."""

ARN_EXAMPLES = {
    "Queue": "arn:aws:sqs:us-east-1:123456789012:orders",
    "Stream": (
        "arn:aws:kinesis:us-east-1:123456789012:stream/clicks or "
        "arn:aws:kafka:us-east-1:123456789012:cluster/shop/0"
    ),
    "Topic": "arn:aws:sns:us-east-1:123456789012:alerts",
}
"""An example ARN for each naming property whose value is one (the SQS one otherwise)."""

PROPERTY_TYPES = {
    "Topics": "kafka",
    "Queues": "rabbitmq",
    "Bucket": "s3",
    "ScheduleExpression": "schedule",
    "Schedule": "schedule",
    "Pattern": "eventbridge",
    "Path": "http",
}
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
                + ARN_EXAMPLES.get(key, ARN_EXAMPLES["Queue"])
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


INFORMATIONAL = frozenset({"Name", "Description", "RuleName", "Target", "OmitName"})
"""Properties of the Schedule, ScheduleV2 and EventBridgeRule event types that name or
describe the rule / schedule AWS creates: there is none here, so they are dropped."""


class PortError(ValueError):
    """A pasted property that cannot become a mapping setting; ``key`` is where it is."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


def _once(out: dict[str, Any], key: str, value: Any, given: str, *spellings: str) -> None:
    """Set ``out[key]``, refusing when the setting is also given as one of ``spellings``."""
    for other in (key, *spellings):
        if other in out:
            raise PortError(given, f"{given} and {other} give the same setting; give it once")
    out[key] = value


def mapping_settings(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The pasted properties of the pushed event types (Schedule, ScheduleV2, SNS,
    EventBridgeRule) that are mapping settings here, written as mapping keys:

    * ``State: ENABLED | DISABLED`` -> ``Enabled``;
    * ``RetryPolicy: {MaximumRetryAttempts, MaximumEventAgeInSeconds}`` -> the mapping's
      ``MaximumRetryAttempts`` / ``MaximumEventAgeInSeconds``;
    * ``DeadLetterConfig: {Arn, Type}`` -> ``DestinationConfig: {OnFailure: {Destination}}``;
    * SNS's ``FilterPolicy`` -> ``FilterCriteria: {Filters: [{Pattern: ...}]}``;
    * :data:`INFORMATIONAL` keys are dropped.

    Raises :class:`PortError` (key, how to fix) for a value of the wrong shape.
    """
    out = {k: v for k, v in raw.items() if k not in INFORMATIONAL}
    if "State" in out:
        state = out.pop("State")
        if state not in ("ENABLED", "DISABLED"):
            raise PortError("State", "State must be ENABLED or DISABLED")
        _once(out, "Enabled", state == "ENABLED", "State", "enabled")
    if "RetryPolicy" in out:
        policy = out.pop("RetryPolicy")
        known = {"MaximumRetryAttempts", "MaximumEventAgeInSeconds"}
        if not isinstance(policy, dict) or set(policy) - known:
            raise PortError(
                "RetryPolicy",
                "RetryPolicy must be {MaximumRetryAttempts: N, MaximumEventAgeInSeconds: N}",
            )
        if "MaximumRetryAttempts" in policy:
            _once(
                out,
                "MaximumRetryAttempts",
                policy["MaximumRetryAttempts"],
                "RetryPolicy",
                "maximum_retry_attempts",
            )
        if "MaximumEventAgeInSeconds" in policy:
            _once(
                out,
                "MaximumEventAgeInSeconds",
                policy["MaximumEventAgeInSeconds"],
                "RetryPolicy",
                "maximum_record_age",
                "MaximumRecordAgeInSeconds",
            )
    if "DeadLetterConfig" in out:
        dead = out.pop("DeadLetterConfig")
        if not isinstance(dead, dict) or not isinstance(dead.get("Arn"), str):
            raise PortError(
                "DeadLetterConfig",
                "DeadLetterConfig must be {Arn: arn:aws:sqs:REGION:ACCOUNT:QUEUE} (a queue "
                "SAM would create, QueueLogicalId, does not exist here: give its ARN)",
            )
        if set(dead) - {"Arn", "Type"} or dead.get("Type", "SQS") != "SQS":
            raise PortError("DeadLetterConfig", "DeadLetterConfig must be {Type: SQS, Arn: ...}")
        on_failure = {"OnFailure": {"Destination": dead["Arn"]}}
        _once(out, "DestinationConfig", on_failure, "DeadLetterConfig", "destination_config")
    if "FilterPolicy" in out:
        policy = out.pop("FilterPolicy")
        if not isinstance(policy, dict | str):
            raise PortError("FilterPolicy", "FilterPolicy must be a mapping (or its JSON text)")
        criteria = {"Filters": [{"Pattern": policy}]}
        _once(out, "FilterCriteria", criteria, "FilterPolicy", "filter_criteria")
    return out
