"""Kafka records in the exact shape Lambda delivers for a self-managed Kafka event source.

The per-record path lives here: it is the hot path of the Kafka source, so it avoids
anything it can (no per-record logging, no JSON round trips, one dict per record).
"""

from __future__ import annotations

import zlib
from array import array
from binascii import b2a_base64
from collections.abc import Callable, Hashable, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from router.models import Record

EVENT_SOURCE = "SelfManagedKafka"

# JSON overhead of one record dict besides key, value and headers (field names, offsets).
_RECORD_OVERHEAD = 130


def _signed_bytes(value: bytes | None) -> list[int] | None:
    # Lambda renders header values as Java byte[]: signed ints -128..127.
    return None if value is None else array("b", value).tolist()


def key_slot(key: bytes | None, slots: int) -> int:
    """The lane slot of a record key within its partition (``parallelization_factor``).

    CRC-32 is stable across processes and versions, so a key keeps its slot after a
    restart. Records without a key share slot 0, which keeps them in offset order."""
    if key is None or slots <= 1:
        return 0
    return zlib.crc32(key) % slots


Converter = Callable[[str, int, Sequence[Any]], list[Record]]


def record_converter(slots: int) -> Converter:
    """A function turning aiokafka ``ConsumerRecord``s of one partition into
    :class:`Record`s: ``convert(topic, partition, messages)``.

    ``slots`` is the mapping's parallelization factor: 1 gives one lane per partition
    ``(topic, partition)``; more gives ``(topic, partition, slot)`` lanes by key."""
    b64 = b2a_base64
    crc = zlib.crc32

    def convert(topic: str, partition: int, messages: Sequence[Any]) -> list[Record]:
        # Everything that is the same for the whole partition is computed once.
        base_lane = (topic, partition)
        slot_lanes = [(topic, partition, s) for s in range(slots)]
        prefix = f"{topic}-{partition}:"
        base_size = _RECORD_OVERHEAD + len(topic)
        out: list[Record] = []
        append = out.append
        for msg in messages:
            offset: int = msg.offset
            timestamp: int = msg.timestamp
            kind = "LOG_APPEND_TIME" if msg.timestamp_type == 1 else "CREATE_TIME"
            key = msg.key
            value = msg.value
            size = base_size
            if key is not None and value is not None:
                # The common case in one dict literal (cheaper than inserting keys).
                data: dict[str, Any] = {
                    "topic": topic,
                    "partition": partition,
                    "offset": offset,
                    "timestamp": timestamp,
                    "timestampType": kind,
                    "key": b64(key, newline=False).decode(),
                    "value": b64(value, newline=False).decode(),
                }
                size += (len(key) + len(value)) * 4 // 3 + 8
            else:
                data = {
                    "topic": topic,
                    "partition": partition,
                    "offset": offset,
                    "timestamp": timestamp,
                    "timestampType": kind,
                }
                if key is not None:
                    data["key"] = b64(key, newline=False).decode()
                    size += len(key) * 4 // 3 + 4
                if value is not None:
                    data["value"] = b64(value, newline=False).decode()
                    size += len(value) * 4 // 3 + 4
            headers = msg.headers
            if headers:
                rendered = []
                for name, raw in headers:
                    rendered.append({name: _signed_bytes(raw)})
                    size += len(name) + 8 + (len(raw) * 4 if raw else 0)
                data["headers"] = rendered
            else:
                data["headers"] = []
            if slots > 1:
                lane: Hashable = slot_lanes[crc(key) % slots if key is not None else 0]
            else:
                lane = base_lane
            append(
                Record(
                    lane,
                    (topic, partition, offset),
                    data,
                    prefix + str(offset),
                    size,
                    timestamp / 1000 if timestamp >= 0 else 0.0,
                )
            )
        return out

    return convert


def build_event(bootstrap: str, records: Sequence[Record]) -> dict[str, Any]:
    """The ``SelfManagedKafka`` event: records grouped by ``<topic>-<partition>``, in order."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    current_key = ""
    current: list[dict[str, Any]] = []
    for record in records:
        data = record.data
        key = f"{data['topic']}-{data['partition']}"
        if key != current_key:
            current = grouped.setdefault(key, [])
            current_key = key
        current.append(data)
    return {"eventSource": EVENT_SOURCE, "bootstrapServers": bootstrap, "records": grouped}


def _iso_ms(timestamp_ms: int) -> str:
    when = datetime.fromtimestamp(timestamp_ms / 1000, tz=UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def batch_info(bootstrap: str, records: Sequence[Record]) -> dict[str, Any]:
    """``KafkaBatchInfo`` of an on-failure destination record, as Lambda writes it for a
    self-managed cluster (no ``eventSourceArn``): offsets as strings, times in ISO 8601."""
    infos: dict[str, dict[str, str]] = {}
    for record in records:
        data = record.data
        key = f"{data['topic']}-{data['partition']}"
        info = infos.get(key)
        offset = str(data["offset"])
        stamp = _iso_ms(data["timestamp"])
        if info is None:
            infos[key] = {
                "firstRecordOffset": offset,
                "lastRecordOffset": offset,
                "firstRecordTimestamp": stamp,
                "lastRecordTimestamp": stamp,
            }
        else:
            info["lastRecordOffset"] = offset
            info["lastRecordTimestamp"] = stamp
    payload = len(orjson.dumps(build_event(bootstrap, records)))
    return {
        "KafkaBatchInfo": {
            "batchSize": len(records),
            "bootstrapServers": bootstrap,
            "payloadSize": payload,
            "recordsInfo": infos,
        }
    }
