"""NATS JetStream mappings through the Router on a real store and the real server: the
event's shape, filtering, order per lane, partial batch responses, bisect to a poison message
that ends in a nats destination, a server restart mid-batch, two replicas on one consumer,
starting positions, metrics."""

from __future__ import annotations

import asyncio
import base64
import sys
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nats
import orjson
import pytest

from router.ops import render_metrics
from router.store import SQLStore
from tests.fixtures.nats import PrivateNats, StreamFactory
from tests.helpers import eventually, run_router

pytestmark = pytest.mark.nats

HANDLERS = """
import base64, json, os, time

def _log(event):
    with open(os.environ["NATS_EVENTS_FILE"], "a") as f:
        for subject, records in event["records"].items():
            for r in records:
                data = base64.b64decode(r["data"]).decode()
                f.write(json.dumps([subject, r["sequence"], data, r["headers"]]) + "\\n")

def record(event, context):
    _log(event)
    return {}

def slow(event, context):
    _log(event)
    time.sleep(0.05)
    return {}

def shape(event, context):
    with open(os.environ["NATS_EVENTS_FILE"] + ".event", "a") as f:
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
                failures.append({"itemIdentifier": str(r["sequence"])})
    _log(event)
    return {"batchItemFailures": failures}
"""


@pytest.fixture
def handlers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "nats_handlers.py").write_text(HANDLERS)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "nats_handlers", raising=False)
    events = tmp_path / "events.jsonl"
    monkeypatch.setenv("NATS_EVENTS_FILE", str(events))
    return events


Delivery = tuple[str, int, str, dict[str, str]]


def delivered(events: Path) -> list[Delivery]:
    if not events.exists():
        return []
    return [tuple(orjson.loads(line)) for line in events.read_bytes().splitlines() if line]


def config(
    url: str,
    stream: str,
    handler: str,
    extra: str = "",
    source_extra: str = "",
    position: str = "TRIM_HORIZON",
    subjects: str | None = None,
) -> str:
    return f"""
functions:
  fn:
    invoker: python
    handler: nats_handlers:{handler}
mappings:
  - name: orders
    function: fn
    batch_size: 10
    starting_position: {position}
    source:
      type: nats
      servers: ["{url}"]
      stream: {stream}
      subjects: ["{subjects or stream + ".>"}"]
      ack_wait: 3{source_extra}
{extra}"""


async def publish(
    url: str, items: list[tuple[str, bytes]], headers: list[dict[str, str]] | None = None
) -> list[int]:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        seqs = []
        for n, (subject, data) in enumerate(items):
            ack = await js.publish(subject, data, headers=headers[n] if headers else None)
            seqs.append(ack.seq)
        return seqs
    finally:
        await nc.close()


async def consumer_state(url: str, stream: str, consumer: str = "orders") -> tuple[int, int]:
    """(messages not yet delivered, delivered and not acknowledged)."""
    nc = await nats.connect(url)
    try:
        info = await nc.jetstream().consumer_info(stream, consumer)
        return info.num_pending or 0, info.num_ack_pending or 0
    finally:
        await nc.close()


async def all_acked(url: str, stream: str, consumer: str = "orders") -> bool:
    try:
        return await consumer_state(url, stream, consumer) == (0, 0)
    except Exception:
        return False


