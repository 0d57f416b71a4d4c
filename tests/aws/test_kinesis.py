"""The Kinesis source through a running Router (SQLite store, moto server over HTTP):
event shapes, order per shard and per key, starting positions, checkpoints and restarts,
filters, partial batch failures, bisect to the on-failure destination."""

from __future__ import annotations

import asyncio
import time
import zlib
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from connectors.aws.kinesis import KinesisSettings
from router.config import load_config_text
from router.errors import ConfigErrors
from router.ops import render_metrics
from router.store import SQLStore
from tests.aws import stream_handlers
from tests.aws.streams import delivered, kinesis_config, make_stream, put
from tests.helpers import eventually, run_router

pytestmark = pytest.mark.aws

RECORD_KEYS = {
    "kinesis",
    "eventSource",
    "eventVersion",
    "eventID",
    "eventName",
    "invokeIdentityArn",
    "awsRegion",
    "eventSourceARN",
}
KINESIS_KEYS = {
    "kinesisSchemaVersion",
    "partitionKey",
    "sequenceNumber",
    "data",
    "approximateArrivalTimestamp",
}


@pytest.fixture(autouse=True)
def events() -> Iterator[list[dict[str, Any]]]:
    stream_handlers.EVENTS.clear()
    stream_handlers.FAILED_ONCE.clear()
    yield stream_handlers.EVENTS
    stream_handlers.EVENTS.clear()
    stream_handlers.FAILED_ONCE.clear()


async def _mapping_uuid(store: SQLStore) -> str:
    row = await store.get_mapping_by_name("clicks")
    assert row is not None
    return row.uuid


async def test_records_arrive_as_lambda_delivers_them_in_order_per_shard(
    aws: Any, sqlite_store: SQLStore, events: list[dict[str, Any]]
) -> None:
    async with aws.client("kinesis") as kinesis:
        arn = await make_stream(kinesis, shards=2)
        items = [(f"k{i % 7}", orjson.dumps({"i": i}).decode()) for i in range(60)]
        answers = await put(kinesis, arn, items)
        config = kinesis_config(arn, aws.endpoint, mapping="    starting_position: TRIM_HORIZON")
        async with run_router(config, sqlite_store) as router:
            await eventually(lambda: len(delivered()) == 60, what="60 records delivered")
            uuid = await _mapping_uuid(sqlite_store)
            metrics = render_metrics(router)
            assert 'router_stream_shards_held{mapping="clicks",replica=' in metrics
            assert metrics.count("router_stream_iterator_age_milliseconds{") == 2
            last: dict[str, str] = {}
            for answer in answers:
                last[answer["ShardId"]] = answer["SequenceNumber"]

            async def checkpointed() -> bool:
                rows = await sqlite_store.get_checkpoints(uuid)
                return all(rows.get(shard) == seq for shard, seq in last.items())

            await eventually(checkpointed, what="a checkpoint per shard at its last record")
    # Per shard, the order the stream holds them in (the put order of their keys).
    expected: dict[str, list[str]] = defaultdict(list)
    for (_, data), answer in zip(items, answers, strict=True):
        expected[answer["ShardId"]].append(data)
    seen: dict[str, list[str]] = defaultdict(list)
    for shard, _, data in delivered():
        seen[shard].append(data)
    assert seen == expected
    record = events[0]["Records"][0]
    assert set(events[0]) == {"Records"}
    assert set(record) == RECORD_KEYS
    assert set(record["kinesis"]) == KINESIS_KEYS
    assert record["eventSource"] == "aws:kinesis"
    assert record["eventName"] == "aws:kinesis:record"
    assert record["eventVersion"] == "1.0"
    assert record["kinesis"]["kinesisSchemaVersion"] == "1.0"
    assert record["eventSourceARN"] == arn
    assert record["awsRegion"] == "us-east-1"
    assert record["invokeIdentityArn"] == "arn:aws:iam::123456789012:role/event-router"
    shard, sequence = record["eventID"].split(":")
    assert sequence == record["kinesis"]["sequenceNumber"]
    assert isinstance(record["kinesis"]["approximateArrivalTimestamp"], float)
    assert abs(record["kinesis"]["approximateArrivalTimestamp"] - time.time()) < 120


