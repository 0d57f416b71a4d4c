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
import os
import time
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)

LINE_LIMIT = 256 * 1024
"""Longest line logged as one entry (Lambda cuts log events at 256 KB)."""

RECORD_MARK = "\x1f"
"""Starts a line that is a log record of a worker process (:mod:`router.invokers.worker`):
``<mark><level number><mark><logger><mark><message>``. It is logged at its own level, as
``<function> <request id>: <logger>: <message>``."""


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
    """Log a platform line (START, END, REPORT, ...) of ``function`` at INFO."""
    if not logger.isEnabledFor(logging.INFO):
        return
    if logging.getLogRecordFactory() is not logging.LogRecord:
        # Someone decorates records (trace ids...): let the factory build this one too.
        logger.info("%s: %s", function, line)
        return
    logger.handle(_record(f"{function}: {line}"))


_TEMPLATE: dict[str, Any] = {}


def _record(message: str) -> logging.LogRecord:
    """An INFO record of this module's logger, as ``logger.info(message)`` would make it.

    A few platform lines are written per invocation; a record copied from a template skips
    what ``LogRecord.__init__`` works out again for every line (the source file's name and
    module, the thread and process, which the router's formats never show)."""
    if not _TEMPLATE:
        _TEMPLATE.update(logger.makeRecord(logger.name, logging.INFO, "", 0, "", (), None).__dict__)
    record = logging.LogRecord.__new__(logging.LogRecord)
    fields = record.__dict__
    fields.update(_TEMPLATE)
    created = time.time()
    fields["msg"] = message
    fields["args"] = None
    fields["created"] = created
    fields["msecs"] = int((created - int(created)) * 1000) + 0.0
    fields["relativeCreated"] = (created - _START) * 1000
    return record


_START: float = logging._startTime  # type: ignore[attr-defined]


class Output:
    """Reads what a runtime writes (stdout and stderr share one pipe) and logs it line by
    line, prefixed by ``label()`` at the moment the line is read.

    :meth:`drain` reads whatever the pipe holds right now: the environment calls it when an
    invocation ends, so that the lines written before the answer are logged (and attributed)
    before that invocation's END line.
    """

    def __init__(self, fd: int, label: Callable[[], str]) -> None:
        self._fd: int | None = fd
        self._label = label
        self._partial = bytearray()
        self.closed = asyncio.Event()
        os.set_blocking(fd, False)
        asyncio.get_running_loop().add_reader(fd, self.drain)

    def drain(self) -> None:
        while self._fd is not None:
            try:
                data = os.read(self._fd, 65536)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:  # every writer has exited
                self.close()
                return
            self._lines(data)

    def _lines(self, data: bytes) -> None:
        partial = self._partial
        partial += data
        start = 0
        while True:
            end = partial.find(b"\n", start)
            if end < 0:
                break
            _log(self._label(), partial[start:end])
            start = end + 1
        del partial[:start]
        while len(partial) > LINE_LIMIT:
            _log(self._label(), partial[:LINE_LIMIT])
            del partial[:LINE_LIMIT]

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        asyncio.get_running_loop().remove_reader(fd)
        os.close(fd)
        if self._partial:
            _log(self._label(), self._partial)
            self._partial.clear()
        self.closed.set()


def _log(prefix: str, chunk: bytes | bytearray) -> None:
    # awslambdaric ends the lines of a multi-line error with "\r" to keep them one event.
    text = chunk.decode("utf-8", errors="replace").rstrip("\r\n").replace("\r", "\n")
    if text.startswith(RECORD_MARK):
        parts = text.split(RECORD_MARK, 3)
        if len(parts) == 4 and parts[1].isdigit():
            logger.log(int(parts[1]), "%s: %s: %s", prefix, parts[2], parts[3])
            return
    logger.info("%s: %s", prefix, text)
