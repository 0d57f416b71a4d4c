"""``PutEvents`` as EventBridge validates it, and the events it builds (pure: no I/O).

:func:`parse_request` checks the request as a whole (a JSON object with 1 to 10 ``Entries``
whose size, as EventBridge counts it, is at most 256 KB) and raises
:class:`~router.ingress.errors.AwsError` (``SerializationException``, ``ValidationException``)
for what fails the whole call. :func:`check_entry` checks one entry and answers either an
:class:`Entry` or an :class:`EntryError` (``ErrorCode`` / ``ErrorMessage`` in the answer,
the other entries go on). :func:`build_event` makes the event a rule's target receives.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from router.ingress.errors import AwsError

MAX_ENTRIES = 10
MAX_REQUEST_SIZE = 256 * 1024
"""What all entries of one request may add up to, counted as EventBridge counts them."""
TIME_SIZE = 14
"""What a ``Time`` counts for in an entry's size."""
DEFAULT_BUS = "default"
ENTRY_KEYS = frozenset(
    {"Source", "DetailType", "Detail", "Resources", "EventBusName", "Time", "TraceHeader"}
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Entry:
    """A valid entry."""

    source: str
    detail_type: str
    detail: Any
    """The ``Detail`` JSON object, decoded."""
    resources: tuple[str, ...]
    bus: str
    """The bus name (an ARN's name part)."""
    time: datetime | None


@dataclass(frozen=True, slots=True, kw_only=True)
class EntryError:
    code: str
    message: str

    def answer(self) -> dict[str, str]:
        return {"ErrorCode": self.code, "ErrorMessage": self.message}


def _validation(message: str) -> AwsError:
    return AwsError(400, "ValidationException", message)


def parse_request(body: bytes) -> list[Any]:
    """The ``Entries`` of a ``PutEvents`` request body, or an AwsError for the whole call."""
    try:
        request = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise AwsError(
            400, "SerializationException", "The request body is not valid JSON"
        ) from None
    if not isinstance(request, dict):
        raise AwsError(400, "SerializationException", "The request body is not a JSON object")
    entries = request.get("Entries")
    if entries is None:
        raise _validation(
            "1 validation error detected: Value null at 'entries' failed to satisfy "
            "constraint: Member must not be null"
        )
    if not isinstance(entries, list):
        raise AwsError(400, "SerializationException", "Entries must be a list")
    if not 1 <= len(entries) <= MAX_ENTRIES:
        bound = (
            "greater than or equal to 1" if not entries else f"less than or equal to {MAX_ENTRIES}"
        )
        raise _validation(
            "1 validation error detected: Value at 'entries' failed to satisfy constraint: "
            f"Member must have length {bound}"
        )
    if sum(entry_size(e) for e in entries) > MAX_REQUEST_SIZE:
        raise _validation("Total size of the entries in the request is over the limit.")
    return entries


def entry_size(entry: Any) -> int:
    """An entry's size as EventBridge counts it: 14 bytes for a ``Time``, plus the UTF-8
    bytes of ``Source``, ``DetailType``, ``Detail`` and each of ``Resources``."""
    if not isinstance(entry, dict):
        return 0
    size = TIME_SIZE if entry.get("Time") is not None else 0
    for key in ("Source", "DetailType", "Detail"):
        value = entry.get(key)
        if isinstance(value, str):
            size += len(value.encode())
    resources = entry.get("Resources")
    if isinstance(resources, list):
        size += sum(len(r.encode()) for r in resources if isinstance(r, str))
    return size


def _required(name: str) -> EntryError:
    return EntryError(
        code="InvalidArgument",
        message=f"Parameter {name} is not valid. Reason: {name} is a required argument.",
    )


def _invalid(name: str, reason: str) -> EntryError:
    return EntryError(
        code="InvalidArgument", message=f"Parameter {name} is not valid. Reason: {reason}"
    )


def bus_name(value: str) -> str:
    """``orders`` or ``arn:aws:events:REGION:ACCOUNT:event-bus/orders``: ``orders``."""
    if value.startswith("arn:") and ":event-bus/" in value:
        return value.rsplit(":event-bus/", 1)[1]
    return value


def check_entry(entry: Any) -> Entry | EntryError:
    """One entry of a ``PutEvents`` request, checked as EventBridge checks it."""
    if not isinstance(entry, dict):
        return EntryError(code="InvalidArgument", message="An entry must be a JSON object.")
    unknown = sorted(set(entry) - ENTRY_KEYS)
    if unknown:
        return _invalid(unknown[0], f"{unknown[0]} is not a member of PutEventsRequestEntry.")
    for name in ("Source", "DetailType", "Detail"):
        value = entry.get(name)
        if value is None or value == "":
            return _required(name)
        if not isinstance(value, str):
            return _invalid(name, f"{name} must be a string.")
    source: str = entry["Source"]
    if source.startswith("aws."):
        return EntryError(
            code="NotAuthorizedForSourceException", message="Not authorized for the source."
        )
    try:
        detail = orjson.loads(entry["Detail"])
    except orjson.JSONDecodeError:
        detail = None
    if not isinstance(detail, dict):
        return EntryError(code="MalformedDetail", message="Detail is malformed.")
    resources = entry.get("Resources") or []
    if not isinstance(resources, list) or not all(isinstance(r, str) for r in resources):
        return _invalid("Resources", "Resources must be a list of ARNs.")
    bus = entry.get("EventBusName") or DEFAULT_BUS
    if not isinstance(bus, str) or len(bus) > 1600:
        return _invalid("EventBusName", "EventBusName must be a name or ARN of 1-1600 characters.")
    when = entry.get("Time")
    time: datetime | None = None
    if when is not None:
        try:
            time = _timestamp(when)
        except (TypeError, ValueError, OverflowError):
            return _invalid("Time", "Time must be a timestamp.")
    return Entry(
        source=source,
        detail_type=entry["DetailType"],
        detail=detail,
        resources=tuple(resources),
        bus=bus_name(bus),
        time=time,
    )


def _timestamp(value: Any) -> datetime:
    """botocore sends ``Time`` as epoch seconds; ISO 8601 text is taken too."""
    if isinstance(value, bool):
        raise TypeError("not a timestamp")
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    if isinstance(value, str):
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
    raise TypeError("not a timestamp")


def event_time(when: datetime) -> str:
    """``2026-12-01T12:00:00Z``: EventBridge's ``time`` (seconds, UTC)."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def build_event(
    entry: Entry,
    *,
    account: str,
    region: str,
    received: datetime,
    event_id: str | None = None,
) -> dict[str, Any]:
    """The event as a rule's target receives it (``time`` is the entry's ``Time``, else
    when it was received)."""
    return {
        "version": "0",
        "id": event_id or str(uuid.uuid4()),
        "detail-type": entry.detail_type,
        "source": entry.source,
        "account": account,
        "time": event_time(entry.time or received),
        "region": region,
        "resources": list(entry.resources),
        "detail": entry.detail,
    }


def answer(results: Sequence[Mapping[str, str]]) -> dict[str, Any]:
    """The ``PutEvents`` answer: one result per entry, in order."""
    failed = sum(1 for r in results if "ErrorCode" in r)
    return {"FailedEntryCount": failed, "Entries": list(results)}


__all__ = [
    "DEFAULT_BUS",
    "MAX_ENTRIES",
    "MAX_REQUEST_SIZE",
    "Entry",
    "EntryError",
    "answer",
    "build_event",
    "bus_name",
    "check_entry",
    "entry_size",
    "event_time",
    "parse_request",
]
