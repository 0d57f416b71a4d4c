"""Kafka mappings through the Router on a real store and broker: filtering, retries, bisect,
partial batch responses, the Kafka on-failure destination, two replicas sharing a group."""

from __future__ import annotations

import base64
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from router.store import SQLStore
from tests.fixtures.kafka import TopicFactory
from tests.helpers import eventually, run_router
from tests.kafka.helpers import Message, committed, produce

pytestmark = pytest.mark.kafka

HANDLERS = """
import base64, json, os

def _log(event):
    with open(os.environ["KAFKA_EVENTS_FILE"], "a") as f:
        for part, records in event["records"].items():
            for r in records:
                value = base64.b64decode(r["value"]).decode() if "value" in r else None
                f.write(json.dumps([r["partition"], r["offset"], value]) + "\\n")

def record(event, context):
    _log(event)
    return {}

def poison(event, context):
    values = [base64.b64decode(r["value"]) for rs in event["records"].values() for r in rs]
    if any(b"poison" in v for v in values):
        raise ValueError("poison in batch")
    _log(event)
    return {}

def partial(event, context):
    failures = []
    for records in event["records"].values():
        for r in records:
            if b"poison" in base64.b64decode(r["value"]):
                failures.append({"itemIdentifier": os.environ["KAFKA_ITEM_ID"].format(**r)})
    _log(event)
    return {"batchItemFailures": failures}
"""

FAST_SOURCE = """
      session_timeout_ms: 1000
      heartbeat_interval_ms: 100
      static_membership: false
      commit_interval: 0.01"""


@pytest.fixture
def handlers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "kafka_handlers.py").write_text(HANDLERS)
    monkeypatch.syspath_prepend(str(tmp_path))
    # Each test writes its own module: never reuse one imported by an earlier test.
    monkeypatch.delitem(sys.modules, "kafka_handlers", raising=False)
    events = tmp_path / "events.jsonl"
    monkeypatch.setenv("KAFKA_EVENTS_FILE", str(events))
    return events


def delivered(events: Path) -> list[tuple[int, int, str | None]]:
    if not events.exists():
        return []
    return [tuple(orjson.loads(line)) for line in events.read_bytes().splitlines() if line]


def config(broker: str, topic: str, handler: str, group: str, extra: str = "") -> str:
    return f"""
functions:
  fn:
    invoker: python
    handler: kafka_handlers:{handler}
mappings:
  - name: orders
    function: fn
    batch_size: 10
    maximum_batching_window: 0
    starting_position: TRIM_HORIZON
    source:
      type: kafka
      bootstrap_servers: ["{broker}"]
      topics: [{topic}]
      consumer_group_id: {group}{FAST_SOURCE}
{extra}"""


async def read_topic(broker: str, topic: str, n: int) -> list[dict[str, Any]]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=broker, auto_offset_reset="earliest")
    await consumer.start()
    try:
        got: list[dict[str, Any]] = []
        while len(got) < n:
            for messages in (await consumer.getmany(timeout_ms=1000)).values():
                got.extend(orjson.loads(m.value) for m in messages)
        return got
    finally:
        await consumer.stop()


async def test_filtered_records_are_committed(
    sqlite_store: SQLStore, kafka_broker: str, kafka_topic: str, handlers: Path
) -> None:
    values = [orjson.dumps({"keep": i % 3 == 0, "i": i}) for i in range(30)]
    values += [b"not json", orjson.dumps({"keep": False})]
    await produce(kafka_broker, kafka_topic, values)
    extra = """    filter_criteria:
      filters:
        - pattern: '{"value": {"keep": [true]}}'"""
    text = config(kafka_broker, kafka_topic, "record", "g-filter", extra)
    async with run_router(text, sqlite_store):
        await eventually(lambda: len(delivered(handlers)) == 10, what="kept records")

        async def all_committed() -> bool:
            return await committed(kafka_broker, "g-filter", kafka_topic) == [32]

        await eventually(all_committed, what="filtered records committed")
    assert [offset for _, offset, _ in delivered(handlers)] == list(range(0, 30, 3))


