"""Logging setup: console or JSON lines, with secrets redacted from every message, and rate
limits that keep an outage from flooding the log.

Two kinds of limits, both built on :class:`RateLimiter` (at most ``lines`` lines per key in
each ``interval``; what goes over is counted, and one summary line says how many were left
out):

- :class:`LimitedLogger`: the router's own warnings, keyed by what they are about (a
  mapping and a cause), so that one failing mapping cannot hide another's lines.
- :class:`LibraryFilter`: lines of the client libraries (aiokafka, botocore, aiohttp...)
  keyed by logger and message template: a broker that is down makes a client log the same
  few lines many times a second. Lines of functions (their own loggers) are never limited.

Summaries are written when a key's window ends (checked on every line and every second by
:func:`flush_suppressed`, which the running router calls).
"""

from __future__ import annotations

import logging
import sys
import threading
import time
import weakref
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson

from router.secrets import redact

LINES = 5
"""Lines per key (a mapping and a cause; a library logger and message) in each interval."""
INTERVAL = 60.0
"""Seconds of a rate-limit window."""
CLIENT_LOGGERS = frozenset(
    {
        "aiokafka",
        "aiobotocore",
        "aioboto3",
        "boto3",
        "botocore",
        "urllib3",
        "aiohttp",
        "asyncpg",
        "aiosqlite",
        "sqlalchemy",
        "watchfiles",
        "asyncio",
    }
)
"""Top-level loggers of the client libraries the router uses, rate-limited by
:class:`LibraryFilter`. The router's own lines are limited where they are written (by
:class:`LimitedLogger`); the lines of functions (handlers' own loggers) are never limited."""
FIELDS = ("mapping", "function", "cause", "errorType", "errorMessage", "suppressed")
"""Structured fields a line may carry (``extra=``); JSON lines include them as keys."""


@dataclass(slots=True)
class _Window:
    start: float
    admitted: int = 0
    suppressed: int = 0
    last: Any = None
    """What the last suppressed line was about, for the summary."""


Owed = tuple[int, Any]
"""A summary still to be written: how many lines were suppressed, and the last of them."""


