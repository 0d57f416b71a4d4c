"""Handlers for the AWS end-to-end tests, run in-process by the python invoker. Each test
resets ``EVENTS`` and reads what the handlers saw."""

from __future__ import annotations

import asyncio
from typing import Any

EVENTS: list[dict[str, Any]] = []


def _first_receive(record: dict[str, Any]) -> bool:
    return bool(record["attributes"]["ApproximateReceiveCount"] == "1")


async def record(event: dict[str, Any], context: Any) -> None:
    EVENTS.append(event)


async def partial(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Reports messages whose body starts with ``bad`` as failed on their first delivery."""
    EVENTS.append(event)
    failures = [
        {"itemIdentifier": r["messageId"]}
        for r in event["Records"]
        if r["body"].startswith("bad") and _first_receive(r)
    ]
    return {"batchItemFailures": failures}


async def fail_on_a2(event: dict[str, Any], context: Any) -> None:
    """Fails a batch holding ``a2`` on its first delivery."""
    EVENTS.append(event)
    if any(r["body"] == "a2" and _first_receive(r) for r in event["Records"]):
        raise ValueError("a2 fails once")


async def slow(event: dict[str, Any], context: Any) -> None:
    EVENTS.append(event)
    await asyncio.sleep(5)


async def fail(event: dict[str, Any], context: Any) -> None:
    EVENTS.append(event)
    raise ValueError("always fails")


class _Concurrency:
    now = 0
    peak = 0


CONCURRENCY = _Concurrency()


async def busy(event: dict[str, Any], context: Any) -> None:
    """Takes a while, counting how many invocations run at once."""
    CONCURRENCY.now += 1
    CONCURRENCY.peak = max(CONCURRENCY.peak, CONCURRENCY.now)
    try:
        EVENTS.append(event)
        await asyncio.sleep(0.2)
    finally:
        CONCURRENCY.now -= 1