async def test_records_ruled_out_on_their_bytes_are_committed_and_never_delivered(
    sqlite_store: SQLStore, kafka_broker: str, kafka_topic: str, handlers: Path
) -> None:
    # Every pattern needs a string, so records whose bytes hold none are dropped before
    # decoding; records spelling it with an escape, or holding it elsewhere, are decoded and
    # matched as usual.
    values: list[Message | bytes] = [
        orjson.dumps({"kind": "refund", "i": 0}),  # 0 kept
        orjson.dumps({"kind": "order", "i": 1}),
        b'{"kind": "re\\u0066und", "i": 2}',  # 2 kept (an escape)
        b"refund, not JSON",  # a nested pattern never matches text
        (b"k", None, None),  # a tombstone
        orjson.dumps({"kind": "invoice", "note": "refund"}),  # holds the text, no match
        orjson.dumps({"kind": "refund-late"}),  # 6 kept (prefix)
        orjson.dumps({"kind": "shipment"}),
    ]
    await produce(kafka_broker, kafka_topic, values)
    extra = """    filter_criteria:
      filters:
        - pattern: '{"value": {"kind": ["refund"]}}'
        - pattern: '{"value": {"kind": [{"prefix": "refund-"}]}}'"""
    text = config(kafka_broker, kafka_topic, "record", "g-raw", extra)
    async with run_router(text, sqlite_store):

        async def all_committed() -> bool:
            return await committed(kafka_broker, "g-raw", kafka_topic) == [len(values)]

        await eventually(all_committed, what="every record committed")
    assert [offset for _, offset, _ in delivered(handlers)] == [0, 2, 6]


async def test_bisect_isolates_a_poison_record_into_the_kafka_destination(
    sqlite_store: SQLStore, kafka_broker: str, make_topic: TopicFactory, handlers: Path
) -> None:
    topic = await make_topic(1)
    dlq = await make_topic(1, prefix="dlq")
    values = [f"ok-{i}".encode() for i in range(20)]
    values[7] = b"poison-7"
    await produce(kafka_broker, topic, values)
    extra = f"""    bisect_batch_on_function_error: true
    maximum_retry_attempts: 1
    destination_config:
      on_failure:
        destination: kafka://{kafka_broker}/{dlq}"""
    async with run_router(config(kafka_broker, topic, "poison", "g-bisect", extra), sqlite_store):
        failures = await read_topic(kafka_broker, dlq, 1)

        async def all_committed() -> bool:
            return await committed(kafka_broker, "g-bisect", topic) == [20]

        await eventually(all_committed, what="commit past the poison record")
    good = sorted(offset for _, offset, _ in delivered(handlers))
    assert set(good) == set(range(20)) - {7}
    failure = failures[0]
    assert failure["requestContext"]["condition"] == "RetryAttemptsExhausted"
    info = failure["KafkaBatchInfo"]
    assert info["batchSize"] == 1
    assert info["bootstrapServers"] == kafka_broker
    assert info["recordsInfo"] == {
        f"{topic}-0": {
            "firstRecordOffset": "7",
            "lastRecordOffset": "7",
            "firstRecordTimestamp": info["recordsInfo"][f"{topic}-0"]["firstRecordTimestamp"],
            "lastRecordTimestamp": info["recordsInfo"][f"{topic}-0"]["lastRecordTimestamp"],
        }
    }
    originals = [
        r for value in failure.values() if isinstance(value, dict) for r in _records(value)
    ]
    assert [base64.b64decode(r["value"]) for r in originals] == [b"poison-7"]


def _records(value: dict[str, Any]) -> list[dict[str, Any]]:
    """The original Kafka records somewhere in a destination record's payload."""
    records = value.get("records")
    if isinstance(records, dict):
        return [r for rs in records.values() for r in rs]
    found: list[dict[str, Any]] = []
    for inner in value.values():
        if isinstance(inner, dict):
            found.extend(_records(inner))
    return found