async def test_messages_ruled_out_on_their_bytes_are_acknowledged_and_never_delivered(
    sqlite_store: SQLStore, nats_url: str, nats_streams: StreamFactory, handlers: Path
) -> None:
    # The pattern needs a string: messages whose bytes hold none are dropped before decoding,
    # those spelling it with an escape or holding it elsewhere are decoded and matched.
    stream = await nats_streams("RAW")
    payloads = [
        orjson.dumps({"kind": "refund"}),  # kept
        orjson.dumps({"kind": "order"}),
        b'{"kind": "re\\u0066und"}',  # kept (an escape)
        b"refund, not JSON",
        orjson.dumps({"kind": "invoice", "note": "refund"}),
    ]
    seqs = await publish(nats_url, [(f"{stream}.eu", p) for p in payloads])
    extra = """    filter_criteria:
      filters:
        - pattern: '{"data": {"kind": ["refund"]}}'"""
    async with run_router(config(nats_url, stream, "shape", extra), sqlite_store):
        await eventually(lambda: len(delivered(handlers)) == 2, what="kept messages")
        await eventually(lambda: all_acked(nats_url, stream), what="all acknowledged")
    assert [s for _, s, _, _ in delivered(handlers)] == [seqs[0], seqs[2]]


async def test_event_shape_and_filtering_on_data(
    sqlite_store: SQLStore, nats_url: str, nats_streams: StreamFactory, handlers: Path
) -> None:
    stream = await nats_streams("SHAPE")
    items = [(f"{stream}.eu", orjson.dumps({"keep": i % 3 == 0, "i": i})) for i in range(30)]
    items.append((f"{stream}.eu", b"not json"))
    headers = [{"kind": "order"}] * len(items)
    seqs = await publish(nats_url, items, headers)
    extra = """    filter_criteria:
      filters:
        - pattern: '{"data": {"keep": [true]}}'"""
    async with run_router(config(nats_url, stream, "shape", extra), sqlite_store):
        await eventually(lambda: len(delivered(handlers)) == 10, what="kept messages")
        await eventually(lambda: all_acked(nats_url, stream), what="all acknowledged")
    got = delivered(handlers)
    assert [s for _, s, _, _ in got] == seqs[0:30:3]
    event = orjson.loads(Path(str(handlers) + ".event").read_text().splitlines()[0])
    assert event["eventSource"] == "nats:jetstream"
    assert event["servers"] == nats_url
    assert event["stream"] == stream
    assert event["consumer"] == "orders"
    first = event["records"][f"{stream}.eu"][0]
    assert set(first) == {"subject", "sequence", "timestamp", "deliveryCount", "headers", "data"}
    assert first["subject"] == f"{stream}.eu"
    assert first["sequence"] == seqs[0]
    assert first["deliveryCount"] == 1
    assert first["headers"] == {"kind": "order"}
    assert abs(first["timestamp"] / 1000 - datetime.now(UTC).timestamp()) < 120
    assert base64.b64decode(first["data"]) == orjson.dumps({"keep": True, "i": 0})


async def test_order_per_subject_and_per_key_header(
    sqlite_store: SQLStore, nats_url: str, nats_streams: StreamFactory, handlers: Path
) -> None:
    stream = await nats_streams("ORDER")
    items = [(f"{stream}.{'a' if i % 2 else 'b'}", f"{i}".encode()) for i in range(200)]
    headers = [{"customer": f"c{i % 5}"} for i in range(200)]
    await publish(nats_url, items, headers)
    extra = "    parallelization_factor: 3"
    text = config(nats_url, stream, "slow", extra, "\n      key_header: customer")
    async with run_router(text, sqlite_store):
        await eventually(lambda: len(delivered(handlers)) >= 200, timeout=60, what="everything")
    per_key: dict[tuple[str, str], list[int]] = defaultdict(list)
    for subject, _, data, hdrs in delivered(handlers):
        per_key[(subject, hdrs["customer"])].append(int(data))
    assert len(per_key) == 10
    for key, values in per_key.items():
        assert values == sorted(values), f"{key} out of order"
        assert len(values) == 20


