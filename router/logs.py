"""Logging setup: console or JSON lines, with secrets redacted from every message."""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime

import orjson

from router.secrets import redact


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            try:
                record.msg = record.msg % record.args
            except (TypeError, ValueError):
                record.msg = f"{record.msg} {record.args!r}"
            record.args = None
        record.msg = redact(str(record.msg))
        return True


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        return orjson.dumps(entry).decode()


def setup(fmt: str = "console", level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RedactingFilter())
    if fmt == "json":
        handler.setFormatter(JSONFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
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
