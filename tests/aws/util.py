"""Helpers for the AWS connector tests: a context for sources, an in-memory store with the
checkpoint and lease calls the sources use, and a way to run a source for a block."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping
from typing import Any, cast

from router.abc import Sink, Source, SourceContext, Store
from router.models import MappingConfig, PluginSettings, SourceSpec


class MemoryStore:
    """The part of the Store contract the AWS sources call, kept in memory."""

    url = "memory://"

    def __init__(self) -> None:
        self.checkpoints: dict[str, dict[str, str]] = {}
        self.leases: dict[str, tuple[str, float]] = {}

    async def get_checkpoints(self, mapping_uuid: str) -> dict[str, str]:
        return dict(self.checkpoints.get(mapping_uuid, {}))

    async def put_checkpoints(self, mapping_uuid: str, values: Mapping[str, str]) -> None:
        self.checkpoints.setdefault(mapping_uuid, {}).update(values)

    async def delete_checkpoints(self, mapping_uuid: str, keys: Collection[str]) -> None:
        stored = self.checkpoints.get(mapping_uuid, {})
        for key in keys:
            stored.pop(key, None)

    async def acquire_lease(self, key: str, owner: str, ttl: float) -> bool:
        now = time.monotonic()
        holder = self.leases.get(key)
        if holder is not None and holder[0] != owner and holder[1] > now:
            return False
        self.leases[key] = (owner, now + ttl)
        return True

    async def release_lease(self, key: str, owner: str) -> None:
        if self.leases.get(key, ("", 0.0))[0] == owner:
            del self.leases[key]


def context(
    source_type: str,
    settings: PluginSettings,
    store: Any = None,
    *,
    uuid: str = "0d9b5a1e-4b7e-4c43-9d5f-6f1f0c1a2b3c",
    replica_id: str = "replica-1",
) -> SourceContext:
    mapping = MappingConfig(
        name="test-mapping",
        function="fn",
        source=SourceSpec(type=source_type, settings=settings),
        uuid=uuid,
    )
    # MemoryStore has only the calls the sources make: enough for these tests.
    store = cast("Store", store if store is not None else MemoryStore())
    return SourceContext(mapping=mapping, store=store, replica_id=replica_id)


@contextlib.asynccontextmanager
async def running(source: Source, sink: Sink) -> AsyncIterator[asyncio.Task[None]]:
    """Run ``source`` into ``sink`` for the block; cancel and close it afterwards. An error
    that ended ``run`` is raised when the block exits."""
    task = asyncio.create_task(source.run(sink))
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await source.aclose()


async def eventually(
    check: Callable[[], Awaitable[bool]], timeout: float = 20.0, interval: float = 0.1
) -> None:
    """Poll ``check`` until it is true, failing after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


async def queue_counts(sqs: Any, url: str) -> tuple[int, int]:
    """(visible, in flight) messages of a queue."""
    attrs = (
        await sqs.get_queue_attributes(
            QueueUrl=url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )
    )["Attributes"]
    return (
        int(attrs["ApproximateNumberOfMessages"]),
        int(attrs["ApproximateNumberOfMessagesNotVisible"]),
    )


async def make_queue(sqs: Any, name: str, *, visibility: int = 30, fifo: bool = False) -> str:
    attributes = {"VisibilityTimeout": str(visibility)}
    if fifo:
        name += ".fifo"
        attributes["FifoQueue"] = "true"
        attributes["ContentBasedDeduplication"] = "true"
    return str((await sqs.create_queue(QueueName=name, Attributes=attributes))["QueueUrl"])
