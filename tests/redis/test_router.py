"""Redis Streams mappings through the Router on a real store and the real server: the event's
shape, filtering, order per lane, partial batch responses, bisect to a poison entry that ends
in a redis destination, connections killed mid-batch, two replicas in one group, a dead
consumer's entries taken over, starting positions, metrics."""

from __future__ import annotations

import asyncio
import base64
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis

from router.ops import render_metrics
from router.store import SQLStore
from tests.helpers import eventually, run_router

pytestmark = pytest.mark.redis

HANDLERS = """
import base64, json, os, time

def _log(event):
    with open(os.environ["REDIS_EVENTS_FILE"], "a") as f:
        for stream, records in event["records"].items():
            for r in records:
                data = base64.b64decode(r["data"]).decode() if "data" in r else None
                f.write(json.dumps([stream, r["id"], data, r["fields"]]) + "\\n")

def record(event, context):
    _log(event)
    return {}

def slow(event, context):
    _log(event)
    time.sleep(0.05)
    return {}

def shape(event, context):
    with open(os.environ["REDIS_EVENTS_FILE"] + ".event", "a") as f:
        f.write(json.dumps(event) + "\\n")
    _log(event)
    return {}

def poison(event, context):
    for records in event["records"].values():
        for r in records:
            if b"poison" in base64.b64decode(r["data"]):
                raise ValueError("poison in batch")
    _log(event)
    return {}

def partial(event, context):
    failures = []
    for records in event["records"].values():
        for r in records:
            if b"poison" in base64.b64decode(r["data"]):
                failures.append({"itemIdentifier": r["id"]})
    _log(event)
    return {"batchItemFailures": failures}
"""


@pytest.fixture
def handlers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "redis_handlers.py").write_text(HANDLERS)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "redis_handlers", raising=False)
    events = tmp_path / "events.jsonl"
    monkeypatch.setenv("REDIS_EVENTS_FILE", str(events))
    return events


def delivered(events: Path) -> list[tuple[str, str, str | None, dict[str, str]]]:
    if not events.exists():
        return []
    return [tuple(orjson.loads(line)) for line in events.read_bytes().splitlines() if line]


def config(
    url: str,
    streams: list[str],
    handler: str,
    group: str,
    extra: str = "",
    source_extra: str = "",
    position: str = "TRIM_HORIZON",
) -> str:
    return f"""
functions:
  fn:
    invoker: python
    handler: redis_handlers:{handler}
mappings:
  - name: orders
    function: fn
    batch_size: 10
    starting_position: {position}
    source:
      type: redis
      url: "{url}"
      streams: [{", ".join(streams)}]
      group: {group}{source_extra}
{extra}"""


async def add(url: str, stream: str, items: list[dict[Any, Any]]) -> list[str]:
    client = aioredis.Redis.from_url(url)
    try:
        async with client.pipeline(transaction=False) as pipe:
            for fields in items:
                pipe.xadd(stream, fields)
            ids = await pipe.execute()
        return [i.decode() for i in ids]
    finally:
        await client.aclose()


async def pending(url: str, stream: str, group: str) -> int:
    client = aioredis.Redis.from_url(url)
    try:
        info: Any = await client.xpending(stream, group)
        return int(info["pending"])
    finally:
        await client.aclose()


async def entries_read(url: str, stream: str, group: str) -> int:
    client = aioredis.Redis.from_url(url)
    try:
        groups: Any = await client.xinfo_groups(stream)
        for g in groups:
            if g["name"] in (group, group.encode()):
                return int(g["entries-read"] or 0)
        return -1
    finally:
        await client.aclose()


async def all_acked(url: str, stream: str, group: str, total: int) -> bool:
    return (
        await entries_read(url, stream, group) == total and await pending(url, stream, group) == 0
    )


async def test_entries_ruled_out_on_their_bytes_are_acknowledged_and_never_delivered(
    sqlite_store: SQLStore, redis_url: str, redis_streams: Callable[[str], str], handlers: Path
) -> None:
    # The pattern needs a string: entries whose data bytes hold none are dropped before
    # decoding; an escape, a string held elsewhere and an entry without data are decoded.
    stream = redis_streams("raw")
    items: list[dict[Any, Any]] = [
        {"data": orjson.dumps({"kind": "refund"})},  # kept
        {"data": orjson.dumps({"kind": "order"})},
        {"data": b'{"kind": "re\\u0066und"}'},  # kept (an escape)
        {"data": b"refund, not JSON"},
        {"data": orjson.dumps({"kind": "invoice", "note": "refund"})},
        {"other": b"refund"},
    ]
    ids = await add(redis_url, stream, items)
    extra = """    filter_criteria:
      filters:
        - pattern: '{"data": {"kind": ["refund"]}}'"""
    async with run_router(config(redis_url, [stream], "shape", "g", extra), sqlite_store):
        await eventually(lambda: len(delivered(handlers)) == 2, what="kept entries")
        await eventually(lambda: all_acked(redis_url, stream, "g", 6), what="all acknowledged")
    assert [i for _, i, _, _ in delivered(handlers)] == [ids[0], ids[2]]


