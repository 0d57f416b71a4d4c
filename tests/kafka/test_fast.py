"""The Kafka source's per-record loops in C (connectors/kafka/_fast.c) give what their Python
twins in connectors/kafka/records.py give, for aiokafka's parsed records and ConsumerRecords
alike (pure)."""

from __future__ import annotations

import gc
import sys
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import pytest
from aiokafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder
from aiokafka.structs import ConsumerRecord
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.kafka import records as kafka_records
from connectors.kafka.records import FAST, build_event, record_converter
from router.models import Record

Message = tuple[int, int, int, bytes | None, bytes | None, list[tuple[str, bytes | None]]]
"""offset, timestamp, timestamp_type, key, value, headers"""

blobs = st.none() | st.binary(max_size=40)
messages = st.lists(
    st.tuples(
        st.integers(0, 2**40),
        st.sampled_from([-1, 0, 1_700_000_000_123, 2**41 + 7]),
        st.sampled_from([0, 1]),
        blobs,
        blobs,
        st.lists(st.tuples(st.text(max_size=8), blobs), max_size=3),
    ),
    max_size=12,
)


def consumer_records(partition: int, items: list[Message]) -> list[Any]:
    return [
        ConsumerRecord(
            "orders", partition, offset, stamp, kind, key, value, None, -1, -1, tuple(headers)
        )
        for offset, stamp, kind, key, value, headers in items
    ]


def parsed_records(items: list[Message]) -> list[Any]:
    """The records aiokafka parses from fetched bytes (what the source hands on)."""
    if not items:
        return []
    builder = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=0,
        is_transactional=0,
        producer_id=-1,
        producer_epoch=-1,
        base_sequence=-1,
        batch_size=2**24,
    )
    for i, (_, stamp, _, key, value, headers) in enumerate(items):
        builder.append(i, timestamp=max(stamp, 0), key=key, value=value, headers=headers)
    return list(DefaultRecordBatch(bytes(builder.build())))


def parsed(_partition: int, items: list[Message]) -> list[Any]:
    return parsed_records(items)


def test_the_c_loops_are_built() -> None:
    # The test command installs the router with a C compiler at hand: without the module
    # the router still works (in Python), but this suite would not test what users run.
    assert FAST, "connectors/kafka/_fast.c was not built: pip install -e . with a C compiler"


@given(messages, messages)
@settings(max_examples=300, deadline=None)
def test_records_and_events_are_the_python_ones(
    first: list[Message], second: list[Message]
) -> None:
    makers: list[Callable[[int, list[Message]], list[Any]]] = [consumer_records, parsed]
    for make in makers:
        python = record_converter(1, fast=False)
        c = record_converter(1, fast=True)
        now_before = time.time()
        ours = c("orders", 3, make(3, first)) + c("orders", 4, make(4, second))
        theirs = python("orders", 3, [r.data for r in ours[: len(first)]])
        theirs += python("orders", 4, [r.data for r in ours[len(first) :]])
        assert len(ours) == len(theirs)
        for a, b in zip(ours, theirs, strict=True):
            assert type(a) is Record
            if a.data.timestamp < 0:
                # Arrival is the time of the fetch: each converter read its own clock.
                assert now_before <= a.arrival <= b.arrival
                a.arrival = b.arrival
            assert a == b
            assert a.data is b.data
        # Lanes interleaved, as a batch of a mapping never holds, and one lane again later.
        mixed = ours[::2] + ours[1::2] + ours[:1]
        assert build_event("b:1", mixed, fast=True) == build_event("b:1", mixed, fast=False)
        assert list(build_event("b:1", mixed, fast=True)["records"]) == list(
            build_event("b:1", mixed, fast=False)["records"]
        )


def test_key_slot_lanes_and_their_events() -> None:
    # Parallelization factor > 1: the lanes are (topic, partition, slot) (converted in Python).
    convert = record_converter(4)
    batch = convert(
        "orders", 1, consumer_records(1, [(i, 5, 0, b"k%d" % i, b"v", []) for i in range(20)])
    )
    assert {len(r.lane) for r in batch} == {3}  # type: ignore[arg-type]
    assert build_event("b:1", batch, fast=True) == build_event("b:1", batch, fast=False)


def test_bad_records_raise_as_in_python() -> None:
    convert = record_converter(1, fast=True)
    odd = consumer_records(1, [(0, 5, 0, None, None, [])])[0]
    odd.value = "not bytes"
    with pytest.raises(TypeError):
        build_event("b:1", convert("orders", 1, [odd]), fast=True)
    with pytest.raises(TypeError):
        build_event("b:1", convert("orders", 1, [odd]), fast=False)
    odd.value = None
    odd.headers = [("only a name",)]
    with pytest.raises(ValueError):
        convert("orders", 1, [odd])
    with pytest.raises(ValueError):
        record_converter(1, fast=False)("orders", 1, [odd])
    with pytest.raises(TypeError):
        kafka_records._FAST.lambda_records([object()])


def test_nothing_is_kept() -> None:
    # References taken while building are all given back: no record, message, lane or
    # string outlives the event.
    convert = record_converter(1, fast=True)
    items = parsed_records([(0, 5, 1, b"key", b"value" * 20, [("h", b"\x01\xff"), ("n", None)])])
    msg = items[0]
    convert("orders", 1, items)  # the lane tuple is made once
    lane = convert("orders", 1, items)[0].lane
    counts = sys.getrefcount(msg), sys.getrefcount(lane)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(2000):
            event = build_event("b:1", convert("orders", 1, items * 5), fast=True)
            del event
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert (sys.getrefcount(msg), sys.getrefcount(lane)) == counts
    assert grown < 20_000
