"""Record-to-handler latency at a trickle: the router vs a bare client loop, in one run.

Run by hand: ``python bench/latency.py [--rate 200] [--sqs-rate 20] [--seconds 10]
[--only kafka,sqs,directory]``.
A tansu broker (Kafka) and a moto server (SQS) are started on free ports. For each source, a
bare loop runs first, then the router, each on its own topic / queue / folder; a writer sends
``rate`` records a second for ``seconds``, each carrying the time it was written; the
handler (sync, as most Lambda handlers are; ``--async-handler`` for ``async def``) takes the
time first thing, and the difference is the latency. Before the trickle, one probe record is
delivered end to end, so joining a group or starting a watcher is not counted.

* kafka: one partition; bare = aiokafka ``getmany`` + ``commit``; router = a ``kafka``
  mapping with ``maximum_batching_window: 0``.
* sqs: written 10 at a time (SendMessageBatch); bare = 2 loops of ReceiveMessage (10 a
  call, 1 s long poll) + DeleteMessageBatch;
  router = an ``sqs`` mapping with the same receivers, batch size 10, window 0.
* directory: files written to a temporary name, then renamed into the folder; bare =
  watchfiles ``awatch`` with the router's own parameters, reading each new file; router = a
  ``directory`` mapping with ``settle: 0`` (the default 0.2 s settle adds 0.2 s by design).
  The directory source invokes asynchronously: its latency includes the durable queue.

The process runs under the garbage-collector settings ``router run`` applies (both sides;
``--default-gc`` keeps Python's own).

Target: router p99 <= 2 x the bare loop's p99 + 5 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import os
import sys
import tempfile
import time
import types
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aioboto3
import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench.kafka import bare_consumer, tansu
from bench.sqs import REGION, moto_server
from bench.support import fake_aws_credentials, load, percentile, running_router
from connectors.directory import WATCH_DEBOUNCE_MS, WATCH_STEP_MS
from router.app import tune_gc

SEEN: list[float] = []
"""Latencies (seconds) seen by the current consumer, bare or router."""
ARRIVED = asyncio.Event()


def stamps(event: dict[str, Any]) -> list[float]:
    """Write times carried by the records of a Lambda event (Kafka, SQS or S3)."""
    if "records" in event:
        return [
            orjson.loads(base64.b64decode(r["value"]))["t"]
            for rs in event["records"].values()
            for r in rs
        ]
    out = []
    for r in event["Records"]:
        if "body" in r:
            out.append(orjson.loads(r["body"])["t"])
        else:
            out.append(stamp_of(r["s3"]["object"]["key"]))
    return out


def seen(now: float, written: list[float]) -> None:
    SEEN.extend(now - t for t in written)
    LOOP.call_soon_threadsafe(ARRIVED.set)


def handle(event: dict[str, Any], context: object) -> None:
    seen(time.time(), stamps(event))


async def handle_async(event: dict[str, Any], context: object) -> None:
    seen(time.time(), stamps(event))


LOOP: asyncio.AbstractEventLoop


def stamp_of(name: str) -> float:
    return float(Path(name).stem.split("-")[-1])


def body(i: int) -> bytes:
    return orjson.dumps({"i": i, "t": time.time(), "pad": "x" * 64})


Write = Callable[[list[int]], Coroutine[Any, Any, None]]
"""Writes the records of the given numbers (one tick's worth)."""


async def measure(write: Write, rate: float, seconds: float, tick: int = 1) -> list[float]:
    """Probe until one record arrives, then trickle ``tick`` records at a time; the latencies
    of the trickle."""
    SEEN.clear()
    ARRIVED.clear()
    deadline = time.monotonic() + 120
    while not SEEN:
        if time.monotonic() > deadline:
            raise SystemExit("the probe record never reached the handler")
        await write([-1])
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ARRIVED.wait(), 5)
    await asyncio.sleep(0.5)
    SEEN.clear()
    count = int(rate * seconds)
    start = time.monotonic()
    pending: set[asyncio.Task[None]] = set()
    for i in range(0, count, tick):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(write(list(range(i, min(i + tick, count)))))
        pending.add(task)
        task.add_done_callback(pending.discard)
    await asyncio.gather(*pending)
    deadline = time.monotonic() + 30
    while len(SEEN) < count and time.monotonic() < deadline:
        ARRIVED.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ARRIVED.wait(), 1)
    if len(SEEN) < count:
        print(f"    only {len(SEEN)} of {count} records arrived within 30 s")
    return list(SEEN)


# ----------------------------------------------------------------- kafka


