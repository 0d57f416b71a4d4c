"""Redis stream entries as records, and the event a function receives.

The event is modelled on Lambda's stream events: records grouped by stream (a batch holds one
lane, so one stream), each with its stream, entry id, timestamp, fields, and the data field
base64-encoded. The Lambda record is built only when a batch is invoked; the filter of the
usual pattern (on ``data``) reads the entry's bytes directly.
"""

from __future__ import annotations

import time
import zlib
from binascii import b2a_base64
from collections.abc import Callable, Hashable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple

import orjson

from router.filters.view import decode_base64, decode_text, with_decoded
from router.models import Record

EVENT_SOURCE = "redis:streams"

_RECORD_OVERHEAD = 110
"""JSON overhead of one record besides its stream name and fields."""


class Entry(NamedTuple):
    """One stream entry as read: ``fields`` as the server sent them (bytes)."""

    stream: str
    id: str
    fields: Mapping[bytes, bytes]


def entry_timestamp(entry_id: str) -> int:
    """Milliseconds since the epoch: the first part of an entry id (``<ms>-<seq>``)."""
    head, _, _ = entry_id.partition("-")
    return int(head)


def _text_or_base64(raw: bytes) -> tuple[str, bool]:
    try:
        return raw.decode(), False
    except UnicodeDecodeError:
        return b2a_base64(raw, newline=False).decode(), True


def lambda_record(entry: Entry, data_field: bytes) -> dict[str, Any]:
    """One entry as it appears in the event. ``fields`` are the entry's other fields as
    text; a field whose name or value is not UTF-8 is in ``binaryFields`` instead, both
    base64."""
    record: dict[str, Any] = {
        "stream": entry.stream,
        "id": entry.id,
        "timestamp": entry_timestamp(entry.id),
    }
    fields: dict[str, str] = {}
    binary: dict[str, str] = {}
    data: bytes | None = None
    for name, value in entry.fields.items():
        if name == data_field:
            data = value
            continue
        key, name_binary = _text_or_base64(name)
        text, value_binary = _text_or_base64(value)
        if name_binary or value_binary:
            binary[b2a_base64(name, newline=False).decode()] = b2a_base64(
                value, newline=False
            ).decode()
        else:
            fields[key] = text
    record["fields"] = fields
    if binary:
        record["binaryFields"] = binary
    if data is not None:
        record["data"] = b2a_base64(data, newline=False).decode()
    return record


Converter = Callable[[str, Sequence[tuple[bytes, Mapping[bytes, bytes] | None]]], list[Record]]


def record_converter(slots: int, key_field: str | None) -> Converter:
    """``convert(stream, entries)``: entries of one stream (``(id, fields)`` as redis-py
    returns them) as :class:`Record`s. The lane is ``(stream,)``, or ``(stream, slot)`` by
    the CRC-32 of the ``key_field`` value when ``slots`` > 1 (entries without the field go to
    slot 0). Entries whose fields are gone (trimmed while pending) are left out."""
    crc = zlib.crc32
    key = key_field.encode() if key_field else None
    lanes: dict[str, list[tuple[Any, ...]]] = {}

    def convert(
        stream: str, entries: Sequence[tuple[bytes, Mapping[bytes, bytes] | None]]
    ) -> list[Record]:
        shared = lanes.get(stream)
        if shared is None:
            shared = [(stream, s) for s in range(slots)] if slots > 1 else [(stream,)]
            lanes[stream] = shared
        base_lane = shared[0]
        base_size = _RECORD_OVERHEAD + len(stream)
        now = time.time()
        out: list[Record] = []
        append = out.append
        for raw_id, fields in entries:
            if not fields:
                continue
            entry_id = raw_id.decode()
            size = base_size
            for name, value in fields.items():
                size += len(name) + len(value) * 4 // 3 + 6
            lane: Hashable = base_lane
            if key is not None and slots > 1:
                picked = fields.get(key)
                if picked is not None:
                    lane = shared[crc(picked) % slots]
            head, _, _ = entry_id.partition("-")
            stamp = int(head) / 1000 if head.isdigit() else now
            append(Record(lane, entry_id, Entry(stream, entry_id, fields), entry_id, size, stamp))
        return out

    return convert


def build_event(
    address: str, group: str, data_field: bytes, records: Sequence[Record]
) -> dict[str, Any]:
    """The ``redis:streams`` event: records grouped by stream, in order."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        entry: Entry = record.data
        grouped.setdefault(entry.stream, []).append(lambda_record(entry, data_field))
    return {"eventSource": EVENT_SOURCE, "url": address, "group": group, "records": grouped}


def redis_view(record: Mapping[str, Any]) -> Any:
    """What filter patterns see of a Redis stream record, given as it is in the event: the
    record with ``data`` base64-decoded, then JSON-decoded when it is JSON (text that is not
    JSON stays RawText), as for Kinesis."""
    return with_decoded(record, "data", decode_base64)


def filter_viewer(data_field: bytes, fields: frozenset[str] | None) -> Callable[[Record], Any]:
    """:func:`redis_view` of a record's event form; straight from the entry's bytes when the
    patterns name only ``data``."""
    if fields is not None and fields <= {"data"}:

        def data_only(record: Record) -> Any:
            raw = record.data.fields.get(data_field)
            return {} if raw is None else {"data": decode_text(raw)}

        return data_only

    def full(record: Record) -> Any:
        return redis_view(lambda_record(record.data, data_field))

    return full


def _iso_ms(timestamp_ms: int) -> str:
    when = datetime.fromtimestamp(timestamp_ms / 1000, tz=UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def batch_info(
    address: str, group: str, data_field: bytes, records: Sequence[Record]
) -> dict[str, Any]:
    """``RedisStreamsBatchInfo`` of an on-failure destination record (modelled on
    ``KinesisBatchInfo``): the stream, first and last entry ids and their times."""
    first: Entry = records[0].data
    last: Entry = records[-1].data
    payload = len(orjson.dumps(build_event(address, group, data_field, records)))
    return {
        "RedisStreamsBatchInfo": {
            "url": address,
            "group": group,
            "stream": first.stream,
            "startEntryId": first.id,
            "endEntryId": last.id,
            "firstEntryTimestamp": _iso_ms(entry_timestamp(first.id)),
            "lastEntryTimestamp": _iso_ms(entry_timestamp(last.id)),
            "batchSize": len(records),
            "payloadSize": payload,
        }
    }
