"""Message broker sources' throughput: the router vs a bare client loop, per broker.

Run by hand: ``python bench/brokers.py --broker NAME [--messages N] [--rounds R]``
(``--broker all`` runs every broker below). Each broker has one function, registered with
``@broker("name")``, that runs in one process, against the broker already running on this
machine:

* ``bare``: the broker's own client consuming and acknowledging the same messages in batches;
* ``router``: a mapping delivering them to an in-process python handler that only counts.

Each router run is paired with a bare run just before it, on the same number of messages, and
its ratio is against that run; ``--rounds`` repeats the pair and gives the median ratio (single
runs swing on a shared machine). Rates are messages per wall-clock second and per CPU-second of
this process. Target: router >= 0.5 x bare for every broker.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

Rate = tuple[float, float]
"""(messages per wall-clock second, messages per CPU-second of this process)."""


@dataclass(frozen=True)
class Options:
    messages: int
    rounds: int
    batch_size: int


@dataclass(frozen=True)
class Round:
    bare: Rate
    router: Rate


BrokerBench = Callable[[Options], Coroutine[Any, Any, list[Round]]]
BROKERS: dict[str, BrokerBench] = {}


def broker(name: str) -> Callable[[BrokerBench], BrokerBench]:
    """Register a broker's benchmark function under ``name`` (the ``--broker`` value)."""

    def register(fn: BrokerBench) -> BrokerBench:
        BROKERS[name] = fn
        return fn

    return register


class Counter:
    """The counting handler: ``bench_brokers_handler:handle`` counts the records of any event
    shape whose records are lists (``Records``) or lists in a mapping (``rmqMessagesByQueue``)."""

    def __init__(self) -> None:
        self.count = 0
        self._lock = threading.Lock()
        self.changed = asyncio.Event()
        self.loop: asyncio.AbstractEventLoop | None = None

    def reset(self) -> None:
        with self._lock:
            self.count = 0
        self.loop = asyncio.get_running_loop()
        self.changed = asyncio.Event()

    def handle(self, event: dict[str, object], context: object) -> dict[str, object]:
        n = 0
        for v in event.values():
            if isinstance(v, list):
                n += len(v)
            elif isinstance(v, dict):
                n += sum(len(rs) for rs in v.values() if isinstance(rs, list))
        with self._lock:
            self.count += n
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self.changed.set)
        return {}

    async def wait_for(self, total: int, timeout: float) -> None:
        async def reached() -> None:
            while self.count < total:
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(reached(), timeout)


COUNTER = Counter()


def install_handler_module() -> None:
    """Make ``bench_brokers_handler:handle`` importable by the router's python invoker."""
    import types

    module = types.ModuleType("bench_brokers_handler")
    module.handle = COUNTER.handle  # type: ignore[attr-defined]
    sys.modules["bench_brokers_handler"] = module


# --- RabbitMQ -------------------------------------------------------------------------------

RABBIT_URL = "amqp://127.0.0.1:5672/"


def rabbit_body(i: int) -> bytes:
    import orjson

    return orjson.dumps({"id": i, "kind": ["order", "refund"][i % 2], "amount": i % 100})


async def rabbit_queue(messages: int) -> str:
    """A new queue holding ``messages`` JSON messages (~60 bytes)."""
    import uuid

    import aio_pika

    name = f"bench-{uuid.uuid4().hex[:8]}"
    connection = await aio_pika.connect(RABBIT_URL)
    try:
        channel = await connection.channel(publisher_confirms=False)
        await channel.declare_queue(name, durable=False, auto_delete=False)
        exchange = channel.default_exchange
        for i in range(messages):
            await exchange.publish(aio_pika.Message(rabbit_body(i)), name)
        queue = await channel.declare_queue(name, passive=True)
        while (queue.declaration_result.message_count or 0) < messages:
            await asyncio.sleep(0.1)
            queue = await channel.declare_queue(name, passive=True)
    finally:
        await connection.close()
    return name


async def rabbit_delete(name: str) -> None:
    import aio_pika

    connection = await aio_pika.connect(RABBIT_URL)
    try:
        channel = await connection.channel()
        await channel.queue_delete(name)
    finally:
        await connection.close()


async def rabbit_bare(name: str, messages: int, batch_size: int, prefetch: int) -> Rate:
    """aio-pika's own loop: consume with ``prefetch``, ack every ``batch_size`` messages at
    once (``multiple``), as a hand-written batch consumer does."""
    import aio_pika

    connection = await aio_pika.connect(RABBIT_URL)
    try:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=prefetch)
        queue = await channel.declare_queue(name, passive=True)
        seen = 0
        start = cpu = 0.0
        batch: list[aio_pika.abc.AbstractIncomingMessage] = []
        async with queue.iterator() as messages_in:
            async for message in messages_in:
                if not start:
                    start, cpu = time.perf_counter(), time.process_time()
                batch.append(message)
                seen += 1
                if len(batch) >= batch_size or seen == messages:
                    COUNTER.handle({"Records": [m.body for m in batch]}, None)
                    await batch[-1].ack(multiple=True)
                    batch.clear()
                if seen == messages:
                    break
        return messages / (time.perf_counter() - start), messages / (time.process_time() - cpu)
    finally:
        await connection.close()