@contextlib.asynccontextmanager
async def kafka_topic(bootstrap: str) -> AsyncIterator[tuple[str, Write]]:
    topic = f"latency-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 1, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    await producer.start()

    async def write(ids: list[int]) -> None:
        for i in ids:
            await producer.send(topic, body(i))

    try:
        yield topic, write
    finally:
        await producer.stop()


async def kafka_bare(bootstrap: str, rate: float, seconds: float, wait_ms: int) -> list[float]:
    async with kafka_topic(bootstrap) as (topic, write):
        consumer = bare_consumer(bootstrap, topic, fetch_max_wait_ms=wait_ms)
        await consumer.start()

        async def loop() -> None:
            while True:
                fetched = await consumer.getmany(timeout_ms=1000, max_records=1000)
                now = time.time()
                written = [orjson.loads(m.value)["t"] for ms in fetched.values() for m in ms]
                if written:
                    seen(now, written)
                    await consumer.commit()

        task = asyncio.create_task(loop())
        try:
            return await measure(write, rate, seconds)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await consumer.stop()


async def kafka_router(
    bootstrap: str, rate: float, seconds: float, handler: str, wait_ms: int
) -> list[float]:
    async with kafka_topic(bootstrap) as (topic, write):
        text = f"""
functions:
  f: {{invoker: python, handler: "latency_bench_handler:{handler}"}}
mappings:
  - name: latency
    function: f
    maximum_batching_window: 0
    starting_position: TRIM_HORIZON
    source:
      type: kafka
      bootstrap_servers: ["{bootstrap}"]
      topics: [{topic}]
      consumer_group_id: router-{uuid.uuid4().hex[:8]}
      session_timeout_ms: 1000
      heartbeat_interval_ms: 100
      fetch_max_wait_ms: {wait_ms}
"""
        async with running_router(text):
            return await measure(write, rate, seconds)


# ----------------------------------------------------------------- sqs

RECEIVERS = 2
SQS_TICK = 10
"""Messages a SendMessageBatch (one call per 50 ms at 200/s: moto cannot take 200 calls/s on
a loaded machine, and a send that waits for the emulator would count as latency)."""


@contextlib.asynccontextmanager
async def sqs_queue(endpoint: str) -> AsyncIterator[tuple[Any, str, Write]]:
    session = aioboto3.Session(region_name=REGION)
    async with session.client("sqs", endpoint_url=endpoint) as sqs:
        name = f"latency-{uuid.uuid4().hex[:8]}"
        url = (await sqs.create_queue(QueueName=name))["QueueUrl"]

        async def write(ids: list[int]) -> None:
            entries = [{"Id": str(n), "MessageBody": body(i).decode()} for n, i in enumerate(ids)]
            await sqs.send_message_batch(QueueUrl=url, Entries=entries)

        yield sqs, url, write


async def sqs_bare(endpoint: str, rate: float, seconds: float) -> list[float]:
    async with sqs_queue(endpoint) as (sqs, url, write):

        async def loop() -> None:
            while True:
                response = await sqs.receive_message(
                    QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1
                )
                now = time.time()
                batch = response.get("Messages") or []
                if not batch:
                    continue
                seen(now, [orjson.loads(m["Body"])["t"] for m in batch])
                entries = [
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(batch)
                ]
                await sqs.delete_message_batch(QueueUrl=url, Entries=entries)

        tasks = [asyncio.create_task(loop()) for _ in range(RECEIVERS)]
        try:
            return await measure(write, rate, seconds, SQS_TICK)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


async def sqs_router(endpoint: str, rate: float, seconds: float, handler: str) -> list[float]:
    async with sqs_queue(endpoint) as (_, url, write):
        text = f"""
functions:
  f: {{invoker: python, handler: "latency_bench_handler:{handler}"}}
mappings:
  - name: latency
    function: f
    batch_size: 10
    maximum_batching_window: 0
    source:
      type: sqs
      queue_url: {url}
      endpoint_url: {endpoint}
      region: {REGION}
      wait_time_seconds: 1
      receivers: {RECEIVERS}
"""
        async with running_router(text):
            return await measure(write, rate, seconds, SQS_TICK)


# ----------------------------------------------------------------- directory


@contextlib.contextmanager
def folder() -> Iterator[tuple[Path, Write]]:
    with tempfile.TemporaryDirectory() as name:
        root = Path(name) / "in"
        root.mkdir()
        staging = Path(name) / "staging"
        staging.mkdir()

        async def write(ids: list[int]) -> None:
            for i in ids:
                when = time.time()
                temporary = staging / f"{i}.json"
                temporary.write_bytes(body(i))
                os.rename(temporary, root / f"r{i + 1}-{when:.6f}.json")

        yield root, write