async def test_a_restart_resumes_after_the_checkpoint(
    aws: Any, sqlite_store: SQLStore, events: list[dict[str, Any]]
) -> None:
    async with aws.client("kinesis") as kinesis:
        arn = await make_stream(kinesis)
        await put(kinesis, arn, [("k", f"first-{i}") for i in range(10)])
        config = kinesis_config(arn, aws.endpoint, mapping="    starting_position: TRIM_HORIZON")
        async with run_router(config, sqlite_store):
            await eventually(lambda: len(delivered()) == 10, what="first 10")
        await put(kinesis, arn, [("k", f"second-{i}") for i in range(5)])
        async with run_router(config, sqlite_store):
            await eventually(lambda: len(delivered()) == 15, what="5 more")
            await asyncio.sleep(0.5)
    assert [d for _, _, d in delivered()] == [f"first-{i}" for i in range(10)] + [
        f"second-{i}" for i in range(5)
    ]


async def test_latest_starts_at_the_tip_and_keeps_that_place_across_a_restart(
    aws: Any, sqlite_store: SQLStore
) -> None:
    async with aws.client("kinesis") as kinesis:
        arn = await make_stream(kinesis)
        await put(kinesis, arn, [("k", "before")])
        # Kinesis takes iterator timestamps in whole seconds: a LATEST start pinned within
        # the second of a record may deliver it (at least once, never skipped).
        await asyncio.sleep(1.1)
        config = kinesis_config(arn, aws.endpoint, mapping="    starting_position: LATEST")
        async with run_router(config, sqlite_store):
            uuid = await _mapping_uuid(sqlite_store)

            async def pinned() -> bool:
                return bool(await sqlite_store.get_checkpoints(uuid))

            await eventually(pinned, what="the start written down")
        # Put while no router runs: a restart must not skip it.
        await put(kinesis, arn, [("k", "while-stopped")])
        async with run_router(config, sqlite_store):
            await put(kinesis, arn, [("k", "after")])
            await eventually(lambda: len(delivered()) >= 2, what="two records")
            await asyncio.sleep(0.3)
    assert [d for _, _, d in delivered()] == ["while-stopped", "after"]


async def test_at_timestamp_starts_at_the_first_record_at_or_after_it(
    aws: Any, sqlite_store: SQLStore
) -> None:
    async with aws.client("kinesis") as kinesis:
        arn = await make_stream(kinesis)
        await put(kinesis, arn, [("k", "old")])
        await asyncio.sleep(1.1)
        stamp = time.time()
        await asyncio.sleep(0.1)
        await put(kinesis, arn, [("k", "new-1"), ("k", "new-2")])
        mapping = f"    StartingPosition: AT_TIMESTAMP\n    StartingPositionTimestamp: {stamp:.3f}"
        async with run_router(kinesis_config(arn, aws.endpoint, mapping=mapping), sqlite_store):
            await eventually(lambda: len(delivered()) == 2, what="the two new records")
            await asyncio.sleep(0.3)
    assert [d for _, _, d in delivered()] == ["new-1", "new-2"]


async def test_filters_see_decoded_data_and_the_shard_moves_past_what_they_drop(
    aws: Any, sqlite_store: SQLStore
) -> None:
    async with aws.client("kinesis") as kinesis:
        arn = await make_stream(kinesis)
        answers = await put(
            kinesis,
            arn,
            [
                ("k", '{"kind": "keep", "n": 1}'),
                ("k", '{"kind": "drop"}'),
                ("k", "keep, but not JSON"),
                ("p", '{"kind": "keep", "n": 2}'),
                ("k", '{"kind": "drop"}'),
            ],
        )
        mapping = """    starting_position: TRIM_HORIZON
    FilterCriteria:
      Filters:
        - Pattern: '{"data": {"kind": ["keep"]}}'"""
        async with run_router(kinesis_config(arn, aws.endpoint, mapping=mapping), sqlite_store):
            await eventually(lambda: len(delivered()) == 2, what="two kept records")
            uuid = await _mapping_uuid(sqlite_store)
            shard = answers[-1]["ShardId"]

            async def past_all() -> bool:
                rows = await sqlite_store.get_checkpoints(uuid)
                return bool(rows.get(shard) == answers[-1]["SequenceNumber"])

            await eventually(past_all, what="checkpoint past the filtered records")
    assert [d for _, _, d in delivered()] == [
        '{"kind": "keep", "n": 1}',
        '{"kind": "keep", "n": 2}',
    ]