async def test_event_shape_and_filtering_on_data(
    sqlite_store: SQLStore, redis_url: str, redis_streams: Callable[[str], str], handlers: Path
) -> None:
    stream = redis_streams("orders")
    items: list[dict[Any, Any]] = [
        {"data": orjson.dumps({"keep": i % 3 == 0, "i": i}), "kind": "order"} for i in range(30)
    ]
    items.append({"data": b"not json", "kind": "text"})
    items.append({"other": b"\xff\xfe", "kind": "binary"})
    ids = await add(redis_url, stream, items)
    extra = """    filter_criteria:
      filters:
        - pattern: '{"data": {"keep": [true]}}'"""
    async with run_router(config(redis_url, [stream], "shape", "g", extra), sqlite_store):
        await eventually(lambda: len(delivered(handlers)) == 10, what="kept entries")
        await eventually(lambda: all_acked(redis_url, stream, "g", 32), what="all acknowledged")
    got = delivered(handlers)
    assert [i for _, i, _, _ in got] == ids[0:30:3]
    assert all(orjson.loads(d or "")["keep"] for _, _, d, _ in got)
    event = orjson.loads(Path(str(handlers) + ".event").read_text().splitlines()[0])
    assert event["eventSource"] == "redis:streams"
    assert event["url"] == redis_url
    assert event["group"] == "g"
    first = event["records"][stream][0]
    assert first == {
        "stream": stream,
        "id": ids[0],
        "timestamp": int(ids[0].split("-")[0]),
        "fields": {"kind": "order"},
        "data": base64.b64encode(orjson.dumps({"keep": True, "i": 0})).decode(),
    }


async def test_filter_on_fields_and_binary_fields_are_kept(
    sqlite_store: SQLStore, redis_url: str, redis_streams: Callable[[str], str], handlers: Path
) -> None:
    stream = redis_streams("fields")
    await add(
        redis_url,
        stream,
        [
            {"kind": "a", "data": b"1"},
            {"kind": "b", "data": b"2", b"\xff": b"\x00\xfe"},
            {"kind": "a", "data": b"3"},
        ],
    )
    extra = """    filter_criteria:
      filters:
        - pattern: '{"fields": {"kind": ["b"]}}'"""
    async with run_router(config(redis_url, [stream], "shape", "g", extra), sqlite_store):
        await eventually(lambda: all_acked(redis_url, stream, "g", 3), what="all acknowledged")
    event = orjson.loads(Path(str(handlers) + ".event").read_text().splitlines()[0])
    (only,) = event["records"][stream]
    assert only["fields"] == {"kind": "b"}
    assert only["binaryFields"] == {base64.b64encode(b"\xff").decode(): "AP4="}
    assert base64.b64decode(only["data"]) == b"2"


async def test_order_per_lane_with_parallelization_factor(
    sqlite_store: SQLStore, redis_url: str, redis_streams: Callable[[str], str], handlers: Path
) -> None:
    one, two = redis_streams("a"), redis_streams("b")
    for stream in (one, two):
        await add(
            redis_url,
            stream,
            [{"data": f"{i}".encode(), "customer": f"c{i % 5}"} for i in range(200)],
        )
    extra = "    parallelization_factor: 4"
    source_extra = "\n      key_field: customer"
    text = config(redis_url, [one, two], "slow", "g", extra, source_extra)
    async with run_router(text, sqlite_store):
        await eventually(lambda: len(delivered(handlers)) >= 400, timeout=60, what="every entry")
    per_key: dict[tuple[str, str], list[int]] = defaultdict(list)
    for stream, _, data, fields in delivered(handlers):
        per_key[(stream, fields["customer"])].append(int(data or "-1"))
    assert len(per_key) == 10
    for key, values in per_key.items():
        assert values == sorted(values), f"{key} out of order"
        assert len(values) == 40