async def directory_bare(rate: float, seconds: float) -> list[float]:
    from watchfiles import awatch

    with folder() as (root, write):
        stop = asyncio.Event()
        ready = asyncio.Event()

        async def loop() -> None:
            done: set[str] = set()
            ready.set()
            async for changes in awatch(
                root,
                watch_filter=None,
                stop_event=stop,
                debounce=WATCH_DEBOUNCE_MS,
                step=WATCH_STEP_MS,
            ):
                for _, raw in sorted(changes, key=lambda c: c[1]):
                    if raw in done:
                        continue
                    with contextlib.suppress(FileNotFoundError):
                        await asyncio.to_thread(Path(raw).read_bytes)
                        done.add(raw)
                        seen(time.time(), [stamp_of(raw)])

        task = asyncio.create_task(loop())
        await ready.wait()
        try:
            return await measure(write, rate, seconds)
        finally:
            stop.set()
            await task


async def directory_router(rate: float, seconds: float, handler: str) -> list[float]:
    with folder() as (root, write):
        text = f"""
functions:
  f: {{invoker: python, handler: "latency_bench_handler:{handler}"}}
mappings:
  - name: latency
    function: f
    maximum_batching_window: 0
    source: {{type: directory, path: "{root}", settle: 0}}
"""
        async with running_router(text):
            return await measure(write, rate, seconds)


# ----------------------------------------------------------------- main


def summary(latencies: list[float]) -> tuple[float, float, float]:
    ms = [x * 1000 for x in latencies]
    return percentile(ms, 0.5), percentile(ms, 0.99), max(ms, default=0.0)


async def main() -> None:
    global LOOP
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rate", type=float, default=200, help="records written per second")
    parser.add_argument("--seconds", type=float, default=10, help="length of each trickle")
    parser.add_argument(
        "--sqs-rate",
        type=float,
        default=20,
        help="records per second for SQS (moto falls behind at 200/s on a loaded 2-core machine)",
    )
    parser.add_argument("--only", default="kafka,sqs,directory", help="sources, comma-separated")
    parser.add_argument("--async-handler", action="store_true", help="an async def handler")
    parser.add_argument(
        "--fetch-max-wait-ms",
        type=int,
        default=500,
        help="Kafka fetch_max_wait_ms, the same on both sides (500 is the client's default)",
    )
    parser.add_argument(
        "--default-gc",
        action="store_true",
        help="keep Python's default GC settings instead of those `router run` applies",
    )
    args = parser.parse_args()
    if not args.default_gc:
        # As `router run` does; the bare loops run in this same process under the same settings.
        tune_gc()
    LOOP = asyncio.get_running_loop()
    fake_aws_credentials(REGION)
    module = types.ModuleType("latency_bench_handler")
    module.handle = handle  # type: ignore[attr-defined]
    module.handle_async = handle_async  # type: ignore[attr-defined]
    sys.modules["latency_bench_handler"] = module
    handler = "handle_async" if args.async_handler else "handle"
    only = set(args.only.split(","))
    rate, seconds = args.rate, args.seconds
    print(f"{rate:g} records/s for {seconds:g} s per run, {handler} handler; ms p50 / p99 / max")
    with contextlib.ExitStack() as stack:
        runs: list[tuple[str, Callable[[], Awaitable[list[float]]], Callable[[], Any]]] = []
        if "kafka" in only:
            bootstrap = stack.enter_context(tansu())
            runs.append(
                (
                    "kafka",
                    lambda: kafka_bare(bootstrap, rate, seconds, args.fetch_max_wait_ms),
                    lambda: kafka_router(bootstrap, rate, seconds, handler, args.fetch_max_wait_ms),
                )
            )
        if "sqs" in only:
            endpoint = stack.enter_context(moto_server())
            runs.append(
                (
                    "sqs",
                    lambda: sqs_bare(endpoint, args.sqs_rate, seconds),
                    lambda: sqs_router(endpoint, args.sqs_rate, seconds, handler),
                )
            )
        if "directory" in only:
            runs.append(
                (
                    "directory",
                    lambda: directory_bare(rate, seconds),
                    lambda: directory_router(rate, seconds, handler),
                )
            )
        for name, bare_run, router_run in runs:
            base = summary(await bare_run())
            print(f"  {name:10} bare   {base[0]:8.1f} {base[1]:8.1f} {base[2]:8.1f}  ({load()})")
            mine = summary(await router_run())
            target = 2 * base[1] + 5
            verdict = "meets" if mine[1] <= target else "misses"
            print(
                f"  {name:10} router {mine[0]:8.1f} {mine[1]:8.1f} {mine[2]:8.1f}  "
                f"p99 target <= {target:.1f}: {verdict}  ({load()})"
            )


if __name__ == "__main__":
    asyncio.run(main())
