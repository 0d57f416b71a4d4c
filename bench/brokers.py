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
import statistics
import sys
import threading
import time
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


# --- Redis Streams --------------------------------------------------------------------------


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