async def test_parallelization_factor_needs_a_key_field(
    sqlite_store: SQLStore, redis_url: str, redis_streams: Callable[[str], str]
) -> None:
    from router.config import load_config_text

    text = config(redis_url, [redis_streams("x")], "record", "g", "    parallelization_factor: 2")
    with pytest.raises(Exception, match="key_field"):
        load_config_text(text, "test.yaml")


async def test_partial_batch_response_retries_from_the_failed_entry(
    sqlite_store: SQLStore, redis_url: str, redis_streams: Callable[[str], str], handlers: Path
) -> None:
    stream = redis_streams("partial")
    items = [{"data": f"ok-{i}".encode()} for i in range(10)]
    items[4] = {"data": b"poison-4"}
    ids = await add(redis_url, stream, items)
    extra = """    function_response_types: [ReportBatchItemFailures]
    maximum_retry_attempts: 2"""
    async with run_router(config(redis_url, [stream], "partial", "g", extra), sqlite_store):
        await eventually(lambda: all_acked(redis_url, stream, "g", 10), what="acks after retries")
    calls: dict[str, int] = defaultdict(int)
    for _, entry_id, _, _ in delivered(handlers):
        calls[entry_id] += 1
    assert all(calls[i] == 1 for i in ids[:4])
    assert calls[ids[4]] == 3  # first try + 2 retries, then given up
    assert all(calls[i] >= 2 for i in ids[5:])


async def test_bisect_isolates_a_poison_entry_into_a_redis_destination(
    sqlite_store: SQLStore, redis_url: str, redis_streams: Callable[[str], str], handlers: Path
) -> None:
    stream, dlq = redis_streams("bisect"), redis_streams("dlq")
    items = [{"data": f"ok-{i}".encode()} for i in range(20)]
    items[7] = {"data": b"poison-7"}
    ids = await add(redis_url, stream, items)
    extra = f"""    bisect_batch_on_function_error: true
    maximum_retry_attempts: 1
    destination_config:
      on_failure:
        type: redis
        url: "{redis_url}"
        stream: {dlq}"""
    async with run_router(config(redis_url, [stream], "poison", "g", extra), sqlite_store):
        await eventually(lambda: all_acked(redis_url, stream, "g", 20), what="acks past poison")
    client = aioredis.Redis.from_url(redis_url)
    try:
        failures: Any = await client.xrange(dlq)
    finally:
        await client.aclose()
    assert len(failures) == 1
    failure = orjson.loads(failures[0][1][b"data"])
    assert failure["requestContext"]["condition"] == "RetryAttemptsExhausted"
    info = failure["RedisStreamsBatchInfo"]
    assert info["batchSize"] == 1
    assert info["stream"] == stream
    assert info["startEntryId"] == info["endEntryId"] == ids[7]
    originals = failure["payload"]["records"][stream]
    assert [base64.b64decode(r["data"]) for r in originals] == [b"poison-7"]
    good = {i for _, i, _, _ in delivered(handlers)}
    assert good == set(ids) - {ids[7]}


async def kill_router_connections(url: str) -> int:
    client = aioredis.Redis.from_url(url)
    try:
        clients: Any = await client.client_list()
        killed = 0
        for c in clients:
            if c.get("name", "").startswith("event-router:"):
                await client.client_kill_filter(_id=c["id"])
                killed += 1
        return killed
    finally:
        await client.aclose()


async def test_connections_killed_mid_batch_lose_nothing(
    sqlite_store: SQLStore, redis_url: str, redis_streams: Callable[[str], str], handlers: Path
) -> None:
    stream = redis_streams("kill")
    total = 600
    ids = await add(redis_url, stream, [{"data": f"{i}".encode()} for i in range(total)])
    async with run_router(config(redis_url, [stream], "slow", "g"), sqlite_store):
        kills = 0
        for threshold in (50, 150, 300):
            await eventually(
                lambda t=threshold: len(delivered(handlers)) >= t,  # type: ignore[misc]
                timeout=60,
                what=f"{threshold} delivered",
            )
            kills += await kill_router_connections(redis_url)
        assert kills >= 3
        await eventually(
            lambda: all_acked(redis_url, stream, "g", total), timeout=90, what="all acknowledged"
        )
    seen = [i for _, i, _, _ in delivered(handlers)]
    assert set(seen) == set(ids)
    firsts: list[str] = []
    for i in seen:
        if i not in firsts:
            firsts.append(i)
    assert firsts == ids, "first deliveries out of entry order"