@pytest.mark.parametrize(
    "item_id",
    [
        pytest.param("{topic}-{partition}:{offset}", id="string"),
        pytest.param("aws-object", id="aws-object"),
    ],
)
async def test_partial_batch_response_retries_from_the_failed_record(
    sqlite_store: SQLStore,
    kafka_broker: str,
    kafka_topic: str,
    handlers: Path,
    monkeypatch: pytest.MonkeyPatch,
    item_id: str,
) -> None:
    if item_id == "aws-object":
        handler = "partial_object"
        (handlers.parent / "kafka_handlers.py").write_text(
            HANDLERS
            + """
def partial_object(event, context):
    failures = []
    for key, records in event["records"].items():
        for r in records:
            if b"poison" in base64.b64decode(r["value"]):
                failures.append({"itemIdentifier": {"partition": key, "offset": r["offset"]}})
    _log(event)
    return {"batchItemFailures": failures}
"""
        )
    else:
        handler = "partial"
        monkeypatch.setenv("KAFKA_ITEM_ID", item_id)
    values = [f"ok-{i}".encode() for i in range(10)]
    values[4] = b"poison-4"
    await produce(kafka_broker, kafka_topic, values)
    extra = """    function_response_types: [ReportBatchItemFailures]
    maximum_retry_attempts: 2"""
    text = config(kafka_broker, kafka_topic, handler, f"g-partial-{handler}", extra)
    async with run_router(text, sqlite_store):

        async def all_committed() -> bool:
            got = await committed(kafka_broker, f"g-partial-{handler}", kafka_topic)
            return got == [10]

        await eventually(all_committed, what="commit after retries")
    calls: dict[int, int] = defaultdict(int)
    for _, offset, _ in delivered(handlers):
        calls[offset] += 1
    # The records before the failed one were delivered once; from it on, again per retry.
    assert all(calls[o] == 1 for o in range(4))
    assert calls[4] == 3  # first try + 2 retries, then given up
    assert all(calls[o] >= 2 for o in range(5, 10))


async def test_two_replicas_share_the_partitions_and_nothing_is_lost(
    sqlite_store: SQLStore, kafka_broker: str, make_topic: TopicFactory, handlers: Path
) -> None:
    topic = await make_topic(4)
    for partition in range(4):
        await produce(kafka_broker, topic, [f"{partition}".encode()] * 250, partition=partition)
    text = config(kafka_broker, topic, "record", "g-replicas")
    seen: set[tuple[int, int]] = set()
    async with run_router(text, sqlite_store, replica_id="a") as first:
        await eventually(lambda: len(delivered(handlers)) >= 100, what="first deliveries")
        async with run_router(text, sqlite_store, replica_id="b") as second:
            row = await sqlite_store.get_mapping_by_name("orders")
            assert row is not None

            def split() -> bool:
                one = first.running[row.uuid].pipeline.source
                two = second.running[row.uuid].pipeline.source
                return bool(one._offsets) and bool(two._offsets)  # type: ignore[attr-defined]

            await eventually(split, what="partitions split between the replicas")
            await produce(kafka_broker, topic, [b"more"] * 100)
        # The second replica left: the first takes everything over again.
        await produce(kafka_broker, topic, [b"after"] * 100)

        def complete() -> bool:
            seen.update((p, o) for p, o, _ in delivered(handlers))
            return len(seen) == 1200

        await eventually(complete, timeout=60, what="every record delivered")


async def test_metrics_show_each_partitions_lag(
    sqlite_store: SQLStore, kafka_broker: str, kafka_topic: str, handlers: Path
) -> None:
    from router.ops import render_metrics

    await produce(kafka_broker, kafka_topic, [f"r{i}".encode() for i in range(12)])
    text = config(kafka_broker, kafka_topic, "record", "g-lag-metrics")
    async with run_router(text, sqlite_store) as router:
        await eventually(lambda: len(delivered(handlers)) == 12, what="every record")

        def caught_up() -> bool:
            # prometheus_client sorts the labels and prints values as floats ("0.0").
            series = f'router_lane_lag{{lane="{kafka_topic}:0",mapping="orders"}} '
            return any(
                float(line.removeprefix(series)) == 0
                for line in render_metrics(router).splitlines()
                if line.startswith(series)
            )

        await eventually(caught_up, what="lag 0 in /metrics")
        lines = render_metrics(router).splitlines()
    assert "# TYPE router_lane_lag gauge" in lines
