"""KafkaSource against a real broker: event shape, ordering, lanes, starting positions,
commits after ack, resets from the store, rebalances."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
from collections import defaultdict
from datetime import UTC, datetime
from functools import partial
from typing import Any, cast

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import ConsumerRecord

from connectors.kafka.client import hand_out_parsed_records
from connectors.kafka.records import key_slot, record_converter
from connectors.kafka.source import KafkaSource
from router.errors import SourceError
from router.models import Record
from router.store import SQLStore
from tests.fixtures.kafka import TopicFactory
from tests.kafka.helpers import Message, committed, make_source, offsets, produce, running
from tests.kafka.sink import RecordingSink

pytestmark = pytest.mark.kafka


async def wait_until(predicate: Any, timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def partition_of(record: Record) -> int:
    """The partition of a record: its lane is (topic, partition) or (topic, partition, slot)."""
    return cast(tuple[Any, ...], record.lane)[1]  # type: ignore[no-any-return]


def _has_partition(sink: RecordingSink, partition: int) -> bool:
    return any(partition_of(r) == partition for r in sink.records)


async def assigned(source: KafkaSource, n: int = 1) -> None:
    """Wait until the source owns ``n`` partitions and their fetch positions are known."""
    await wait_until(lambda: len(source._offsets) >= n, what=f"{n} partitions assigned")
    consumer = source._consumer
    assert consumer is not None
    for tp in list(source._offsets):
        await consumer.position(tp)


async def test_delivers_records_in_the_exact_aws_shape(
    sqlite_store: SQLStore, kafka_broker: str, kafka_topic: str
) -> None:
    topic = kafka_topic
    await produce(
        kafka_broker,
        topic,
        [
            (b"order-1", b'{"state":"PAID"}', [("traceId", b"abc"), ("bin", b"\xff\x80\x00\x7f")]),
            (None, b"\x00\xffbinary", None),
            (b"k", None, [("traceId", b"x"), ("traceId", b"y")]),
        ],
    )
    source = make_source(sqlite_store, kafka_broker, [topic])
    sink = RecordingSink()
    async with running(source, sink):
        records = await sink.wait_count(3)
    event = source.build_event(records)
    assert event["eventSource"] == "SelfManagedKafka"
    assert event["bootstrapServers"] == kafka_broker
    assert list(event["records"]) == [f"{topic}-0"]
    first, second, third = event["records"][f"{topic}-0"]
    stamp = first["timestamp"]
    assert isinstance(stamp, int) and abs(stamp / 1000 - time.time()) < 60
    assert first == {
        "topic": topic,
        "partition": 0,
        "offset": 0,
        "timestamp": stamp,
        "timestampType": "CREATE_TIME",
        "key": base64.b64encode(b"order-1").decode(),
        "value": base64.b64encode(b'{"state":"PAID"}').decode(),
        "headers": [{"traceId": [97, 98, 99]}, {"bin": [-1, -128, 0, 127]}],
    }
    assert second == {
        "topic": topic,
        "partition": 0,
        "offset": 1,
        "timestamp": second["timestamp"],
        "timestampType": "CREATE_TIME",
        "value": base64.b64encode(b"\x00\xffbinary").decode(),
        "headers": [],
    }
    assert "value" not in third
    assert third["key"] == "aw=="
    assert third["headers"] == [{"traceId": [120]}, {"traceId": [121]}]
    assert [r.lane for r in records] == [(topic, 0)] * 3
    assert [r.position for r in records] == [0, 1, 2]
    assert source.identifiers(records) == [f"{topic}-0:{i}" for i in range(3)]
    assert records[0].arrival == stamp / 1000
    assert all(r.size > 100 for r in records)

    info = source.batch_info(records)["KafkaBatchInfo"]
    assert info["batchSize"] == 3
    assert info["bootstrapServers"] == kafka_broker
    assert info["payloadSize"] > 0
    part = info["recordsInfo"][f"{topic}-0"]
    assert (part["firstRecordOffset"], part["lastRecordOffset"]) == ("0", "2")
    assert part["firstRecordTimestamp"].endswith("Z")


async def test_records_are_the_clients_parsed_records_and_build_the_same_event(
    sqlite_store: SQLStore, kafka_broker: str, kafka_topic: str
) -> None:
    # Produced once the source's consumer runs: fetched after it was told to hand out the
    # records it parses, without a ConsumerRecord each.
    source = make_source(sqlite_store, kafka_broker, [kafka_topic])
    sink = RecordingSink()
    messages: list[Message | bytes] = [
        (b"k", b'{"n":1}', [("h", b"\x01\xff")]),
        (None, b"v", None),
        (b"tomb", None, None),
    ]
    async with running(source, sink):
        await assigned(source)
        await produce(kafka_broker, kafka_topic, messages)
        records = await sink.wait_count(3)
    assert all(not isinstance(r.data, ConsumerRecord) for r in records)
    # The same messages read by a bare consumer, as ConsumerRecords, give the same event.
    consumer = AIOKafkaConsumer(
        kafka_topic, bootstrap_servers=kafka_broker, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        fetched: list[ConsumerRecord[bytes, bytes]] = []
        while len(fetched) < 3:
            for got in (await consumer.getmany(timeout_ms=1000)).values():
                fetched.extend(got)
    finally:
        await consumer.stop()
    converted = record_converter(1)(kafka_topic, 0, fetched)
    assert source.build_event(records) == source.build_event(converted)
    assert source.identifiers(records) == source.identifiers(converted)
    assert source.batch_info(records) == source.batch_info(converted)
    assert [r.size for r in records] == [r.size for r in converted]


async def test_a_consumer_with_a_deserializer_keeps_its_consumer_records(
    kafka_broker: str, kafka_topic: str
) -> None:
    consumer = AIOKafkaConsumer(
        kafka_topic, bootstrap_servers=kafka_broker, value_deserializer=bytes.decode
    )
    await consumer.start()
    try:
        assert not hand_out_parsed_records(consumer)
    finally:
        await consumer.stop()


async def test_order_per_partition_and_acks_commit_only_the_acked_prefix(
    sqlite_store: SQLStore, kafka_broker: str, make_topic: TopicFactory
) -> None:
    topic = await make_topic(3)
    for partition in range(3):
        await produce(
            kafka_broker,
            topic,
            [f"{partition}-{i}".encode() for i in range(50)],
            partition=partition,
        )
    group = "g-order"
    source = make_source(sqlite_store, kafka_broker, [topic], group=group)
    sink = RecordingSink()
    async with running(source, sink):
        records = await sink.wait_count(150)
        by_partition: dict[int, list[int]] = defaultdict(list)
        for record in records:
            # The lane is the partition the record was produced to.
            assert record.lane == (topic, partition_of(record))
            assert record.data.value == f"{partition_of(record)}-{record.data.offset}".encode()
            by_partition[partition_of(record)].append(record.data.offset)
        assert by_partition == {p: list(range(50)) for p in range(3)}
        # Partition 0: ack 0..9; partition 1: everything; partition 2: nothing.
        await source.ack([r for r in records if partition_of(r) == 0][:10])
        await source.ack([r for r in records if partition_of(r) == 1])
        await wait_until(
            lambda: source._offsets[TopicPartition(topic, 1)].committed == 50, what="commit"
        )
        # Partition 2 is pinned at its start: a crash before any ack resumes there, even when
        # the starting position is LATEST.
        assert await committed(kafka_broker, group, topic, 3) == [10, 50, 0]
        rows = await sqlite_store.get_checkpoints(source.context.mapping.uuid)
    # Closing mirrors the committed offsets into the store.
    rows = await sqlite_store.get_checkpoints(source.context.mapping.uuid)
    assert rows[f"{topic}:0"] == "10"
    assert rows[f"{topic}:1"] == "50"
    assert rows[f"{topic}:2"] == "0"

    # A new consumer of the same group resumes right after the last acknowledged record.
    again = make_source(sqlite_store, kafka_broker, [topic], group=group)
    sink2 = RecordingSink()
    async with running(again, sink2):
        records = await sink2.wait_count(90)
    firsts: dict[int, int] = {}
    for record in records:
        firsts.setdefault(partition_of(record), record.data.offset)
    assert firsts == {0: 10, 2: 0}


async def test_a_commit_waiting_behind_another_one_keeps_its_deadline(
    sqlite_store: SQLStore, kafka_broker: str, make_topic: TopicFactory
) -> None:
    # A revoke's commit can hold the commit lock for a whole request timeout when the
    # cluster misbehaves; the last commit at close must still end on time.
    topic = await make_topic(1)
    await produce(kafka_broker, topic, [b"1"])
    source = make_source(sqlite_store, kafka_broker, [topic])
    sink = RecordingSink()
    async with running(source, sink):
        records = await sink.wait_count(1)
        await source._commit_lock.acquire()  # another commit in progress
        try:
            await source.ack(records)
            started = time.monotonic()
            assert await source._commit(None, timeout=0.3) is False
            assert time.monotonic() - started < 5
            assert "PROBLEM: kafka offset commit failed: TimeoutError" in sink.reports
        finally:
            source._commit_lock.release()
        await wait_until(lambda: source._offsets[TopicPartition(topic, 0)].committed == 1)


async def test_parallelization_factor_lanes_by_key(
    sqlite_store: SQLStore, kafka_broker: str, kafka_topic: str
) -> None:
    keys = [f"key-{i}".encode() for i in range(8)]
    messages: list[Message] = [(keys[i % 8], f"{i}".encode(), None) for i in range(200)]
    messages.append((None, b"no-key", None))
    await produce(kafka_broker, kafka_topic, messages)
    group = "g-lanes"
    source = make_source(
        sqlite_store, kafka_broker, [kafka_topic], group=group, parallelization_factor=4
    )
    sink = RecordingSink()
    async with running(source, sink):
        records = await sink.wait_count(201)
        lanes: set[tuple[str, int, int]] = {r.lane for r in records}  # type: ignore[misc]
        assert len(lanes) > 1
        assert all(lane[:2] == (kafka_topic, 0) and 0 <= lane[2] < 4 for lane in lanes)
        per_key: dict[bytes | None, list[int]] = defaultdict(list)
        for record in records:
            key = record.data.key
            assert record.lane == (kafka_topic, 0, key_slot(key, 4))
            per_key[key].append(record.data.offset)
        assert all(seq == sorted(seq) for seq in per_key.values())
        assert records[-1].lane == (kafka_topic, 0, 0)  # null key: slot 0

        # Lanes finish out of order: the commit only covers the contiguous acked prefix.
        by_lane: dict[Any, list[Any]] = defaultdict(list)
        for record in records:
            by_lane[record.lane].append(record)
        first_lane = records[0].lane
        others = [r for lane, rs in by_lane.items() if lane != first_lane for r in rs]
        await source.ack(others)
        tracker = source._offsets[TopicPartition(kafka_topic, 0)]
        assert tracker.committable == 0
        await source.ack(by_lane[first_lane][:1])
        await wait_until(lambda: tracker.committed is not None and tracker.committed > 0)
        second_of_first = by_lane[first_lane][1].data.offset
        assert tracker.committable == second_of_first
        await source.ack(by_lane[first_lane][1:])
        await wait_until(lambda: tracker.committed == 201, what="full commit")
    assert await committed(kafka_broker, group, kafka_topic) == [201]


async def test_latest_skips_what_was_there_before(
    sqlite_store: SQLStore, kafka_broker: str, kafka_topic: str
) -> None:
    await produce(kafka_broker, kafka_topic, [b"old-1", b"old-2"], one_by_one=True)
    source = make_source(sqlite_store, kafka_broker, [kafka_topic], position="LATEST")
    sink = RecordingSink()
    async with running(source, sink):
        await assigned(source)
        await produce(kafka_broker, kafka_topic, [b"new-1"])
        records = await sink.wait_count(1)
        assert records[0].data.value == b"new-1"
        assert records[0].data.offset == 2


async def test_at_timestamp_starts_at_the_first_record_at_or_after_it(
    sqlite_store: SQLStore, kafka_broker: str, kafka_topic: str
) -> None:
    # The test broker looks times up by append time, so the records get real, spaced times.
    stamps = []
    producer = AIOKafkaProducer(bootstrap_servers=kafka_broker, enable_idempotence=False)
    await producer.start()
    try:
        for i in range(6):
            meta = await producer.send_and_wait(kafka_topic, f"r{i}".encode())
            stamps.append(meta.timestamp)
            await asyncio.sleep(0.01)  # distinct milliseconds between records
    finally:
        await producer.stop()
    start_ms = (stamps[2] + stamps[3]) // 2 + 1
    start = datetime.fromtimestamp(start_ms / 1000, tz=UTC)
    source = make_source(
        sqlite_store, kafka_broker, [kafka_topic], position="AT_TIMESTAMP", timestamp=start
    )
    sink = RecordingSink()
    async with running(source, sink):
        records = await sink.wait_count(3)
        assert offsets(records) == [3, 4, 5]
        assert records[0].arrival == stamps[3] / 1000


async def test_source_level_starting_position_overrides_the_mapping(
    sqlite_store: SQLStore, kafka_broker: str, kafka_topic: str
) -> None:
    await produce(kafka_broker, kafka_topic, [b"a", b"b"])
    source = make_source(
        sqlite_store,
        kafka_broker,
        [kafka_topic],
        position="LATEST",
        starting_position="TRIM_HORIZON",
    )
    sink = RecordingSink()
    async with running(source, sink):
        assert offsets(await sink.wait_count(2)) == [0, 1]


async def test_operator_reset_rows_move_the_group(
    sqlite_store: SQLStore, kafka_broker: str, make_topic: TopicFactory
) -> None:
    topic = await make_topic(2)
    for partition in range(2):
        await produce(kafka_broker, topic, [b"x"] * 10, partition=partition)
    group = "g-reset"
    uuid_ = "3f0c1a52-0000-4000-8000-000000000001"
    source = make_source(sqlite_store, kafka_broker, [topic], group=group, uuid_=uuid_)
    sink = RecordingSink()
    async with running(source, sink):
        await source.ack(await sink.wait_count(20))
        await wait_until(
            lambda: all(t.committed == 10 for t in source._offsets.values()), what="commits"
        )
    rows = await sqlite_store.get_checkpoints(uuid_)
    assert rows[f"{topic}:0"] == rows[f"{topic}:1"] == "10"

    # Replay partition 0 from offset 7 (an UPDATE of the mirrored row) and partition 1 from
    # offset 4 (an explicit reset row).
    await sqlite_store.put_checkpoints(uuid_, {f"{topic}:0": "7", f"reset:{topic}:1": "4"})
    again = make_source(sqlite_store, kafka_broker, [topic], group=group, uuid_=uuid_)
    sink2 = RecordingSink()
    async with running(again, sink2):
        records = await sink2.wait_count(9)
        got = sorted((partition_of(r), r.data.offset) for r in records)
        assert got == [(0, o) for o in range(7, 10)] + [(1, o) for o in range(4, 10)]
        await wait_until(
            lambda: all(t.committed is not None for t in again._offsets.values()),
            what="reset commits",
        )
        assert await committed(kafka_broker, group, topic, 2) == [7, 4]
    rows = await sqlite_store.get_checkpoints(uuid_)
    assert f"reset:{topic}:1" not in rows
    assert rows[f"{topic}:0"] == "7"
    assert rows[f"_mirrored:{topic}:0"] == "7"


async def test_a_reset_covers_partitions_another_member_owns(
    sqlite_store: SQLStore, kafka_broker: str, make_topic: TopicFactory
) -> None:
    topic = await make_topic(2)
    for partition in range(2):
        await produce(kafka_broker, topic, [b"x"] * 6, partition=partition)
    group = "g-reset-shared"
    uuid_ = "3f0c1a52-0000-4000-8000-000000000002"
    first = make_source(sqlite_store, kafka_broker, [topic], group=group, uuid_=uuid_)
    sink1 = RecordingSink()
    async with running(first, sink1):
        await first.ack(await sink1.wait_count(12))
        await wait_until(lambda: all(t.committed == 6 for t in first._offsets.values()))
        await sqlite_store.put_checkpoints(uuid_, {"reset:*": "TRIM_HORIZON"})
        # A second replica starts with the reset row: it owns one partition after the
        # rebalance, and commits the reset for the other one too.
        second = make_source(sqlite_store, kafka_broker, [topic], group=group, uuid_=uuid_)
        sink2 = RecordingSink()
        async with running(second, sink2):
            records = await sink2.wait_count(6)
            assert offsets(records) == list(range(6))
            await wait_until(lambda: not second._foreign, what="reset committed everywhere")
            got = await committed(kafka_broker, group, topic, 2)
            mine = next(iter(second._offsets)).partition
            assert got[1 - mine] == 0  # the other member's partition starts over as well
        assert "reset:*" not in await sqlite_store.get_checkpoints(uuid_)


async def test_rebalance_between_two_sources_loses_nothing(
    sqlite_store: SQLStore, kafka_broker: str, make_topic: TopicFactory
) -> None:
    topic = await make_topic(4)
    for partition in range(4):
        await produce(kafka_broker, topic, [b"a"] * 5, partition=partition)
    group = "g-rebalance"
    first = make_source(sqlite_store, kafka_broker, [topic], group=group)
    sink1 = RecordingSink()
    async with running(first, sink1):
        await sink1.wait_count(20)
        # Acknowledge only partitions 0 and 1 before the second member arrives.
        await first.ack([r for r in sink1.records if partition_of(r) in (0, 1)])
        second = make_source(sqlite_store, kafka_broker, [topic], group=group)
        sink2 = RecordingSink()
        async with running(second, sink2):
            await wait_until(
                lambda: (
                    len(first._offsets) + len(second._offsets) == 4
                    and len(second._offsets) > 0
                    and len(first._offsets) > 0
                ),
                what="partitions split",
            )
            assert sink1.revoked, "the first member's lanes were revoked"
            revoked_lanes = set().union(*(lanes for lanes, _ in sink1.revoked))
            assert {(topic, p) for p in range(4)} <= revoked_lanes
            # Whatever the second member got starts right after what was acknowledged.
            theirs = {tp.partition for tp in second._offsets}
            for partition in {2, 3} & theirs:
                await sink2.wait_for(
                    partial(_has_partition, sink2, partition),
                    what=f"partition {partition} redelivered",
                )
            starts: dict[int, int] = {}
            for record in sink2.records:
                starts.setdefault(partition_of(record), record.data.offset)
            for partition in theirs:
                if partition in (0, 1):
                    assert partition not in starts  # nothing new to read
                else:
                    assert starts[partition] == 0
            assert await committed(kafka_broker, group, topic, 4) == [5, 5, 0, 0]


async def test_unreachable_broker_raises_source_error(sqlite_store: SQLStore) -> None:
    from tests.fixtures.procs import free_port

    source = make_source(
        sqlite_store, f"127.0.0.1:{free_port()}", ["nowhere"], request_timeout_ms=1000
    )
    with pytest.raises(SourceError, match="cannot join group"):
        await source.run(RecordingSink())
    await source.aclose()


async def test_a_broker_that_goes_away_shows_as_a_problem(sqlite_store: SQLStore) -> None:
    # The client retries a lost broker quietly; the source probes the cluster when no
    # records come and reports it, reports OK once the cluster answers again, and closes in
    # bounded time.
    from tests.fixtures.kafka import tansu_broker
    from tests.fixtures.procs import stop_process

    with tansu_broker() as (broker, process):
        admin = AIOKafkaAdminClient(bootstrap_servers=broker)
        await admin.start()
        try:
            await admin.create_topics([NewTopic("gone", 1, 1)])
        finally:
            await admin.close()
        await produce(broker, "gone", [b"1"])
        source = make_source(sqlite_store, broker, ["gone"], probe_interval=0.5, close_timeout=2)
        sink = RecordingSink()
        task = asyncio.create_task(source.run(sink))
        try:
            await sink.wait_count(1)
            await source.ack(sink.records)
            stop_process(process)
            await wait_until(
                lambda: any("cluster unreachable" in r for r in sink.reports),
                what="PROBLEM report",
            )
            problem = next(r for r in sink.reports if "cluster unreachable" in r)
            assert problem.startswith(f"PROBLEM: kafka {broker}: cluster unreachable")
            # A broker back at the same address (an empty one: tansu keeps nothing).
            seen = len(sink.reports)
            with tansu_broker(port=int(broker.rsplit(":", 1)[1])):
                await wait_until(lambda: "OK" in sink.reports[seen:], what="OK report")
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            started = time.monotonic()
            await source.aclose()
        assert time.monotonic() - started < 10


async def test_lane_lag_is_the_end_offset_minus_the_next_offset_to_acknowledge(
    sqlite_store: SQLStore, kafka_broker: str, make_topic: TopicFactory
) -> None:
    topic = await make_topic(2)
    await produce(kafka_broker, topic, [f"a{i}".encode() for i in range(30)], partition=0)
    await produce(kafka_broker, topic, [f"b{i}".encode() for i in range(5)], partition=1)
    source = make_source(sqlite_store, kafka_broker, [topic], group="g-lag")
    sink = RecordingSink()

    def lag() -> dict[str, float]:
        out: dict[str, float] = {}
        for family in source.metrics():
            assert (family.name, family.type) == ("router_lane_lag", "gauge")
            for sample, labels, value in family.samples:
                assert sample == "router_lane_lag"
                assert labels["mapping"] == source.context.mapping.name
                out[labels["lane"]] = value
        return out

    async with running(source, sink):
        records = await sink.wait_count(35)
        # Fetched, none acknowledged: everything is behind.
        await wait_until(lambda: lag() == {f"{topic}:0": 30, f"{topic}:1": 5}, what="lag 30/5")
        await source.ack([r for r in records if partition_of(r) == 0][:10])
        await source.ack([r for r in records if partition_of(r) == 1])
        assert lag() == {f"{topic}:0": 20, f"{topic}:1": 0}
        # New records at the end of partition 1 are behind once fetched.
        await produce(kafka_broker, topic, [b"c0", b"c1", b"c2"], partition=1)
        await sink.wait_count(38)
        await wait_until(lambda: lag().get(f"{topic}:1") == 3, what="lag 3 on partition 1")
