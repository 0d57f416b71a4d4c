"""Handlers with module-level state, run by two functions at once: what one function does to
its module must not show in the other's when each runs in worker processes of its own."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from aws_lambda_powertools import Logger

SEEN: list[str] = []
"""Every function that called ``remember`` in this interpreter."""

powertools = Logger(service="orders")
plain = logging.getLogger("isolation_handlers")


def remember(event: Any, context: Any) -> dict[str, Any]:
    SEEN.append(context.function_name)
    return {"pid": os.getpid(), "seen": list(SEEN)}


@powertools.inject_lambda_context
def tagged(event: dict[str, Any], context: Any) -> dict[str, Any]:
    if "tenant" in event:
        powertools.append_keys(tenant=event["tenant"])
    powertools.info("handled")
    return {"pid": os.getpid()}


def pid(event: Any, context: Any) -> int:
    return os.getpid()


def sleep(event: dict[str, Any], context: Any) -> int:
    time.sleep(float(event["seconds"]))
    return os.getpid()


async def async_sleep(event: dict[str, Any], context: Any) -> int:
    await asyncio.sleep(float(event["seconds"]))
    return os.getpid()


def crash(event: dict[str, Any], context: Any) -> int:
    """Killed by a signal (``{"kill": true}``), exits (``{"exit": 3}``), or answers its pid."""
    if event.get("kill"):
        os.kill(os.getpid(), signal.SIGKILL)
    if "exit" in event:
        sys.exit(event["exit"])
    return os.getpid()


def logs(event: Any, context: Any) -> str:
    print(f"printed by {context.aws_request_id}")
    plain.warning("careful:\nsecond line")
    plain.debug("not shown at INFO")
    context.log("through context.log")
    return "logged"


async def async_context(event: Any, context: Any) -> dict[str, Any]:
    await asyncio.sleep(0)
    return {
        "request_id": context.aws_request_id,
        "function_name": context.function_name,
        "remaining_ms": context.get_remaining_time_in_millis(),
        "trace": os.environ.get("_X_AMZN_TRACE_ID"),
        "loop": id(asyncio.get_running_loop()),
    }


def hold(event: dict[str, Any], context: Any) -> int:
    """Marks its start, then waits (bounded) until the test releases it."""
    folder = Path(event["dir"])
    (folder / f"{context.aws_request_id}.start").write_text(str(os.getpid()))
    give_up = time.monotonic() + 20
    while not (folder / "release").exists() and time.monotonic() < give_up:
        time.sleep(0.01)
    return os.getpid()
