"""Kinesis source throughput: the router against a bare aioboto3 GetShardIterator +
GetRecords loop, on the same stream and records.

Run by hand: ``python bench/kinesis.py [--endpoint URL] [--records 50000] [--shards 4]``.
Without ``--endpoint`` a moto server is started on a free port. One stream of ``shards``
shards is filled with ``records`` small JSON records (PutRecords, 500 per call) before
anything is timed; then, in one run:

* ``bare``: one task per shard: GetShardIterator (TRIM_HORIZON), then GetRecords (10,000
  per call) until it has read every record the shard holds;
* ``router``: a ``kinesis`` mapping (TRIM_HORIZON, batch size 100 or ``--batch-size``,
  default settings except a 0.1 s idle poll) delivering to an in-process python handler
  that only counts records; timed from the moment the router runs until the handler has
  counted every record.

The router checkpoints each shard as it goes (SQLite store). Target: router >= 0.9 x bare
records per second.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
import types
import uuid
from collections import Counter as Tally
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aioboto3
import orjson

from bench.support import fake_aws_credentials, free_port, running_router, server

REGION = "us-east-1"


class Counter:
    def __init__(self) -> None:
        self.count = 0
        self.done = asyncio.Event()
        self.target = 0

    async def handle(self, event: dict[str, Any], context: object) -> None:
        self.count += len(event["Records"])
        if self.count >= self.target:
            self.done.set()


COUNTER = Counter()


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    port = free_port()
    with server([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], port):
        yield f"http://127.0.0.1:{port}"


async def fill(kinesis: Any, arn: str, records: int) -> dict[str, int]:
    """Put ``records`` records; how many each shard got."""
    per_shard: Tally[str] = Tally()
    # One call at a time: moto numbers the records of concurrent puts to one shard alike
    # and keeps only one of them.
    semaphore = asyncio.Semaphore(1)

    async def chunk(start: int) -> None:
        entries = [
            {
                "PartitionKey": f"user-{i % 1000}",
                "Data": orjson.dumps({"id": i, "kind": "click"}),
            }
            for i in range(start, min(start + 500, records))
        ]
        async with semaphore:
            response = await kinesis.put_records(StreamARN=arn, Records=entries)
        per_shard.update(r["ShardId"] for r in response["Records"])

    await asyncio.gather(*(chunk(s) for s in range(0, records, 500)))
    return dict(per_shard)


async def bare(kinesis: Any, arn: str, per_shard: dict[str, int]) -> float:
    async def read(shard_id: str, expected: int) -> None:
        iterator = (
            await kinesis.get_shard_iterator(
                StreamARN=arn, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON"
            )
        )["ShardIterator"]
        seen = 0
        while seen < expected:
            response = await kinesis.get_records(
                ShardIterator=iterator, Limit=10_000, StreamARN=arn
            )
            seen += len(response["Records"])
            iterator = response["NextShardIterator"]

    start = time.perf_counter()
    await asyncio.gather(*(read(s, n) for s, n in per_shard.items()))
    return sum(per_shard.values()) / (time.perf_counter() - start)


async def through_router(endpoint: str, arn: str, records: int, batch_size: int) -> float:
    text = f"""
functions:
  count:
    invoker: python
    handler: kinesis_bench_handler:handle
mappings:
  - name: bench
    function: count
    starting_position: TRIM_HORIZON
    batch_size: {batch_size}
    source:
      type: kinesis
      stream_arn: {arn}
      endpoint_url: {endpoint}
      region: {REGION}
      poll_interval: 0.1
"""
    COUNTER.count = 0
    COUNTER.target = records
    COUNTER.done.clear()
    async with running_router(text):
        start = time.perf_counter()
        await COUNTER.done.wait()
        elapsed = time.perf_counter() - start
    return records / elapsed


async def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--endpoint", help="URL of a Kinesis endpoint (default: start moto)")
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument(
        "--batch-size",
        type=int,
        default=100,
        help="the mapping's batch size (the mapping holds up to 32 batches: its read size)",
    )
    args = parser.parse_args()
    fake_aws_credentials(REGION)
    module = types.ModuleType("kinesis_bench_handler")
    module.handle = COUNTER.handle  # type: ignore[attr-defined]
    sys.modules["kinesis_bench_handler"] = module
    with contextlib.ExitStack() as stack:
        endpoint = args.endpoint or stack.enter_context(moto_server())
        session = aioboto3.Session(region_name=REGION)
        async with session.client("kinesis", endpoint_url=endpoint) as kinesis:
            name = f"bench-{uuid.uuid4().hex[:8]}"
            await kinesis.create_stream(StreamName=name, ShardCount=args.shards)
            summary = await kinesis.describe_stream_summary(StreamName=name)
            arn = summary["StreamDescriptionSummary"]["StreamARN"]
            print(f"filling {arn} with {args.records:,} records on {args.shards} shards ...")
            per_shard = await fill(kinesis, arn, args.records)
            print(f"per shard: {dict(sorted(per_shard.items()))}")
            bare_rate = await bare(kinesis, arn, per_shard)
            print(f"bare    {bare_rate:10,.0f} records/s")
        router_rate = await through_router(endpoint, arn, args.records, args.batch_size)
        print(f"router  {router_rate:10,.0f} records/s")
        ratio = router_rate / bare_rate
        verdict = "meets" if ratio >= 0.9 else "below"
        print(f"ratio   {ratio:10.2f}  ({verdict} the 0.9 target)")


if __name__ == "__main__":
    asyncio.run(main())
