"""JetStream messages as records, and the event a function receives.

The event is modelled on Lambda's stream events: records grouped by subject (a batch holds
one lane, so one subject), each with its subject, stream sequence, timestamp, delivery count,
headers and base64 data. The Lambda record is built only when a batch is invoked.
"""

from __future__ import annotations

import zlib
from binascii import b2a_base64
from collections.abc import Callable, Hashable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson

from router.filters.view import decode_base64, decode_text, with_decoded
from router.models import Record

if TYPE_CHECKING:
    from nats.aio.msg import Msg

EVENT_SOURCE = "nats:jetstream"

_RECORD_OVERHEAD = 140


def lambda_record(msg: Msg) -> dict[str, Any]:
    """One message as it appears in the event."""
    meta = msg.metadata
    record: dict[str, Any] = {
        "subject": msg.subject,
        "sequence": meta.sequence.stream,
        "timestamp": int(meta.timestamp.timestamp() * 1000),
        "deliveryCount": meta.num_delivered,
        "headers": dict(msg.headers) if msg.headers else {},
        "data": b2a_base64(msg.data, newline=False).decode(),
    }
    return record


Converter = Callable[[Sequence["Msg"]], list[Record]]


def record_converter(slots: int, key_header: str | None) -> Converter:
    """``convert(messages)``: :class:`Record` per message, ``data`` and ``position`` the
    message itself, ``identifier`` its stream sequence. The lane is ``(subject,)``, or
    ``(subject, slot)`` by the CRC-32 of the ``key_header`` value when ``slots`` > 1
    (messages without the header go to slot 0)."""
    crc = zlib.crc32
    lanes: dict[str, list[tuple[Any, ...]]] = {}

    def convert(messages: Sequence[Msg]) -> list[Record]:
        out: list[Record] = []
        append = out.append
        for msg in messages:
            subject = msg.subject
            shared = lanes.get(subject)
            if shared is None:
                shared = [(subject, s) for s in range(slots)] if slots > 1 else [(subject,)]
                lanes[subject] = shared
            lane: Hashable = shared[0]
            headers = msg.headers
            size = _RECORD_OVERHEAD + len(subject) + len(msg.data) * 4 // 3
            if headers:
                for name, value in headers.items():
                    size += len(name) + len(value) + 6
                if key_header is not None and slots > 1:
                    picked = headers.get(key_header)
                    if picked is not None:
                        lane = shared[crc(picked.encode()) % slots]
            meta = msg.metadata
            append(
                Record(
                    lane,
                    msg,
                    msg,
                    str(meta.sequence.stream),
                    size,
                    meta.timestamp.timestamp(),
                )
            )
        return out

    return convert


def build_event(
    servers: str, stream: str, consumer: str, records: Sequence[Record]
) -> dict[str, Any]:
    """The ``nats:jetstream`` event: records grouped by subject, in order."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        msg: Msg = record.data
        grouped.setdefault(msg.subject, []).append(lambda_record(msg))
    return {
        "eventSource": EVENT_SOURCE,
        "servers": servers,
        "stream": stream,
        "consumer": consumer,
        "records": grouped,
    }


def nats_view(record: Mapping[str, Any]) -> Any:
    """What filter patterns see of a JetStream record, given as it is in the event: the
    record with ``data`` base64-decoded, then JSON-decoded when it is JSON (text that is not
    JSON stays RawText), as for Kinesis."""
    return with_decoded(record, "data", decode_base64)


def filter_viewer(fields: frozenset[str] | None) -> Callable[[Record], Any]:
    """:func:`nats_view` of a record's event form; straight from the message's bytes when
    the patterns name only ``data``."""
    if fields is not None and fields <= {"data"}:

        def data_only(record: Record) -> Any:
            return {"data": decode_text(record.data.data)}

        return data_only

    def full(record: Record) -> Any:
        return nats_view(lambda_record(record.data))

    return full


def _iso_ms(when: datetime) -> str:
    when = when.astimezone(UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def batch_info(
    servers: str, stream: str, consumer: str, records: Sequence[Record]
) -> dict[str, Any]:
    """``NatsBatchInfo`` of an on-failure destination record (modelled on
    ``KinesisBatchInfo``): the subject, first and last stream sequences and their times."""
    first: Msg = records[0].data
    last: Msg = records[-1].data
    payload = len(orjson.dumps(build_event(servers, stream, consumer, records)))
    return {
        "NatsBatchInfo": {
            "servers": servers,
            "stream": stream,
            "consumer": consumer,
            "subject": first.subject,
            "startSequence": first.metadata.sequence.stream,
            "endSequence": last.metadata.sequence.stream,
            "firstMessageTimestamp": _iso_ms(first.metadata.timestamp),
            "lastMessageTimestamp": _iso_ms(last.metadata.timestamp),
            "batchSize": len(records),
            "payloadSize": payload,
        }
    }
