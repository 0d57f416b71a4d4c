"""Kafka records in the exact shape Lambda delivers for a self-managed Kafka event source.

The per-record path lives here: it is the hot path of the Kafka source, so it avoids
anything it can (no per-record logging, no JSON round trips, nothing built before it is
needed). Its two loops over every record (:func:`record_converter` with one slot,
:func:`build_event`) run in C where ``connectors/kafka/_fast.c`` was built (:data:`FAST`);
the Python loops here give the same results and are what runs without it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
import zlib
from array import array
from binascii import b2a_base64
from collections.abc import Callable, Hashable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, cast

import orjson
from orjson import JSONDecodeError, loads

from router.filters.view import decode_base64, decode_text, with_decoded
from router.models import Record
from router.tracing import upstream_header

EVENT_SOURCE = "SelfManagedKafka"


def _load_fast() -> Any:
    """The C loops of connectors/kafka/_fast.c, or None where they were not built (no C
    compiler when the router was installed) or do not fit this ``Record``."""
    try:
        from connectors.kafka import _fast
    except ImportError:
        return None
    try:
        _fast.setup(Record, [f.name for f in dataclasses.fields(Record)])
    except TypeError:
        return None
    return _fast


_FAST = _load_fast()
FAST = _FAST is not None
"""Whether the Kafka source's per-record loops run in C (the same results, faster)."""

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


def lambda_record(topic: str, partition: int, msg: Any) -> dict[str, Any]:
    """One record of ``topic``/``partition`` as the record Lambda puts in the event. ``msg``
    is the client's record: the one aiokafka parsed from the fetched bytes, or its
    ``ConsumerRecord`` (both have ``offset``, ``timestamp``, ``timestamp_type``, ``key``,
    ``value`` and ``headers``)."""
    data: dict[str, Any] = {
        "topic": topic,
        "partition": partition,
        "offset": msg.offset,
        "timestamp": msg.timestamp,
        "timestampType": "LOG_APPEND_TIME" if msg.timestamp_type == 1 else "CREATE_TIME",
    }
    if msg.key is not None:
        data["key"] = b2a_base64(msg.key, newline=False).decode()
    if msg.value is not None:
        data["value"] = b2a_base64(msg.value, newline=False).decode()
    data["headers"] = [{name: _signed_bytes(raw)} for name, raw in msg.headers]
    return data


def record_converter(slots: int, *, fast: bool = FAST) -> Converter:
    """A function turning the client's records of one partition (see
    :func:`connectors.kafka.client.hand_out_parsed_records`) into :class:`Record`s:
    ``convert(topic, partition, messages)``.

    A record keeps the client's record as ``data`` and its offset as ``position``; the
    topic and partition are those of its lane (the client's record may not carry them). The
    Lambda record is built only when a batch is invoked (:func:`build_event`), so records
    the filter drops never pay for it. ``slots`` is the mapping's parallelization factor:
    1 gives one lane per partition ``(topic, partition)``; more gives
    ``(topic, partition, slot)`` lanes by key. Lane tuples are shared by every record of a
    lane, so :func:`build_event` can group by identity. ``fast``: with one slot, the loop
    runs in C (:data:`FAST`)."""
    crc = zlib.crc32
    records_in_c = _FAST.records if fast and _FAST is not None and slots <= 1 else None
    lanes: dict[tuple[str, int], list[tuple[Any, ...]]] = {}

    def convert(topic: str, partition: int, messages: Sequence[Any]) -> list[Record]:
        shared = lanes.get((topic, partition))
        if shared is None:
            if slots > 1:
                shared = [(topic, partition, s) for s in range(slots)]
            else:
                shared = [(topic, partition)]
            lanes[(topic, partition)] = shared
        base_lane = shared[0]
        base_size = _RECORD_OVERHEAD + len(topic)
        now = time.time()
        if records_in_c is not None:
            return cast(list[Record], records_in_c(messages, base_lane, base_size, now))
        out: list[Record] = []
        append = out.append
        for msg in messages:
            # base64 grows key and value by a third.
            key = msg.key
            value = msg.value
            size = base_size
            if key is not None:
                size += len(key) * 4 // 3
            if value is not None:
                size += len(value) * 4 // 3
            headers = msg.headers
            if headers:
                for name, raw in headers:
                    size += len(name) + 8 + (len(raw) * 4 if raw else 0)
            if slots > 1:
                lane: Hashable = shared[crc(key) % slots] if key is not None else base_lane
            else:
                lane = base_lane
            stamp = msg.timestamp
            append(Record(lane, msg.offset, msg, "", size, stamp / 1000 if stamp >= 0 else now))
        return out

    return convert


def identifiers(records: Sequence[Record]) -> list[str]:
    """The ``itemIdentifier`` of each record: ``<topic>-<partition>:<offset>``."""
    return [f"{_partition_key(r)}:{r.position}" for r in records]