async def test_partial_batch_response_retries_from_the_failed_message(
    sqlite_store: SQLStore, nats_url: str, nats_streams: StreamFactory, handlers: Path
) -> None:
    stream = await nats_streams("PARTIAL")
    items = [(f"{stream}.x", f"ok-{i}".encode()) for i in range(10)]
    items[4] = (f"{stream}.x", b"poison-4")
    seqs = await publish(nats_url, items)
    extra = """    function_response_types: [ReportBatchItemFailures]
    maximum_retry_attempts: 2"""
    async with run_router(config(nats_url, stream, "partial", extra), sqlite_store):
        await eventually(lambda: all_acked(nats_url, stream), what="acks after retries")
    calls: dict[int, int] = defaultdict(int)
    for _, seq, _, _ in delivered(handlers):
        calls[seq] += 1
    assert all(calls[s] == 1 for s in seqs[:4])
    assert calls[seqs[4]] == 3
    assert all(calls[s] >= 2 for s in seqs[5:])


async def test_bisect_isolates_a_poison_message_into_a_nats_destination(
    sqlite_store: SQLStore, nats_url: str, nats_streams: StreamFactory, handlers: Path
) -> None:
    stream = await nats_streams("BISECT")
    dlq = await nats_streams("DLQ")
    items = [(f"{stream}.x", f"ok-{i}".encode()) for i in range(20)]
    items[7] = (f"{stream}.x", b"poison-7")
    seqs = await publish(nats_url, items)
    extra = f"""    bisect_batch_on_function_error: true
    maximum_retry_attempts: 1
    destination_config:
      on_failure:
        type: nats
        servers: ["{nats_url}"]
        subject: {dlq}.failed
        stream: {dlq}"""
    async with run_router(config(nats_url, stream, "poison", extra), sqlite_store):
        await eventually(lambda: all_acked(nats_url, stream), what="acks past the poison")
    nc = await nats.connect(nats_url)
    try:
        sub = await nc.jetstream().pull_subscribe(f"{dlq}.failed", "check", stream=dlq)
        (msg,) = await sub.fetch(1, timeout=5)
    finally:
        await nc.close()
    failure = orjson.loads(msg.data)
    assert failure["requestContext"]["condition"] == "RetryAttemptsExhausted"
    info = failure["NatsBatchInfo"]
    assert info["batchSize"] == 1
    assert info["startSequence"] == info["endSequence"] == seqs[7]
    originals = failure["payload"]["records"][f"{stream}.x"]
    assert [base64.b64decode(r["data"]) for r in originals] == [b"poison-7"]
    assert {s for _, s, _, _ in delivered(handlers)} == set(seqs) - {seqs[7]}


async def test_server_restart_mid_batch_loses_nothing(
    sqlite_store: SQLStore, private_nats: PrivateNats, handlers: Path
) -> None:
    url = private_nats.url
    nc = await nats.connect(url)
    try:
        await nc.jetstream().add_stream(name="RESTART", subjects=["RESTART.>"])
    finally:
        await nc.close()
    total = 400
    seqs = await publish(url, [("RESTART.x", f"{i}".encode()) for i in range(total)])
    source_extra = "\n      reconnect_wait: 0.2"
    async with run_router(config(url, "RESTART", "slow", source_extra=source_extra), sqlite_store):
        for threshold in (50, 200):
            await eventually(
                lambda t=threshold: len(delivered(handlers)) >= t,  # type: ignore[misc]
                timeout=60,
                what=f"{threshold} delivered",
            )
            await asyncio.to_thread(private_nats.restart)
        await eventually(lambda: all_acked(url, "RESTART"), timeout=90, what="all acknowledged")
    assert {s for _, s, _, _ in delivered(handlers)} == set(seqs)


