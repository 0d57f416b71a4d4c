"""The router's Kafka path alone: CPU per record of the router's own work, without a broker.

Run by hand: ``python bench/kafka_path.py [--records 400000] [--filter] [--async-handler]``.
A router runs one Kafka mapping (batch size 1000, no batching window, the counting handler
of ``bench/kafka.py``) whose ``KafkaSource`` gets a stub consumer instead of aiokafka's: its
``getmany`` hands out ready-made aiokafka ``ConsumerRecord``s (4 partitions, the values of
``bench/kafka.py``), 1000 at a time, and its ``commit`` does nothing. Everything else is the
router's: the source's loop, records, offsets and acks, the pipeline's lanes and batches, the
filter, the Lambda event, the ``python`` invoker.

What it prints is the router's own CPU time per record (the client's decoding, the broker and
the network are not in it), timed from the first delivery until every offset is acknowledged.
It is steadier than ``bench/kafka.py``'s ratios on a shared machine, and it is what a profiler
should run to see the router's part: ``py-spy record --format raw -o out.txt -- python
bench/kafka_path.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import types
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aiokafka.structs import ConsumerRecord, TopicPartition

from bench.kafka import COUNTER, PATTERNS, value
from bench.support import filter_yaml, load, running_router
from connectors.kafka import source as kafka_source
from connectors.kafka.offsets import PartitionOffsets
from router.app import tune_gc

PARTITIONS = 4
TOPIC = "bench-path"


class StubConsumer:
    """What ``KafkaSource`` uses of aiokafka's consumer, over records made in advance."""

    def __init__(self, messages: dict[TopicPartition, list[Any]]) -> None:
        self._messages = messages
        self._next = dict.fromkeys(messages, 0)
        self._order = list(messages)
        self._turn = 0

    async def getmany(self, timeout_ms: int = 0, max_records: int = 1000) -> dict[Any, list[Any]]:
        await asyncio.sleep(0)
        # One partition per fetch, in turn (as aiokafka hands out one partition's fetched
        # records), at most 1000 records.
        for _ in range(len(self._order)):
            tp = self._order[self._turn % len(self._order)]
            self._turn += 1
            start = self._next[tp]
            chunk = self._messages[tp][start : start + min(max_records, 1000)]
            if chunk:
                self._next[tp] = start + len(chunk)
                return {tp: chunk}
        await asyncio.sleep(0.05)
        return {}

    async def commit(self, offsets: object = None) -> None:
        await asyncio.sleep(0)

    def highwater(self, tp: object) -> None:
        return None

    async def topics(self) -> set[str]:
        return {TOPIC}

    async def stop(self) -> None:
        pass


def messages(records: int) -> dict[TopicPartition, list[Any]]:
    values = [value(i) for i in range(1000)]
    keys = [f"k{i}".encode() for i in range(1000)]
    per = records // PARTITIONS
    stamp = int(time.time() * 1000)
    return {
        TopicPartition(TOPIC, p): [
            ConsumerRecord(
                TOPIC,
                p,
                i,
                stamp,
                0,
                keys[i % 1000],
                values[i % 1000],
                None,
                len(keys[i % 1000]),
                len(values[i % 1000]),
                (),
            )
            for i in range(per)
        ]
        for p in range(PARTITIONS)
    }


def stub_the_client(stub: StubConsumer, partitions: list[TopicPartition]) -> None:
    """Make every ``KafkaSource`` join with ``stub`` as its consumer, owning ``partitions``."""

    async def join(self: Any) -> StubConsumer:
        self._consumer = stub
        for tp in partitions:
            self._offsets[tp] = PartitionOffsets()
        return stub

    async def no_resets(self: Any) -> None:
        return None

    kafka_source.KafkaSource._join = join  # type: ignore[method-assign]
    kafka_source.KafkaSource._load_resets = no_resets  # type: ignore[method-assign]


async def run(records: int, patterns: list[str], handler: str) -> tuple[float, float]:
    """(records per wall-clock second, ns of CPU per record) of one router run."""
    fetched = messages(records)
    total = sum(len(ms) for ms in fetched.values())
    stub_the_client(StubConsumer(fetched), list(fetched))
    filters = filter_yaml(patterns)
    text = f"""
functions:
  count:
    invoker: python
    handler: kafka_bench_handler:{handler}
mappings:
  - name: path
    function: count
    batch_size: 1000
    maximum_batching_window: 0
    starting_position: TRIM_HORIZON
{filters}    source:
      type: kafka
      bootstrap_servers: ["127.0.0.1:9"]
      topics: [{TOPIC}]
      consumer_group_id: path
"""
    COUNTER.delivered.clear()
    COUNTER.loop = asyncio.get_running_loop()
    async with running_router(text) as router:
        await COUNTER.delivered.wait()
        start, cpu = time.perf_counter(), time.process_time()
        (running,) = router.running.values()
        trackers = running.pipeline.source._offsets  # type: ignore[attr-defined]
        while sum(t.committed or 0 for t in trackers.values()) < total:  # noqa: ASYNC110
            await asyncio.sleep(0.005)
        elapsed, used = time.perf_counter() - start, time.process_time() - cpu
    return total / elapsed, used / total * 1e9


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=400_000)
    parser.add_argument("--filter", action="store_true", help="the 5 patterns of bench/kafka.py")
    parser.add_argument("--async-handler", action="store_true")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    tune_gc()
    module = types.ModuleType("kafka_bench_handler")
    module.handle = COUNTER.handle  # type: ignore[attr-defined]
    module.handle_async = COUNTER.handle_async  # type: ignore[attr-defined]
    sys.modules["kafka_bench_handler"] = module
    handler = "handle_async" if args.async_handler else "handle"
    what = f"{'5 patterns' if args.filter else 'no filter'}, {handler}"
    for round_ in range(1, args.rounds + 1):
        rate, ns = await run(args.records, PATTERNS if args.filter else [], handler)
        print(f"round {round_} ({what}; {load()}): {rate:10,.0f} rec/s wall, ", end="")
        print(f"{ns:6,.0f} ns CPU a record")


if __name__ == "__main__":
    asyncio.run(main())
