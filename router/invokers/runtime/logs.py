"""A managed environment's output in the router's log, and Lambda's platform lines.

Every line a runtime writes (stdout and stderr) is logged at INFO on this module's logger as
``<function> <request id>: <line>`` (``<function>: <line>`` outside an invocation), so the
function's log reads as its CloudWatch stream would, interleaved with the router's. Around
each invocation the lines Lambda writes::

    START RequestId: <id> Version: $LATEST
    END RequestId: <id>
    REPORT RequestId: <id>	Duration: 1.52 ms	Billed Duration: 2 ms	Memory Size: 128 MB
        Max Memory Used: 41 MB	Init Duration: 212.09 ms

(the REPORT line is one line, its fields separated by tabs).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable

logger = logging.getLogger(__name__)

LINE_LIMIT = 256 * 1024
"""Longest line logged as one entry (Lambda cuts log events at 256 KB)."""


def start_line(request_id: str) -> str:
    return f"START RequestId: {request_id} Version: $LATEST"


def end_line(request_id: str) -> str:
    return f"END RequestId: {request_id}"


def report_line(
    request_id: str,
    *,
    duration_ms: float,
    memory_size: int,
    max_memory_mb: int,
    init_duration_ms: float | None = None,
    status: str = "",
    error_type: str = "",
) -> str:
    """Lambda's REPORT line; ``status`` (``timeout``, ``error``) only when the invocation did
    not end with the runtime's answer."""
    parts = [
        f"REPORT RequestId: {request_id}",
        f"Duration: {duration_ms:.2f} ms",
        f"Billed Duration: {max(1, math.ceil(duration_ms))} ms",
        f"Memory Size: {memory_size} MB",
        f"Max Memory Used: {max_memory_mb} MB",
    ]
    if init_duration_ms is not None:
        parts.append(f"Init Duration: {init_duration_ms:.2f} ms")
    if status:
        parts.append(f"Status: {status}")
    if error_type:
        parts.append(f"Error Type: {error_type}")
    return "\t".join(parts)


def init_report_line(duration_ms: float, status: str = "", error_type: str = "") -> str:
    """``INIT_REPORT``: written for an init that failed or timed out, and for provisioned
    environments (whose init duration no REPORT line carries)."""
    parts = [f"INIT_REPORT Init Duration: {duration_ms:.2f} ms", "Phase: init"]
    if status:
        parts.append(f"Status: {status}")
    if error_type:
        parts.append(f"Error Type: {error_type}")
    return "\t".join(parts)


def platform(function: str, line: str) -> None:
    logger.info("%s: %s", function, line)


async def pump(reader: asyncio.StreamReader, label: Callable[[], str]) -> None:
    """Log what the runtime writes, line by line, until end of file. ``label()`` gives the
    prefix at the moment a line is read (the function and its current request id)."""
    while True:
        try:
            chunk = await reader.readuntil(b"\n")
        except asyncio.IncompleteReadError as e:  # end of file
            if e.partial:
                _log(label(), e.partial)
            return
        except asyncio.LimitOverrunError as e:
            chunk = await reader.readexactly(min(e.consumed, LINE_LIMIT) or 1)
        _log(label(), chunk)


def _log(prefix: str, chunk: bytes) -> None:
    # awslambdaric ends the lines of a multi-line error with "\r" to keep them one event.
    text = chunk.decode("utf-8", errors="replace").rstrip("\r\n").replace("\r", "\n")
    logger.info("%s: %s", prefix, text)