class RateLimiter:
    """At most ``lines`` events per key in each ``interval`` seconds.

    A key's window opens with its first event; events past ``lines`` in the window are
    suppressed and counted. The count of a window that ended is handed back once: by the
    :meth:`admit` that opens the key's next window, or by :meth:`ended`. Thread-safe:
    library loggers may be called from worker threads.
    """

    def __init__(
        self,
        lines: int = LINES,
        interval: float = INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.lines = lines
        self.interval = interval
        self._clock = clock
        self._windows: dict[Hashable, _Window] = {}
        self._lock = threading.Lock()
        self._next_sweep = 0.0

    def admit(self, key: Hashable, sample: Any = None) -> tuple[bool, Owed | None]:
        """Whether this event may be written, and the summary of the key's previous window
        to write before it (if that window ended with suppressed events). A suppressed
        event is counted, ``sample`` being the latest one."""
        now = self._clock()
        owed: Owed | None = None
        with self._lock:
            window = self._windows.get(key)
            if window is None or now - window.start >= self.interval:
                if window is not None and window.suppressed:
                    owed = (window.suppressed, window.last)
                window = self._windows[key] = _Window(start=now)
            if window.admitted < self.lines:
                window.admitted += 1
                return True, owed
            window.suppressed += 1
            window.last = sample
            return False, owed

    def due(self) -> bool:
        """True at most once a second: time to look for windows that ended."""
        now = self._clock()
        if now < self._next_sweep:
            return False
        self._next_sweep = now + 1.0
        return True

    def reset(self) -> None:
        """Forget every window, ended or not: the next event of any key is admitted at once,
        and what was suppressed is not handed back."""
        with self._lock:
            self._windows = {}

    def ended(self) -> list[tuple[Hashable, int, Any]]:
        """``(key, suppressed, last sample)`` of every window that ended with suppressed
        events, each once; windows that ended quietly are forgotten."""
        now = self._clock()
        out: list[tuple[Hashable, int, Any]] = []
        with self._lock:
            for key, window in list(self._windows.items()):
                if now - window.start < self.interval:
                    continue
                del self._windows[key]
                if window.suppressed:
                    out.append((key, window.suppressed, window.last))
        return out


class _Flushable(Protocol):
    def flush(self) -> None: ...


_flushables: weakref.WeakSet[_Flushable] = weakref.WeakSet()


def flush_suppressed() -> None:
    """Write the summary of every rate-limit window that ended with suppressed lines."""
    for item in list(_flushables):
        item.flush()


def _summary(count: int, interval: float) -> str:
    return f"{count} similar lines suppressed in the last {interval:g}s; the last one: "


class LimitedLogger:
    """A logger whose lines are rate-limited per key (e.g. ``(mapping uuid, cause)``).

    ``fields`` become attributes of the log record (see :data:`FIELDS`)."""

    def __init__(
        self,
        logger: logging.Logger,
        lines: int = LINES,
        interval: float = INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.limiter = RateLimiter(lines, interval, clock)
        _flushables.add(self)

    def warning(self, key: Hashable, msg: str, *args: Any, **fields: Any) -> None:
        self.log(logging.WARNING, key, msg, *args, **fields)

    def error(self, key: Hashable, msg: str, *args: Any, **fields: Any) -> None:
        self.log(logging.ERROR, key, msg, *args, **fields)

    def log(
        self,
        level: int,
        key: Hashable,
        msg: str,
        *args: Any,
        exc_info: BaseException | None = None,
        **fields: Any,
    ) -> None:
        """``msg % args`` at ``level`` unless ``key`` is over its limit; ``exc_info`` adds
        a traceback to the line (not to the summary of suppressed ones)."""
        if not self.logger.isEnabledFor(level):
            return
        admitted, owed = self.limiter.admit(key, (level, msg, args, fields))
        if owed is not None:
            self._summarize(*owed)
        if self.limiter.due():
            self.flush()
        if admitted:
            self.logger.log(level, msg, *args, exc_info=exc_info, extra=fields)

    def flush(self) -> None:
        for _, count, last in self.limiter.ended():
            self._summarize(count, last)

    def reset(self) -> None:
        """Start afresh (the cause is over): the next line of every key goes through at
        once. What was suppressed is dropped without a summary: the caller says how it
        ended (the supervisor's ``working again after 12.0s (40 failed attempts)``)."""
        self.limiter.reset()

    def _summarize(self, count: int, last: Any) -> None:
        level, msg, args, fields = last
        text = _format(msg, args)
        summary = _summary(count, self.limiter.interval)
        self.logger.log(level, "%s%s", summary, text, extra={**fields, "suppressed": count})


class LibraryFilter(logging.Filter):
    """Rate-limits the lines of the client libraries (:data:`CLIENT_LOGGERS`) per (logger,
    message template); every other line passes untouched. Summaries go to ``handler``."""

    def __init__(
        self,
        handler: logging.Handler,
        lines: int = LINES,
        interval: float = INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self._handler = weakref.ref(handler)
        self.limiter = RateLimiter(lines, interval, clock)
        _flushables.add(self)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.partition(".")[0] not in CLIENT_LOGGERS or hasattr(record, "suppressed"):
            return True
        admitted, owed = self.limiter.admit((record.name, str(record.msg)), record)
        if owed is not None:
            self._summarize(*owed)
        if self.limiter.due():
            self.flush()
        return admitted

    def flush(self) -> None:
        for _, count, last in self.limiter.ended():
            self._summarize(count, last)

    def _summarize(self, count: int, last: logging.LogRecord) -> None:
        handler = self._handler()
        if handler is None:
            return
        summary = logging.makeLogRecord(
            {
                "name": last.name,
                "levelno": last.levelno,
                "levelname": last.levelname,
                "msg": "%s%s",
                "args": (_summary(count, self.limiter.interval), _message(last)),
                "suppressed": count,
            }
        )
        handler.handle(summary)


def _format(msg: Any, args: Any) -> str:
    text = str(msg)
    if not args:
        return text
    try:
        return str(text % args)
    except (TypeError, ValueError):
        return f"{text} {args!r}"


def _message(record: logging.LogRecord) -> str:
    return _format(record.msg, record.args)


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(_message(record))
        record.args = None
        for name in FIELDS:
            value = getattr(record, name, None)
            if isinstance(value, str):
                setattr(record, name, redact(value))
        return True


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        return orjson.dumps(entry, default=str).decode()


class ConsoleFormatter(logging.Formatter):
    """``<time> <LEVEL> <logger>: <message>``. The date and time are rendered once a second
    rather than for every line (a managed function's environments write several lines per
    invocation)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")
        self._stamp: tuple[int, str] = (-1, "")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        if datefmt is not None:
            return super().formatTime(record, datefmt)
        second = int(record.created)
        cached, stamp = self._stamp
        if cached != second:
            stamp = time.strftime(self.default_time_format, self.converter(record.created))
            self._stamp = (second, stamp)
        return f"{stamp},{int(record.msecs):03d}"


def setup(fmt: str = "console", level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    # The limit first: it keys on the message template, before redaction formats it.
    handler.addFilter(LibraryFilter(handler))
    handler.addFilter(RedactingFilter())
    if fmt == "json":
        handler.setFormatter(JSONFormatter())
    else:
        handler.setFormatter(ConsoleFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Neither format shows threads, processes or source lines: do not gather them for every
    # record (the logging HOWTO's "Optimization"; a function's runtime logs lines per call).
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging._srcfile = None
    # Library chatter at INFO drowns the router's own lines.
    for noisy in ("aiokafka", "botocore", "aiobotocore", "aiohttp.access", "watchfiles", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