async def test_two_replicas_share_the_consumer_and_nothing_is_lost(
    sqlite_store: SQLStore, nats_url: str, nats_streams: StreamFactory, handlers: Path
) -> None:
    stream = await nats_streams("REPLICAS")
    seqs = await publish(nats_url, [(f"{stream}.x", b"x") for _ in range(300)])
    text = config(nats_url, stream, "slow", source_extra="\n      nak_delay: 0")
    seen: set[int] = set()
    async with run_router(text, sqlite_store, replica_id="a"):
        await eventually(lambda: len(delivered(handlers)) >= 20, what="first deliveries")
        async with run_router(text, sqlite_store, replica_id="b"):
            seqs += await publish(nats_url, [(f"{stream}.x", b"y") for _ in range(300)])
            await eventually(lambda: len(delivered(handlers)) >= 200, what="deliveries")
        seqs += await publish(nats_url, [(f"{stream}.x", b"z") for _ in range(100)])

        def complete() -> bool:
            seen.update(s for _, s, _, _ in delivered(handlers))
            return len(seen) == len(seqs)

        await eventually(complete, timeout=60, what="every message delivered")
        await eventually(lambda: all_acked(nats_url, stream), what="acks")
    assert seen == set(seqs)


@pytest.mark.parametrize("position", ["LATEST", "AT_TIMESTAMP"])
async def test_starting_positions(
    sqlite_store: SQLStore,
    nats_url: str,
    nats_streams: StreamFactory,
    handlers: Path,
    position: str,
) -> None:
    stream = await nats_streams("POS")
    subject = f"{stream}.x"
    old = await publish(nats_url, [(subject, b"old")] * 5)
    await asyncio.sleep(0.05)
    cut = datetime.now(UTC)
    await asyncio.sleep(0.05)
    middle = await publish(nats_url, [(subject, b"middle")] * 5)
    extra = (
        f"    starting_position_timestamp: {cut.isoformat()}" if position == "AT_TIMESTAMP" else ""
    )
    text = config(nats_url, stream, "record", extra, position=position)
    async with run_router(text, sqlite_store):

        async def created() -> bool:
            try:
                await consumer_state(nats_url, stream)
                return True
            except Exception:
                return False

        await eventually(created, what="the consumer")
        new = await publish(nats_url, [(subject, b"new")] * 5)
        want = middle + new if position == "AT_TIMESTAMP" else new
        await eventually(lambda: len(delivered(handlers)) >= len(want), what="deliveries")
        await asyncio.sleep(0.3)
    got = [s for _, s, _, _ in delivered(handlers)]
    assert got == want
    assert not set(old) & set(got)


async def test_pending_metrics_and_the_documented_yaml(
    sqlite_store: SQLStore, private_nats: PrivateNats, handlers: Path
) -> None:
    """The mapping as documented (stream ORDERS on orders.>, created when missing), on a
    server of the test's own."""
    url = private_nats.url
    text = f"""
functions:
  f: {{invoker: python, handler: nats_handlers:record}}
mappings:
  - name: js
    function: f
    source: {{type: nats, servers: ["{url}"], stream: ORDERS, subjects: ["orders.>"]}}
    starting_position: TRIM_HORIZON
"""
    nc = await nats.connect(url)
    js = nc.jetstream()
    try:
        async with run_router(text, sqlite_store) as router:

            async def stream_made() -> bool:
                try:
                    await js.stream_info("ORDERS")
                    return True
                except Exception:
                    return False

            await eventually(stream_made, timeout=60, what="the stream created")
            for i in range(20):
                await js.publish(f"orders.{i % 2}", b"{}")
            # At least once: a message may come twice (an acknowledgement lost with a dropped
            # connection); each of the 20 must come.
            await eventually(
                lambda: len({seq for _, seq, _, _ in delivered(handlers)}) == 20,
                timeout=60,
                what="deliveries",
            )
            await eventually(lambda: all_acked(url, "ORDERS", "js"), what="acknowledged")
            source: Any = next(iter(router.running.values())).pipeline.source
            source._due_metrics = 0.0  # read the counts at the next fetch
            await publish(url, [("orders.9", b"{}")])

            def shown() -> bool:
                text = render_metrics(router)
                return (
                    'router_source_lag_records{mapping="js",stream="ORDERS"} ' in text
                    and 'router_source_unacked_records{mapping="js",stream="ORDERS"} ' in text
                )

            await eventually(shown, what="the consumer's counts")
    finally:
        await nc.close()