async def rabbit_router(name: str, messages: int, batch_size: int) -> Rate:
    from bench.support import running_router

    text = f"""
functions:
  count:
    invoker: python
    handler: bench_brokers_handler:handle
mappings:
  - name: bench
    function: count
    batch_size: {batch_size}
    source:
      type: rabbitmq
      url: {RABBIT_URL}
      queues: [{name}]
"""
    COUNTER.reset()
    async with running_router(text) as router:
        (running,) = router.running.values()
        source = running.pipeline.source
        await COUNTER.wait_for(1, 120)
        start, cpu = time.perf_counter(), time.process_time()
        await COUNTER.wait_for(messages, 600)
        # Until every message is acknowledged (polled: the source has no event for it).
        while source._outstanding or running.pipeline.held:  # type: ignore[attr-defined]  # noqa: ASYNC110
            await asyncio.sleep(0.001)
        wall, used = time.perf_counter() - start, time.process_time() - cpu
    return messages / wall, messages / used


@broker("rabbitmq")
async def bench_rabbitmq(options: Options) -> list[Round]:
    """RabbitMQ on 127.0.0.1:5672 (guest/guest): one queue per run, deleted after. The
    router's mapping has the defaults (unordered, batching window 0.5 s as Lambda's) and
    ``--batch-size``; the bare loop acks every ``--batch-size`` messages with one
    ``multiple`` ack, with the router's default prefetch (four batches)."""
    rounds: list[Round] = []
    prefetch = max(4 * options.batch_size, 100)
    for _ in range(options.rounds):
        names = [await rabbit_queue(options.messages) for _ in range(2)]
        try:
            bare = await rabbit_bare(names[0], options.messages, options.batch_size, prefetch)
            routed = await rabbit_router(names[1], options.messages, options.batch_size)
        finally:
            for name in names:
                await rabbit_delete(name)
        rounds.append(Round(bare=bare, router=routed))
    return rounds


# --- NATS JetStream -------------------------------------------------------------------------


def _rate(count: int, wall0: float, cpu0: float) -> Rate:
    wall = time.perf_counter() - wall0
    cpu = time.process_time() - cpu0
    return count / wall, count / max(cpu, 1e-9)