async def test_partial_batch_failure_resumes_at_the_lowest_failed_sequence_number(
    aws: Any, sqlite_store: SQLStore, events: list[dict[str, Any]]
) -> None:
    async with aws.client("kinesis") as kinesis:
        arn = await make_stream(kinesis)
        data = ["ok-0", "ok-1", "bad-2", "ok-3", "bad-4", "ok-5"]
        await put(kinesis, arn, [("k", d) for d in data])
        mapping = """    starting_position: TRIM_HORIZON
    batch_size: 10
    maximum_batching_window: 1
    function_response_types: [ReportBatchItemFailures]"""
        config = kinesis_config(arn, aws.endpoint, handler="partial", mapping=mapping)
        async with run_router(config, sqlite_store):
            await eventually(lambda: len(events) >= 2, what="two invocations")
            await asyncio.sleep(0.5)
    batches = [[stream_handlers.data_of(r) for r in e["Records"]] for e in events]
    # First batch: all six; bad-2 and bad-4 fail: the retry starts at bad-2 (the lowest
    # failed one) and holds everything after it; ok-0 and ok-1 are not sent again.
    assert batches == [data, data[2:]]


async def test_bisect_isolates_a_poison_record_into_the_on_failure_destination(
    aws: Any, sqlite_store: SQLStore
) -> None:
    async with aws.client("kinesis") as kinesis:
        arn = await make_stream(kinesis)
        data = [f"ok-{i}" for i in range(8)]
        data[5] = "poison-5"
        answers = await put(kinesis, arn, [("k", d) for d in data])
        mapping = """    starting_position: TRIM_HORIZON
    batch_size: 8
    maximum_batching_window: 1
    bisect_batch_on_function_error: true
    maximum_retry_attempts: 0
    destination_config:
      on_failure:
        destination: table"""
        config = kinesis_config(arn, aws.endpoint, handler="poison", mapping=mapping)
        async with run_router(config, sqlite_store):
            uuid = await _mapping_uuid(sqlite_store)

            async def past_all() -> bool:
                rows = await sqlite_store.get_checkpoints(uuid)
                return bool(rows.get(answers[0]["ShardId"]) == answers[-1]["SequenceNumber"])

            await eventually(past_all, timeout=30, what="the shard moved past the poison")
            failed = await sqlite_store.list_failed_events(mapping_uuid=uuid)
    succeeded = [
        stream_handlers.data_of(r)
        for e in stream_handlers.EVENTS
        if not any("poison" in stream_handlers.data_of(x) for x in e["Records"])
        for r in e["Records"]
    ]
    assert sorted(succeeded) == sorted(d for d in data if d != "poison-5")
    assert len(failed) == 1
    record = failed[0].payload
    assert record["requestContext"]["condition"] == "RetryAttemptsExhausted"
    poison = answers[5]
    info = record["KinesisBatchInfo"]
    assert set(info) == {
        "shardId",
        "startSequenceNumber",
        "endSequenceNumber",
        "approximateArrivalOfFirstRecord",
        "approximateArrivalOfLastRecord",
        "batchSize",
        "streamArn",
    }
    assert info["shardId"] == poison["ShardId"]
    assert info["startSequenceNumber"] == info["endSequenceNumber"] == poison["SequenceNumber"]
    assert info["batchSize"] == 1
    assert info["streamArn"] == arn
    assert info["approximateArrivalOfFirstRecord"].endswith("Z")
    originals = record["payload"]["Records"]
    assert [stream_handlers.data_of(r) for r in originals] == ["poison-5"]


async def test_parallelization_keeps_order_per_key(aws: Any, sqlite_store: SQLStore) -> None:
    async with aws.client("kinesis") as kinesis:
        arn = await make_stream(kinesis)
        items = [(f"key-{i % 5}", f"{i % 5}:{i}") for i in range(200)]
        answers = await put(kinesis, arn, items)
        mapping = """    starting_position: TRIM_HORIZON
    batch_size: 7
    parallelization_factor: 4"""
        async with run_router(kinesis_config(arn, aws.endpoint, mapping=mapping), sqlite_store):
            await eventually(lambda: len(delivered()) >= 200, what="200 records")
            uuid = await _mapping_uuid(sqlite_store)

            async def done() -> bool:
                rows = await sqlite_store.get_checkpoints(uuid)
                return bool(rows.get(answers[0]["ShardId"]) == answers[-1]["SequenceNumber"])

            await eventually(done, what="checkpoint at the last record")
    per_key: dict[str, list[int]] = defaultdict(list)
    for _, key, data in delivered():
        per_key[key].append(int(data.split(":")[1]))
    assert len(per_key) == 5
    for key, numbers in per_key.items():
        assert numbers == sorted(numbers), key
        assert len(numbers) == 40
    # Batches hold one lane: the keys of a batch share a slot.
    for event in stream_handlers.EVENTS:
        slots = {zlib.crc32(r["kinesis"]["partitionKey"].encode()) % 4 for r in event["Records"]}
        assert len(slots) == 1


