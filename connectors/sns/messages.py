"""What SNS posts to an HTTP(S) subscription, and the ``aws:sns`` event Lambda gets (pure).

SNS posts a JSON document (with ``Content-Type: text/plain``) whose ``Type`` is
``SubscriptionConfirmation``, ``Notification`` or ``UnsubscribeConfirmation``.
:func:`parse_message` checks that it has what its type needs and raises
:class:`MessageError` saying what is missing otherwise. :func:`lambda_event` builds the
event a Lambda function subscribed to the topic receives (note the spellings: the posted
message says ``SigningCertURL`` / ``UnsubscribeURL``, the Lambda event ``SigningCertUrl`` /
``UnsubscribeUrl``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

NOTIFICATION = "Notification"
SUBSCRIPTION_CONFIRMATION = "SubscriptionConfirmation"
UNSUBSCRIBE_CONFIRMATION = "UnsubscribeConfirmation"

_COMMON = ("MessageId", "TopicArn", "Message", "Timestamp", "Type")
REQUIRED: Mapping[str, tuple[str, ...]] = {
    NOTIFICATION: _COMMON,
    SUBSCRIPTION_CONFIRMATION: (*_COMMON, "SubscribeURL", "Token"),
    UNSUBSCRIBE_CONFIRMATION: (*_COMMON, "SubscribeURL", "Token"),
}
SIGNED_KEYS: Mapping[str, tuple[str, ...]] = {
    NOTIFICATION: ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    SUBSCRIPTION_CONFIRMATION: (
        "Message",
        "MessageId",
        "SubscribeURL",
        "Timestamp",
        "Token",
        "TopicArn",
        "Type",
    ),
}
SIGNED_KEYS = {**SIGNED_KEYS, UNSUBSCRIBE_CONFIRMATION: SIGNED_KEYS[SUBSCRIPTION_CONFIRMATION]}


class MessageError(ValueError):
    """A posted document that is no SNS message."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SnsMessage:
    type: str
    fields: Mapping[str, Any] = field(repr=False)
    """Every key as posted."""

    @property
    def topic_arn(self) -> str:
        return str(self.fields["TopicArn"])

    @property
    def message_id(self) -> str:
        return str(self.fields["MessageId"])

    def string_to_sign(self) -> bytes:
        """The text SNS signs: ``key\\nvalue\\n`` for each signed key present, in order."""
        parts = []
        for key in SIGNED_KEYS[self.type]:
            value = self.fields.get(key)
            if value is None:
                continue
            parts.append(f"{key}\n{value}\n")
        return "".join(parts).encode()


def parse_message(body: bytes) -> SnsMessage:
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise MessageError(f"the body is not JSON: {e}") from None
    if not isinstance(document, dict):
        raise MessageError("the body is not a JSON object")
    kind = document.get("Type")
    if not isinstance(kind, str) or kind not in REQUIRED:
        raise MessageError(
            f"Type {kind!r} is none of {', '.join(REQUIRED)}"
            if kind is not None
            else "the message has no Type"
        )
    missing = [k for k in REQUIRED[kind] if not isinstance(document.get(k), str)]
    if missing:
        raise MessageError(f"a {kind} message needs {', '.join(missing)} (strings)")
    attributes = document.get("MessageAttributes")
    if attributes is not None and not isinstance(attributes, dict):
        raise MessageError("MessageAttributes must be an object")
    return SnsMessage(type=kind, fields=document)


def lambda_event(message: SnsMessage, subscription_arn: str) -> dict[str, Any]:
    """The ``aws:sns`` event of a Notification, as Lambda delivers it."""
    f = message.fields
    return {
        "Records": [
            {
                "EventSource": "aws:sns",
                "EventVersion": "1.0",
                "EventSubscriptionArn": subscription_arn,
                "Sns": {
                    "Type": f["Type"],
                    "MessageId": f["MessageId"],
                    "TopicArn": f["TopicArn"],
                    "Subject": f.get("Subject"),
                    "Message": f["Message"],
                    "Timestamp": f["Timestamp"],
                    "SignatureVersion": f.get("SignatureVersion", ""),
                    "Signature": f.get("Signature", ""),
                    "SigningCertUrl": f.get("SigningCertURL", ""),
                    "UnsubscribeUrl": f.get("UnsubscribeURL", ""),
                    "MessageAttributes": dict(f.get("MessageAttributes") or {}),
                },
            }
        ]
    }


def attributes_view(event: Any) -> Any:
    """What an SNS filter policy (scope ``MessageAttributes``) is matched against: each
    attribute's value, a ``Number`` as a number and a ``String.Array`` as its list."""
    try:
        attributes = event["Records"][0]["Sns"]["MessageAttributes"]
    except (KeyError, IndexError, TypeError):
        return {}
    view: dict[str, Any] = {}
    for name, attribute in attributes.items():
        if not isinstance(attribute, dict):
            continue
        kind, value = attribute.get("Type", "String"), attribute.get("Value")
        if (kind.startswith("Number") or kind == "String.Array") and isinstance(value, str):
            try:
                view[name] = orjson.loads(value)
            except orjson.JSONDecodeError:
                view[name] = value
        elif kind.startswith("Binary"):
            continue  # SNS filter policies do not match binary attributes
        else:
            view[name] = value
    return view


def body_view(event: Any) -> Any:
    """What an SNS filter policy of scope ``MessageBody`` is matched against: the message
    decoded as JSON (a message that is no JSON object matches no policy)."""
    try:
        message = event["Records"][0]["Sns"]["Message"]
        decoded = orjson.loads(message)
    except (KeyError, IndexError, TypeError, orjson.JSONDecodeError):
        return {}
    return decoded if isinstance(decoded, dict) else {}


__all__ = [
    "NOTIFICATION",
    "SUBSCRIPTION_CONFIRMATION",
    "UNSUBSCRIBE_CONFIRMATION",
    "MessageError",
    "SnsMessage",
    "attributes_view",
    "body_view",
    "lambda_event",
    "parse_message",
]
