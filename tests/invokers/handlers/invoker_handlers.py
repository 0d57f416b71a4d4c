"""Handlers used by the invoker tests, in-process and under awslambdaric."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

RELEASE = threading.Event()
"""Set by a test to let ``block`` return (its invocation has already timed out)."""


def context_info(event: Any, context: Any) -> dict[str, Any]:
    return {
        "event": event,
        "aws_request_id": context.aws_request_id,
        "function_name": context.function_name,
        "function_version": context.function_version,
        "invoked_function_arn": context.invoked_function_arn,
        "memory_limit_in_mb": context.memory_limit_in_mb,
        "log_group_name": context.log_group_name,
        "log_stream_name": context.log_stream_name,
        "remaining_ms": context.get_remaining_time_in_millis(),
        "has_identity": hasattr(context, "identity"),
        "client_context": context.client_context,
        "env_function_name": os.environ.get("AWS_LAMBDA_FUNCTION_NAME"),
    }


def _inner(message: str) -> None:
    raise ValueError(message)


def fail(event: Any, context: Any) -> None:
    _inner(event.get("message", "boom") if isinstance(event, dict) else "boom")


async def async_echo(event: Any, context: Any) -> dict[str, Any]:
    await asyncio.sleep(0)
    return {"async": True, "event": event, "request_id": context.aws_request_id}


async def async_fail(event: Any, context: Any) -> None:
    await asyncio.sleep(0)
    raise KeyError("missing")


def block(event: Any, context: Any) -> str:
    RELEASE.wait(30)
    return "late"


async def async_block(event: Any, context: Any) -> str:
    await asyncio.sleep(30)
    return "late"


def sleep(event: Any, context: Any) -> dict[str, Any]:
    time.sleep(float(event["seconds"]))
    return {"slept": event["seconds"]}


def mark_and_sleep(event: Any, context: Any) -> str:
    Path(event["marker"]).write_text(context.aws_request_id)
    time.sleep(float(event["seconds"]))
    return "woke up"


def mutate(event: dict[str, Any], context: Any) -> dict[str, Any]:
    event["mutated"] = True
    return event


def not_serialisable(event: Any, context: Any) -> dict[str, Any]:
    return {"when": datetime.now(UTC)}


def decimals(event: Any, context: Any) -> dict[Any, Any]:
    return {"price": Decimal("1.5"), "count": Decimal("2"), "pair": (1, 2), 3: "int key"}


def returns_none(event: Any, context: Any) -> None:
    return None


def returns_string(event: Any, context: Any) -> str:
    return "plain"


def returns_bytes(event: Any, context: Any) -> bytes:
    return b"not json"


def raises_timeout(event: Any, context: Any) -> None:
    raise TimeoutError("my own timeout")


def exits(event: Any, context: Any) -> None:
    sys.exit(3)


def big_response(event: Any, context: Any) -> str:
    return "x" * int(event["size"])


def overlap(event: Any, context: Any) -> dict[str, Any]:
    """Proves concurrency: marks its start, then waits (bounded) for the other invocation's
    start marker. ``saw_other`` is true only if both ran at the same time."""
    folder = Path(event["dir"])
    (folder / f"{event['me']}.start").write_text(context.aws_request_id)
    other = folder / f"{event['other']}.start"
    give_up = time.monotonic() + float(event.get("wait", 20))
    while not other.exists() and time.monotonic() < give_up:
        time.sleep(0.01)
    return {"me": event["me"], "saw_other": other.exists()}


class CallableObject:
    async def __call__(self, event: Any, context: Any) -> str:
        return "object"


callable_object = CallableObject()