async def _until(check: Callable[[], Coroutine[Any, Any, bool]], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise SystemExit("timed out waiting for the messages to be acknowledged")
        await asyncio.sleep(0.02)


NATS_URL = os.environ.get("BENCH_NATS_URL", "nats://127.0.0.1:4222")


async def _nats_fill(js: Any, stream: str, n: int) -> None:
    await js.add_stream(name=stream, subjects=[f"{stream}.>"])
    payload = b'{"order": 1, "state": "PAID", "padding": "' + b"x" * 64 + b'"}'
    for start in range(0, n, 1000):
        await asyncio.gather(
            *(js.publish(f"{stream}.orders", payload) for _ in range(min(1000, n - start)))
        )


async def _nats_bare(js: Any, stream: str, n: int, batch: int) -> Rate:
    from nats.errors import TimeoutError as NatsTimeout

    wall0, cpu0 = time.perf_counter(), time.process_time()
    sub = await js.pull_subscribe(f"{stream}.>", "bare", stream=stream)
    got = 0
    while got < n:
        try:
            messages = await sub.fetch(batch, timeout=1)
        except NatsTimeout:
            continue
        for msg in messages:
            await msg.ack()
        got += len(messages)
    return _rate(n, wall0, cpu0)


async def _nats_router(js: Any, stream: str, n: int, batch: int) -> Rate:
    from bench.support import running_router

    yaml_text = f"""
functions:
  count: {{invoker: python, handler: bench_brokers_handler:handle}}
mappings:
  - name: bench
    function: count
    batch_size: {batch}
    starting_position: TRIM_HORIZON
    source: {{type: nats, servers: ["{NATS_URL}"], stream: {stream}, subjects: ["{stream}.>"]}}
"""

    async def acked() -> bool:
        info = await js.consumer_info(stream, "bench")
        return bool(info.num_pending == 0 and info.num_ack_pending == 0)

    COUNTER.reset()
    wall0, cpu0 = time.perf_counter(), time.process_time()
    async with running_router(yaml_text):
        await COUNTER.wait_for(n, timeout=600)
        await _until(acked, timeout=60)
        rate = _rate(n, wall0, cpu0)
    return rate


@broker("nats")
async def bench_nats(options: Options) -> list[Round]:
    """Bare: a pull subscription fetching ``batch_size`` messages and acking each. Router: a
    ``nats`` mapping on its own copy of the messages."""
    import nats

    nc = await nats.connect(NATS_URL)
    js = nc.jetstream()
    rounds: list[Round] = []
    try:
        for _ in range(options.rounds):
            made = [f"BENCH_{uuid.uuid4().hex[:8]}" for _ in range(2)]
            try:
                for name in made:
                    await _nats_fill(js, name, options.messages)
                bare = await _nats_bare(js, made[0], options.messages, options.batch_size)
                routed = await _nats_router(js, made[1], options.messages, options.batch_size)
                rounds.append(Round(bare=bare, router=routed))
            finally:
                for name in made:
                    with contextlib.suppress(Exception):
                        await js.delete_stream(name)
    finally:
        await nc.close()
    return rounds


# --- Redis Streams --------------------------------------------------------------------------

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")


async def _redis_fill(client: Any, stream: str, n: int) -> None:
    payload = b'{"order": 1, "state": "PAID", "padding": "' + b"x" * 64 + b'"}'
    for start in range(0, n, 1000):
        async with client.pipeline(transaction=False) as pipe:
            for _ in range(min(1000, n - start)):
                pipe.xadd(stream, {"data": payload})
            await pipe.execute()


async def _redis_bare(client: Any, stream: str, n: int, batch: int) -> Rate:
    wall0, cpu0 = time.perf_counter(), time.process_time()
    await client.xgroup_create(stream, "bare", id="0")
    got = 0
    while got < n:
        answer = await client.xreadgroup("bare", "c", {stream: ">"}, count=batch, block=1000)
        if not answer:
            continue
        entries = answer[0][1]
        await client.xack(stream, "bare", *[entry_id for entry_id, _ in entries])
        got += len(entries)
    return _rate(n, wall0, cpu0)


async def _redis_router(client: Any, stream: str, n: int, batch: int) -> Rate:
    from bench.support import running_router

    yaml_text = f"""
functions:
  count: {{invoker: python, handler: bench_brokers_handler:handle}}
mappings:
  - name: bench
    function: count
    batch_size: {batch}
    starting_position: TRIM_HORIZON
    source: {{type: redis, url: "{REDIS_URL}", streams: [{stream}], group: bench}}
"""

    async def acked() -> bool:
        pending: Any = await client.xpending(stream, "bench")
        return int(pending["pending"]) == 0

    COUNTER.reset()
    wall0, cpu0 = time.perf_counter(), time.process_time()
    async with running_router(yaml_text):
        await COUNTER.wait_for(n, timeout=600)
        await _until(acked, timeout=60)
        rate = _rate(n, wall0, cpu0)
    return rate


@broker("redis")
async def bench_redis(options: Options) -> list[Round]:
    """Bare: XREADGROUP of ``batch_size`` entries, then one XACK of them. Router: a ``redis``
    mapping on its own copy of the entries."""
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(REDIS_URL)
    rounds: list[Round] = []
    try:
        for _ in range(options.rounds):
            made = [f"bench-{uuid.uuid4().hex[:8]}" for _ in range(2)]
            try:
                for name in made:
                    await _redis_fill(client, name, options.messages)
                bare = await _redis_bare(client, made[0], options.messages, options.batch_size)
                routed = await _redis_router(client, made[1], options.messages, options.batch_size)
                rounds.append(Round(bare=bare, router=routed))
            finally:
                await client.delete(*made)
    finally:
        await client.aclose()
    return rounds


def report(name: str, rounds: list[Round]) -> None:
    for i, r in enumerate(rounds, 1):
        print(
            f"{name} round {i}: bare {r.bare[0]:,.0f}/s ({r.bare[1]:,.0f}/cpu-s), "
            f"router {r.router[0]:,.0f}/s ({r.router[1]:,.0f}/cpu-s), "
            f"ratio {r.router[0] / r.bare[0]:.2f} wall, {r.router[1] / r.bare[1]:.2f} cpu"
        )
    wall = statistics.median(r.router[0] / r.bare[0] for r in rounds)
    cpu = statistics.median(r.router[1] / r.bare[1] for r in rounds)
    verdict = "meets" if wall >= 0.5 else "below"
    print(f"{name}: median router/bare {wall:.2f} wall, {cpu:.2f} cpu ({verdict} the 0.5 target)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--broker", required=True, help=f"one of {sorted(BROKERS)} or all")
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=100)
    args = parser.parse_args()
    names = sorted(BROKERS) if args.broker == "all" else [args.broker]
    unknown = [n for n in names if n not in BROKERS]
    if unknown or not names:
        have = sorted(BROKERS)
        parser.error(f"--broker: no benchmark for {unknown or 'any broker'} (have {have})")
    options = Options(messages=args.messages, rounds=args.rounds, batch_size=args.batch_size)
    install_handler_module()
    for name in names:
        report(name, asyncio.run(BROKERS[name](options)))


if __name__ == "__main__":
    main()
