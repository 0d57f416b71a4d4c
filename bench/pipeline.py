"""The pipeline core alone (lanes, batching, dispatch, acks), without any broker.

Run by hand: ``python bench/pipeline.py [--records 300000] [--batch-size 500]``. Records of
4 lanes go through an in-memory source to an invoker that only returns success. The baseline,
measured in the same run, does the least any router must do for the same records: cut them
into batches per lane, build each event, invoke, acknowledge, in one loop with no queues.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from router.app import tune_gc
from router.models import Invocation, Record, SourceKind
from tests.pipeline.fakes import Harness, ScriptedInvoker

LANES = 4


def make_records(n: int) -> list[Record]:
    return [
        Record(f"p{i % LANES}", i, {"messageId": str(i), "body": "x"}, str(i), 200, 0.0)
        for i in range(n)
    ]


async def baseline(n: int, batch_size: int) -> float:
    harness = Harness(SourceKind.STREAM, ScriptedInvoker())
    source, invoker = harness.source, harness.invoker
    records = make_records(n)
    start = time.perf_counter()
    by_lane: dict[str, list[Record]] = {}
    for record in records:
        by_lane.setdefault(str(record.lane), []).append(record)
    for lane_records in by_lane.values():
        for i in range(0, len(lane_records), batch_size):
            batch = lane_records[i : i + batch_size]
            event = source.build_event(batch)
            await invoker.invoke(
                Invocation(function="f", event=event, request_id=str(uuid.uuid4()), deadline=0)
            )
            await source.ack(batch)
    return n / (time.perf_counter() - start)


async def through_pipeline(n: int, batch_size: int) -> float:
    harness = Harness(
        SourceKind.STREAM,
        ScriptedInvoker(),
        capacity=8 * batch_size * LANES,
        batch_size=batch_size,
    )
    records = make_records(n)
    start = time.perf_counter()
    for i in range(0, n, 1000):
        await harness.pipeline.put(records[i : i + 1000])
    await harness.drain(n, timeout=600)
    rate = n / (time.perf_counter() - start)
    await harness.pipeline.stop(1)
    return rate


async def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--records", type=int, default=300_000)
    parser.add_argument("--batch-size", type=int, default=500)
    args = parser.parse_args()
    tune_gc()
    base = await baseline(args.records, args.batch_size)
    rate = await through_pipeline(args.records, args.batch_size)
    print(f"baseline (batch, invoke, ack in one loop) {base:12,.0f} records/s")
    print(f"pipeline                                  {rate:12,.0f} records/s")
    print(f"ratio                                     {rate / base:12.2f}")


if __name__ == "__main__":
    asyncio.run(main())
