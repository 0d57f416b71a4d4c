"""Rate limits of log lines: at most N lines per key and interval, then one line that says
how many were left out; third-party loggers limited per message template."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import orjson
import pytest

from router import logs


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_limiter_admits_n_per_window_and_counts_the_rest(clock: Clock) -> None:
    limiter = logs.RateLimiter(lines=3, interval=10, clock=clock)
    admitted = [limiter.admit("a", i) for i in range(10)]
    assert [a for a, _ in admitted] == [True] * 3 + [False] * 7
    assert all(owed is None for _, owed in admitted)
    assert limiter.admit("b") == (True, None), "another key has its own budget"
    assert limiter.ended() == [], "the window has not ended yet"
    clock.now += 10
    assert limiter.ended() == [("a", 7, 9)]
    assert limiter.ended() == [], "a summary is handed out once"
    assert limiter.admit("a") == (True, None)


def test_the_next_line_after_a_window_brings_the_summary_with_it(clock: Clock) -> None:
    limiter = logs.RateLimiter(lines=1, interval=10, clock=clock)
    limiter.admit("a", "first")
    limiter.admit("a", "second")
    limiter.admit("a", "third")
    clock.now += 11
    assert limiter.admit("a", "fourth") == (True, (2, "third"))
    assert limiter.ended() == []


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """The root logger writing through the router's own handler (filters, JSON lines)."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    logs.setup("json", "INFO")
    handler = root.handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    out = io.StringIO()
    handler.setStream(out)
    try:
        yield out
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)


def _entries(out: io.StringIO) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in out.getvalue().splitlines()]


def test_limited_logger_writes_fields_and_a_summary(captured: io.StringIO, clock: Clock) -> None:
    warnings = logs.LimitedLogger(logging.getLogger("router.test"), 2, 60, clock)
    for i in range(7):
        warnings.warning(
            ("m1", "function_error"),
            "mapping %s: failed %d",
            "orders",
            i,
            mapping="orders",
            errorType="ValueError",
        )
    warnings.warning(("m2", "function_error"), "mapping %s: failed", "other", mapping="other")
    entries = _entries(captured)
    assert [e["message"] for e in entries] == [
        "mapping orders: failed 0",
        "mapping orders: failed 1",
        "mapping other: failed",
    ]
    assert entries[0]["level"] == "warning"
    assert entries[0]["mapping"] == "orders"
    assert entries[0]["errorType"] == "ValueError"
    clock.now += 60
    logs.flush_suppressed()
    summary = _entries(captured)[-1]
    assert summary["message"] == (
        "5 similar lines suppressed in the last 60s; the last one: mapping orders: failed 6"
    )
    assert summary["suppressed"] == 5
    assert summary["mapping"] == "orders"
    logs.flush_suppressed()
    assert len(_entries(captured)) == 4, "the summary is written once"


def test_library_lines_are_limited_per_message_template(
    captured: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    handler = logging.getLogger().handlers[0]
    limit = next(f for f in handler.filters if isinstance(f, logs.LibraryFilter))
    clock = Clock()
    monkeypatch.setattr(limit, "limiter", logs.RateLimiter(logs.LINES, logs.INTERVAL, clock))
    client = logging.getLogger("aiokafka.conn")
    own = logging.getLogger("connectors.kafka")
    handler_code = logging.getLogger("orders.handler")
    for i in range(100):
        client.error("Unable connect to node with id %s: %s", 1, f"refused {i}")
        client.warning("Got error produce response: %s", "NotLeader")
        own.warning("kafka %s: cluster unreachable", "b:9092")
        handler_code.info("order %d processed", i)
    messages = [str(e["message"]) for e in _entries(captured)]
    assert messages.count("kafka b:9092: cluster unreachable") == 100, "own lines untouched"
    assert sum(m.startswith("order ") for m in messages) == 100, "a function's lines untouched"
    assert sum(m.startswith("Unable connect") for m in messages) == logs.LINES
    assert sum(m.startswith("Got error produce") for m in messages) == logs.LINES
    clock.now += logs.INTERVAL
    client.error("Unable connect to node with id %s: %s", 1, "refused again")
    summary = f"{100 - logs.LINES} similar lines suppressed in the last {logs.INTERVAL:g}s"
    tail = [str(e["message"]) for e in _entries(captured)][-3:]
    assert sorted(tail[:2]) == [
        f"{summary}; the last one: Got error produce response: NotLeader",
        f"{summary}; the last one: Unable connect to node with id 1: refused 99",
    ]
    assert tail[2] == "Unable connect to node with id 1: refused again"


def test_fields_are_redacted(captured: io.StringIO) -> None:
    logging.getLogger("router.test").warning(
        "failed", extra={"errorMessage": "cannot reach postgresql://u:s3cret@db/x"}
    )
    assert _entries(captured)[-1]["errorMessage"] == "cannot reach postgresql://u:***@db/x"


def test_reset_lets_the_next_line_through_at_once(captured: io.StringIO, clock: Clock) -> None:
    warnings = logs.LimitedLogger(logging.getLogger("router.test"), 1, 60, clock)
    for i in range(4):
        warnings.warning("k", "failed %d", i)
    warnings.reset()
    warnings.warning("k", "failed again")
    clock.now += 60
    logs.flush_suppressed()
    # The caller of reset says how it ended; the lines suppressed before it are not summed up.
    assert [e["message"] for e in _entries(captured)] == ["failed 0", "failed again"]


async def test_supervisor_failures_go_through_the_shared_rate_limiter(
    captured: io.StringIO,
) -> None:
    """While one kind of failure lasts it is logged once per interval; the recovery line
    says how many attempts failed, and the next failure is logged at once again."""
    from router.backoff import Backoff
    from router.errors import StoreError
    from router.supervisor import Supervisor

    supervisor = Supervisor("mapping orders", backoff=Backoff(base=0.0001, cap=0.0001))
    failures = 0

    async def store_down_for(times: int) -> str:
        nonlocal failures
        failures += 1
        if failures <= times:
            raise StoreError("connection refused")
        return "written"

    assert await supervisor.retry("writing a checkpoint", lambda: store_down_for(20)) == "written"
    failures = 0
    assert await supervisor.retry("writing a checkpoint", lambda: store_down_for(3)) == "written"
    lines = [str(e["message"]) for e in _entries(captured)]
    assert len(lines) == 4, lines
    assert "connection refused (attempt 1), retrying" in lines[0]
    assert "working again" in lines[1] and "(20 failed attempts)" in lines[1]
    assert "connection refused (attempt 1), retrying" in lines[2], "a new outage, at once"
    assert "working again" in lines[3] and "(3 failed attempts)" in lines[3]
    assert all(line.startswith("mapping orders: ") for line in lines)