async def test_two_replicas_share_the_group_and_nothing_is_lost(
    sqlite_store: SQLStore, redis_url: str, redis_streams: Callable[[str], str], handlers: Path
) -> None:
    stream = redis_streams("replicas")
    ids = await add(redis_url, stream, [{"data": b"x"} for _ in range(300)])
    # A replica that stops hands what it held back at once; the other looks every 0.2 s.
    text = config(redis_url, [stream], "slow", "g", source_extra="\n      claim_interval: 0.2")
    seen: set[str] = set()
    async with run_router(text, sqlite_store, replica_id="a"):
        await eventually(lambda: len(delivered(handlers)) >= 20, what="first deliveries")
        async with run_router(text, sqlite_store, replica_id="b"):
            ids += await add(redis_url, stream, [{"data": b"y"} for _ in range(300)])

            async def both_consume() -> bool:
                client = aioredis.Redis.from_url(redis_url)
                try:
                    consumers: Any = await client.xinfo_consumers(stream, "g")
                finally:
                    await client.aclose()
                return {c["name"] for c in consumers} >= {b"a", b"b"}

            await eventually(both_consume, what="both replicas in the group")
        ids += await add(redis_url, stream, [{"data": b"z"} for _ in range(100)])

        def complete() -> bool:
            seen.update(i for _, i, _, _ in delivered(handlers))
            return len(seen) == len(ids)

        await eventually(complete, timeout=60, what="every entry delivered")
        await eventually(lambda: all_acked(redis_url, stream, "g", len(ids)), what="acks")
    assert seen == set(ids)


async def test_entries_of_a_dead_consumer_are_taken_over(
    sqlite_store: SQLStore, redis_url: str, redis_streams: Callable[[str], str], handlers: Path
) -> None:
    stream = redis_streams("dead")
    ids = await add(redis_url, stream, [{"data": f"{i}".encode()} for i in range(30)])
    client = aioredis.Redis.from_url(redis_url)
    try:
        await client.xgroup_create(stream, "g", id="0")
        # A consumer that reads ten entries and dies without acknowledging them.
        await client.xreadgroup("g", "dead", {stream: ">"}, count=10)
    finally:
        await client.aclose()
    text = config(redis_url, [stream], "record", "g", source_extra="\n      claim_idle: 1")
    started = time.monotonic()
    async with run_router(text, sqlite_store):
        await eventually(lambda: all_acked(redis_url, stream, "g", 30), what="all acknowledged")
    assert time.monotonic() - started >= 1.0
    assert {i for _, i, _, _ in delivered(handlers)} == set(ids)


@pytest.mark.parametrize("position", ["LATEST", "AT_TIMESTAMP"])
async def test_starting_positions(
    sqlite_store: SQLStore,
    redis_url: str,
    redis_streams: Callable[[str], str],
    handlers: Path,
    position: str,
) -> None:
    stream = redis_streams("pos")
    old = await add(redis_url, stream, [{"data": b"old"} for _ in range(5)])
    await asyncio.sleep(0.01)
    cut = datetime.now(UTC)
    await asyncio.sleep(0.01)
    middle = await add(redis_url, stream, [{"data": b"middle"} for _ in range(5)])
    extra = ""
    if position == "AT_TIMESTAMP":
        extra = f"    starting_position_timestamp: {cut.isoformat()}"
    text = config(redis_url, [stream], "record", "g", extra, position=position)
    async with run_router(text, sqlite_store):

        async def group_made() -> bool:
            return await entries_read(redis_url, stream, "g") >= 0

        await eventually(group_made, what="the group")
        new = await add(redis_url, stream, [{"data": b"new"} for _ in range(5)])
        want = middle + new if position == "AT_TIMESTAMP" else new
        await eventually(lambda: len(delivered(handlers)) >= len(want), what="deliveries")
        await asyncio.sleep(0.3)
    assert [i for _, i, _, _ in delivered(handlers)] == want
    assert not set(old) & {i for _, i, _, _ in delivered(handlers)}


async def test_unacknowledged_and_lag_metrics(
    sqlite_store: SQLStore, redis_url: str, redis_streams: Callable[[str], str], handlers: Path
) -> None:
    stream = redis_streams("metrics")
    await add(redis_url, stream, [{"data": b"x"} for _ in range(20)])
    text = config(redis_url, [stream], "record", "g", source_extra="\n      metrics_interval: 0.1")
    async with run_router(text, sqlite_store) as router:
        await eventually(lambda: all_acked(redis_url, stream, "g", 20), what="all acknowledged")

        def shown() -> bool:
            text = render_metrics(router)
            return (
                f'router_source_lag_records{{mapping="orders",stream="{stream}"}} 0' in text
                and f'router_source_unacked_records{{mapping="orders",stream="{stream}"}} 0' in text
            )

        await eventually(shown, what="metrics at zero")
