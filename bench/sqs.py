"""SQS source throughput: the router's pipeline vs a bare aioboto3 receive-and-delete loop.

Run by hand: ``python bench/sqs.py [--endpoint URL] [--messages 5000] [--depth 250]``.
Without ``--endpoint`` a moto server is started on a free port. In one run, against the same
emulator, each side gets its own standard queue and consumes N small JSON messages, sent in
rounds of ``depth`` messages (moto's ReceiveMessage costs time in proportion to the queue's
depth, so one deep queue would measure moto rather than the consumers):

* ``bare``: ``receivers`` loops of ReceiveMessage (10 per call, long polling) followed by
  DeleteMessageBatch of what was received;
* ``router``: an ``sqs`` mapping (batch size 10, no batching window, the same number of
  receivers) delivering to an in-process python handler that only counts messages.

Consumers run throughout; each round is timed from the start of its sends until all its
messages are deleted (for the router: the handler has seen them and the queue reports
nothing visible or in flight). Start-up is not counted.
Target: router >= 0.9 x bare messages per second.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
import types
import uuid
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
        self.seen: set[str] = set()

    async def handle(self, event: dict[str, Any], context: object) -> None:
        self.seen.update(r["messageId"] for r in event["Records"])


COUNTER = Counter()


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    port = free_port()
    with server([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], port):
        yield f"http://127.0.0.1:{port}"


async def fill(sqs: Any, url: str, first: int, count: int) -> None:
    semaphore = asyncio.Semaphore(8)

    async def send(start: int) -> None:
        entries = [
            {"Id": str(i), "MessageBody": orjson.dumps({"id": i, "kind": "order"}).decode()}
            for i in range(start, min(start + 10, first + count))
        ]
        async with semaphore:
            await sqs.send_message_batch(QueueUrl=url, Entries=entries)

    await asyncio.gather(*(send(s) for s in range(first, first + count, 10)))


async def queue_empty(sqs: Any, url: str) -> bool:
    attrs = (
        await sqs.get_queue_attributes(
            QueueUrl=url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )
    )["Attributes"]
    return bool(
        attrs["ApproximateNumberOfMessages"] == "0"
        and attrs["ApproximateNumberOfMessagesNotVisible"] == "0"
    )


def rounds(messages: int, depth: int) -> list[tuple[int, int]]:
    return [(first, min(depth, messages - first)) for first in range(0, messages, depth)]


async def bare(sqs: Any, url: str, messages: int, depth: int, receivers: int) -> float:
    deleted: set[str] = set()
    progress = asyncio.Event()

    async def loop() -> None:
        while True:
            response = await sqs.receive_message(
                QueueUrl=url,
                MaxNumberOfMessages=10,
                WaitTimeSeconds=1,
                MessageSystemAttributeNames=["All"],
                MessageAttributeNames=["All"],
            )
            batch = response.get("Messages") or []
            if not batch:
                continue
            entries = [
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(batch)
            ]
            await sqs.delete_message_batch(QueueUrl=url, Entries=entries)
            deleted.update(m["MessageId"] for m in batch)
            progress.set()

    tasks = [asyncio.create_task(loop()) for _ in range(receivers)]
    elapsed = 0.0
    try:
        for first, count in rounds(messages, depth):
            start = time.perf_counter()
            await fill(sqs, url, first, count)
            while len(deleted) < first + count:
                progress.clear()
                await progress.wait()
            elapsed += time.perf_counter() - start
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return messages / elapsed


async def through_router(
    endpoint: str, sqs: Any, url: str, messages: int, depth: int, receivers: int
) -> float:
    text = f"""
functions:
  count:
    invoker: python
    handler: sqs_bench_handler:handle
mappings:
  - name: bench
    function: count
    batch_size: 10
    source:
      type: sqs
      queue_url: {url}
      endpoint_url: {endpoint}
      region: {REGION}
      wait_time_seconds: 1
      receivers: {receivers}
"""
    COUNTER.seen.clear()
    elapsed = 0.0
    async with running_router(text):
        for first, count in rounds(messages, depth):
            start = time.perf_counter()
            await fill(sqs, url, first, count)
            while len(COUNTER.seen) < first + count:  # noqa: ASYNC110 - no event for it
                await asyncio.sleep(0.005)
            while not await queue_empty(sqs, url):  # noqa: ASYNC110 - no event for it
                await asyncio.sleep(0.02)
            elapsed += time.perf_counter() - start
    return messages / elapsed


async def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--endpoint", help="URL of an SQS endpoint (default: start moto)")
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--receivers", type=int, default=4)
    parser.add_argument(
        "--depth", type=int, default=250, help="messages sent per round (the queue's depth)"
    )
    args = parser.parse_args()
    fake_aws_credentials(REGION)
    module = types.ModuleType("sqs_bench_handler")
    module.handle = COUNTER.handle  # type: ignore[attr-defined]
    sys.modules["sqs_bench_handler"] = module
    with contextlib.ExitStack() as stack:
        endpoint = args.endpoint or stack.enter_context(moto_server())
        session = aioboto3.Session(region_name=REGION)
        async with session.client("sqs", endpoint_url=endpoint) as sqs:
            suffix = uuid.uuid4().hex[:8]
            bare_url = (await sqs.create_queue(QueueName=f"bench-bare-{suffix}"))["QueueUrl"]
            router_url = (await sqs.create_queue(QueueName=f"bench-router-{suffix}"))["QueueUrl"]
            print(f"{args.messages:,} messages each, in rounds of {args.depth}, on {endpoint} ...")
            bare_rate = await bare(sqs, bare_url, args.messages, args.depth, args.receivers)
            print(f"bare    {bare_rate:10,.0f} messages/s")
            router_rate = await through_router(
                endpoint, sqs, router_url, args.messages, args.depth, args.receivers
            )
            print(f"router  {router_rate:10,.0f} messages/s")
            ratio = router_rate / bare_rate
            verdict = "meets" if ratio >= 0.9 else "below"
            print(f"ratio   {ratio:10.2f}  ({verdict} the 0.9 target)")


if __name__ == "__main__":
    asyncio.run(main())