def test_aws_spellings_and_defaults() -> None:
    config = load_config_text(
        """
functions:
  f: {invoker: python, handler: tests.aws.stream_handlers:record}
mappings:
  - name: clicks
    function: f
    source:
      type: kinesis
      EventSourceArn: arn:aws:kinesis:us-east-1:123456789012:stream/clicks
      endpoint_url: http://127.0.0.1:4566
    StartingPosition: TRIM_HORIZON
    ParallelizationFactor: 2
    MaximumRetryAttempts: 3
    BisectBatchOnFunctionError: true
    MaximumRecordAgeInSeconds: 60
""",
        "t.yaml",
    )
    mapping = config.mappings[0]
    settings = mapping.source.settings
    assert isinstance(settings, KinesisSettings)
    assert settings.stream_arn == "arn:aws:kinesis:us-east-1:123456789012:stream/clicks"
    assert (mapping.batch_size, mapping.maximum_batching_window) == (100, 0.0)
    assert mapping.parallelization_factor == 2
    assert mapping.maximum_retry_attempts == 3
    assert mapping.maximum_record_age == 60


def test_limits_and_a_missing_starting_position_are_errors() -> None:
    text = """
functions:
  f: {invoker: python, handler: tests.aws.stream_handlers:record}
mappings:
  - name: clicks
    function: f
    source: {type: kinesis, stream_arn: 'arn:aws:sqs:us-east-1:1:q'}
    batch_size: 10001
    maximum_record_age: 30
    maximum_concurrency: 5
"""
    with pytest.raises(ConfigErrors) as info:
        load_config_text(text, "t.yaml")
    message = str(info.value)
    assert "stream_arn" in message and "not an kinesis ARN" in message
    text = text.replace("arn:aws:sqs:us-east-1:1:q", "arn:aws:kinesis:us-east-1:1:stream/s")
    with pytest.raises(ConfigErrors) as info:
        load_config_text(text, "t.yaml")
    lines = str(info.value).splitlines()
    assert any("starting_position" in line and "required" in line for line in lines), lines
    assert any("batch_size: must be between 1 and 10000" in line for line in lines), lines
    assert any("maximum_record_age: must be -1 or between 60" in line for line in lines), lines
    assert any("maximum_concurrency: not supported" in line for line in lines), lines


@pytest.mark.parametrize("form", ["typed", "arn"])
async def test_the_kinesis_destination_receives_the_on_failure_record(
    aws: Any, sqlite_store: SQLStore, form: str
) -> None:
    async with aws.client("kinesis") as kinesis:
        arn = await make_stream(kinesis)
        dlq = await make_stream(kinesis, prefix="dlq")
        answers = await put(kinesis, arn, [("k", "ok-0"), ("k", "poison-1"), ("k", "ok-2")])
        if form == "typed":
            target = f"type: kinesis\n        arn: {dlq}\n        endpoint_url: {aws.endpoint}"
        else:  # the string AWS's DestinationConfig takes; the endpoint is the source's
            target = f"destination: {dlq}"
        mapping = f"""    starting_position: TRIM_HORIZON
    batch_size: 1
    maximum_retry_attempts: 0
    destination_config:
      on_failure:
        {target}"""
        config = kinesis_config(arn, aws.endpoint, handler="poison", mapping=mapping)
        async with run_router(config, sqlite_store):
            uuid = await _mapping_uuid(sqlite_store)

            async def past_all() -> bool:
                rows = await sqlite_store.get_checkpoints(uuid)
                return bool(rows.get(answers[0]["ShardId"]) == answers[-1]["SequenceNumber"])

            await eventually(past_all, timeout=30, what="the shard moved past the poison")
        shard = (await kinesis.list_shards(StreamARN=dlq))["Shards"][0]["ShardId"]
        iterator = (
            await kinesis.get_shard_iterator(
                StreamARN=dlq, ShardId=shard, ShardIteratorType="TRIM_HORIZON"
            )
        )["ShardIterator"]
        got = await kinesis.get_records(ShardIterator=iterator, StreamARN=dlq)
    [entry] = got["Records"]
    record = orjson.loads(entry["Data"])
    assert entry["PartitionKey"] == record["requestContext"]["requestId"]
    assert record["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert record["KinesisBatchInfo"]["startSequenceNumber"] == answers[1]["SequenceNumber"]
    assert [stream_handlers.data_of(r) for r in record["payload"]["Records"]] == ["poison-1"]
