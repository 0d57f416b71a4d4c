"""Handlers for the Kinesis / DynamoDB Streams tests, run in-process by the python invoker.
Each test resets ``EVENTS`` (and ``FAILED_ONCE``) and reads what the handlers saw."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

EVENTS: list[dict[str, Any]] = []
FAILED_ONCE: set[str] = set()
GATE: asyncio.Event | None = None
"""``gated`` waits until this event is set (when there is one) before it records a batch."""
ARRIVED: list[dict[str, Any]] = []
"""Batches ``gated`` was called with, recorded in ``EVENTS`` or still at the gate."""


def data_of(record: dict[str, Any]) -> str:
    return base64.b64decode(record["kinesis"]["data"]).decode()


async def record(event: dict[str, Any], context: Any) -> None:
    EVENTS.append(event)


async def gated(event: dict[str, Any], context: Any) -> None:
    """Records the batch once ``GATE`` opens: holds the router's deliveries back while a test
    changes the stream."""
    ARRIVED.append(event)
    if GATE is not None:
        await GATE.wait()
    EVENTS.append(event)


async def poison(event: dict[str, Any], context: Any) -> None:
    """Fails every batch holding a record whose data contains ``poison``."""
    EVENTS.append(event)
    if any("poison" in data_of(r) for r in event["Records"]):
        raise ValueError("poison in batch")


async def partial(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Reports records whose data starts with ``bad`` as failed, the first time only."""
    EVENTS.append(event)
    failures = []
    for r in event["Records"]:
        sequence = r["kinesis"]["sequenceNumber"]
        if data_of(r).startswith("bad") and sequence not in FAILED_ONCE:
            FAILED_ONCE.add(sequence)
            failures.append({"itemIdentifier": sequence})
    return {"batchItemFailures": failures}


async def item_poison(event: dict[str, Any], context: Any) -> None:
    """Fails every batch holding an item whose ``v`` attribute is ``poison``."""
    EVENTS.append(event)
    for r in event["Records"]:
        image = r["dynamodb"].get("NewImage") or {}
        if image.get("v", {}).get("S") == "poison":
            raise ValueError("poison in batch")


async def window_sum(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """A tumbling window's sum of the records' integers, carried in ``state``."""
    EVENTS.append(event)
    if event["isFinalInvokeForWindow"]:
        return {}
    state = dict(event["state"])
    state["sum"] = state.get("sum", 0) + sum(int(data_of(r)) for r in event["Records"])
    return {"state": state}


async def window_stateless(event: dict[str, Any], context: Any) -> None:
    """Answers nothing: with a tumbling window every invocation of it fails."""
    EVENTS.append(event)