def _topic_partition(record: Record) -> tuple[str, int]:
    # A lane is (topic, partition) or (topic, partition, slot).
    lane = cast(tuple[Any, ...], record.lane)
    return lane[0], lane[1]


def _partition_key(record: Record) -> str:
    topic, partition = _topic_partition(record)
    return f"{topic}-{partition}"


def build_event(bootstrap: str, records: Sequence[Record], *, fast: bool = FAST) -> dict[str, Any]:
    """The ``SelfManagedKafka`` event: records grouped by ``<topic>-<partition>``, in order.
    ``fast``: built in C (:data:`FAST`)."""
    if fast and _FAST is not None:
        return {
            "eventSource": EVENT_SOURCE,
            "bootstrapServers": bootstrap,
            "records": _FAST.lambda_records(records),
        }
    grouped: dict[str, list[dict[str, Any]]] = {}
    b64 = b2a_base64
    lane: Any = None
    topic = ""
    partition = 0
    current: list[dict[str, Any]] = []
    append = current.append
    for record in records:
        if record.lane is not lane:
            lane = record.lane
            topic, partition = lane[0], lane[1]
            current = grouped.setdefault(f"{topic}-{partition}", [])
            append = current.append
        msg = record.data
        key = msg.key
        value = msg.value
        if key is not None and value is not None and not msg.headers:
            # The common case in one dict literal (cheaper than inserting keys).
            append(
                {
                    "topic": topic,
                    "partition": partition,
                    "offset": msg.offset,
                    "timestamp": msg.timestamp,
                    "timestampType": "LOG_APPEND_TIME"
                    if msg.timestamp_type == 1
                    else "CREATE_TIME",
                    "key": b64(key, newline=False).decode(),
                    "value": b64(value, newline=False).decode(),
                    "headers": [],
                }
            )
        else:
            append(lambda_record(topic, partition, msg))
    return {"eventSource": EVENT_SOURCE, "bootstrapServers": bootstrap, "records": grouped}


def kafka_view(record: Mapping[str, Any]) -> Any:
    """What filter patterns see of a Kafka record (MSK, self-managed), given as it is in the
    Lambda event: the record (``topic``, ``partition``, ``offset``, ``timestamp``,
    ``timestampType``, ``key``, ``headers``, ``value``) with ``value`` base64-decoded, then
    UTF-8-decoded, then JSON-decoded when it is JSON; text that is not JSON stays RawText.
    Bytes that are not valid UTF-8 are decoded with replacement characters (AWS documents
    such records as only matching metadata filters; this keeps string patterns meaningful and
    makes every pattern inside ``value`` fail). A null value (tombstone) stays null. ``key``
    stays base64, as in the Lambda event (AWS only documents filtering on ``value``)."""
    return with_decoded(record, "value", decode_base64)


def filter_viewer(fields: frozenset[str] | None) -> Callable[[Record], Any]:
    """What filter patterns see for a Kafka record read from the broker: :func:`kafka_view`
    of its Lambda record. When the patterns name only ``value`` (the usual case), the view is
    built straight from the message's bytes, without base64."""
    if fields is not None and fields <= {"value"}:

        def value_only(record: Record) -> Any:
            raw = record.data.value
            if raw is None:
                # A null value (tombstone) has no "value" key in the Lambda record.
                return {}
            try:
                # JSON, the usual value, without a call more (decode_text tries it first).
                return {"value": loads(raw)}
            except JSONDecodeError:
                return {"value": decode_text(raw)}

        return value_only

    def full(record: Record) -> Any:
        return kafka_view(lambda_record(*_topic_partition(record), record.data))

    return full


def _iso_ms(timestamp_ms: int) -> str:
    when = datetime.fromtimestamp(timestamp_ms / 1000, tz=UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def batch_info(bootstrap: str, records: Sequence[Record]) -> dict[str, Any]:
    """``KafkaBatchInfo`` of an on-failure destination record, as Lambda writes it for a
    self-managed cluster (no ``eventSourceArn``): offsets as strings, times in ISO 8601."""
    infos: dict[str, dict[str, str]] = {}
    for record in records:
        msg = record.data
        key = _partition_key(record)
        info = infos.get(key)
        offset = str(msg.offset)
        stamp = _iso_ms(msg.timestamp)
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


def trace_fields(records: Sequence[Record]) -> dict[str, str]:
    """``trace_id`` of the first record's ``X-Amzn-Trace-Id`` or ``traceparent`` header, in
    X-Ray form (see :mod:`router.tracing`); none when it has neither."""
    if not records:
        return {}
    headers = {}
    for name, raw in records[0].data.headers or ():
        with contextlib.suppress(UnicodeDecodeError, AttributeError):
            headers[name] = raw.decode()
    found = upstream_header(headers)
    return {"trace_id": found} if found else {}
