"""Backpressure, start / stop, revoke, and the source's own failures."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest

from router.errors import ConfigError, Location, SourceError, StoreError
from router.models import InvokeResult, SourceKind
from router.pipeline import Backoff
from tests.pipeline.conftest import MakeHarness
from tests.pipeline.fakes import (
    FakeSource,
    NothingMatcher,
    ScriptedInvoker,
    error,
    event_ids,
    ok,
    partial,
    records,
    until,
)

STREAM = SourceKind.STREAM
QUEUE = SourceKind.QUEUE
ASYNC = SourceKind.ASYNC
SLOW = Backoff(base=30.0, cap=30.0)


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def gated() -> ScriptedInvoker:
    invoker = ScriptedInvoker()
    invoker.gate = asyncio.Event()
    return invoker


async def test_put_blocks_at_capacity_until_acks_free_room(make: MakeHarness) -> None:
    invoker = gated()
    h = make(STREAM, invoker, capacity=5, batch_size=5)
    assert h.pipeline.free() == 5
    await h.put(records(5))
    assert h.pipeline.free() == 0
    blocked = asyncio.create_task(h.put(records(1, start=5)))
    await settle()
    assert not blocked.done()
    invoker.gate.set()
    await asyncio.wait_for(blocked, 5)
    await h.drain()
    assert h.source.acked == [str(i) for i in range(6)]
    await h.check()


async def test_free_counts_filtered_records_until_acked(make: MakeHarness) -> None:
    h = make(STREAM, capacity=10, matcher=NothingMatcher(), batch_size=3)
    await h.put(records(4))
    await h.drain()
    assert h.invoker.events == []
    await h.check()


async def test_start_runs_the_source_and_stop_closes_it(make: MakeHarness) -> None:
    h = make(STREAM, batch_size=2)
    h.pipeline.start()
    batch = records(5)
    h.put_ids.extend(r.identifier for r in batch)
    h.source.feed(batch)
    await h.drain()
    assert h.source.running
    await h.pipeline.stop(timeout=1)
    assert not h.source.running
    assert h.source.closed
    await h.check()


async def test_stop_lets_the_in_flight_invoke_finish(make: MakeHarness) -> None:
    invoker = gated()
    h = make(STREAM, invoker, batch_size=1)
    await h.put(records(3))
    await until(lambda: invoker.active == 1, what="invoke in flight")
    stopping = asyncio.create_task(h.pipeline.stop(timeout=5))
    await settle()
    assert not stopping.done()
    invoker.gate.set()
    await asyncio.wait_for(stopping, 5)
    assert h.source.acked == ["0"]
    assert h.invoker.batches == [["0"]]
    await h.check(unresolved=["1", "2"])


async def test_stop_abandons_a_batch_waiting_in_backoff(make: MakeHarness) -> None:
    h = make(STREAM, ScriptedInvoker(lambda e: error()), backoff=SLOW)
    await h.put(records(2))
    await until(lambda: len(h.invoker.events) == 1, what="first invoke")
    await settle()
    started = time.monotonic()
    await h.pipeline.stop(timeout=10)
    assert time.monotonic() - started < 2
    assert h.source.acked == []
    await h.check(unresolved=["0", "1"])


async def test_stop_abandons_an_async_record_waiting_in_backoff(make: MakeHarness) -> None:
    h = make(ASYNC, ScriptedInvoker(lambda e: error()), backoff=SLOW, maximum_retry_attempts=2)
    await h.put(records(2, "s"))
    await until(lambda: len(h.invoker.events) == 1, what="first invoke")
    await settle()
    await h.pipeline.stop(timeout=10)
    assert h.source.acked == []
    await h.check(unresolved=["0", "1"])


async def test_stop_releases_queued_queue_records(make: MakeHarness) -> None:
    invoker = gated()
    h = make(QUEUE, invoker, batch_size=1, maximum_concurrency=2)
    await h.put(records(6, None))
    await until(lambda: invoker.active == 2, what="2 invokes in flight")
    await settle()
    stopping = asyncio.create_task(h.pipeline.stop(timeout=5))
    await settle()
    invoker.gate.set()
    await asyncio.wait_for(stopping, 5)
    assert sorted(h.source.acked) == ["0", "1"]
    assert sorted(h.source.released) == ["2", "3", "4", "5"]
    assert len(invoker.events) == 2
    await h.check()


async def test_stop_timeout_cancels_a_stuck_invoke(make: MakeHarness) -> None:
    invoker = gated()
    h = make(STREAM, invoker, batch_size=1)
    await h.put(records(2))
    await until(lambda: invoker.active == 1, what="invoke in flight")
    await h.pipeline.stop(timeout=0.05)
    assert h.source.acked == []
    await h.check(unresolved=["0", "1"])


async def test_stop_does_not_wait_for_the_batching_window(make: MakeHarness) -> None:
    h = make(STREAM, batch_size=10, maximum_batching_window=60)
    await h.put(records(2))
    await settle()
    started = time.monotonic()
    await h.pipeline.stop(timeout=30)
    assert time.monotonic() - started < 2
    assert h.invoker.events == []
    await h.check(unresolved=["0", "1"])


async def test_revoke_drops_queued_waits_for_in_flight_others_go_on(make: MakeHarness) -> None:
    gate = asyncio.Event()

    async def handler(event: dict[str, Any]) -> InvokeResult:
        if event_ids(event)[0].startswith("a"):
            await gate.wait()
        return ok()

    h = make(STREAM, ScriptedInvoker(handler), batch_size=1)
    a = records(5, "a", start=0)
    for r in a:
        r.identifier = r.data["messageId"] = f"a{r.identifier}"
    b = records(5, "b", start=100)
    await h.put(a + b)
    await until(lambda: len(h.invoker.events) >= 1, what="a0 in flight")
    revoking = asyncio.create_task(h.pipeline.revoke(["a"], timeout=5))
    await until(lambda: len(h.source.acked) == 5, what="lane b delivered")
    assert not revoking.done()
    gate.set()
    await asyncio.wait_for(revoking, 5)
    assert [i for i in h.source.acked if i.startswith("a")] == ["a0"]
    assert sum(1 for b in h.invoker.batches if b[0].startswith("a")) == 1
    # the lane can be taken again later
    again = records(1, "a", start=7)
    await h.put(again)
    await h.drain(7)
    await h.check(unresolved=["a1", "a2", "a3", "a4"])


async def test_revoke_timeout_cancels_the_in_flight_batch(make: MakeHarness) -> None:
    invoker = gated()
    h = make(STREAM, invoker, batch_size=1)
    await h.put(records(3, "a") + records(2, "b", start=10))
    await until(lambda: invoker.active == 2, what="both lanes in flight")
    await h.pipeline.revoke(["a"], timeout=0.05)
    invoker.gate.set()
    await h.drain(2)
    assert h.source.acked == ["10", "11"]
    await h.check(unresolved=["0", "1", "2"])


async def test_revoke_of_unknown_lanes_is_a_no_op(make: MakeHarness) -> None:
    h = make(STREAM)
    await h.pipeline.revoke(["nope"], timeout=1)
    await h.check()


class FlakySource(FakeSource):
    def __init__(self) -> None:
        super().__init__(STREAM)
        self.runs = 0

    async def run(self, sink: Any) -> None:
        self.runs += 1
        if self.runs == 1:
            raise SourceError("broker unreachable")
        sink.report("OK")
        await super().run(sink)


async def test_a_retriable_source_error_is_reported_and_run_again(make: MakeHarness) -> None:
    source = FlakySource()
    h = make(STREAM, source=source)
    h.pipeline.supervisor.backoff = Backoff(base=0.001, cap=0.001)
    h.pipeline.start()
    await until(lambda: source.runs == 2, what="second run")
    assert h.reports[0] == "PROBLEM: broker unreachable"
    await until(lambda: h.reports[-1] == "OK", what="OK")
    await h.pipeline.stop(timeout=1)
    await h.check()


async def test_a_configuration_error_stops_the_mapping_and_says_so(make: MakeHarness) -> None:
    class Misconfigured(FakeSource):
        async def run(self, sink: Any) -> None:
            raise ConfigError("unknown topic setting", Location(file="router.yaml", line=7))

    h = make(STREAM, source=Misconfigured(STREAM))
    h.pipeline.supervisor.backoff = Backoff(base=0.001, cap=0.001)
    h.pipeline.start()
    assert h.pipeline._source_task is not None
    await asyncio.wait_for(h.pipeline._source_task, 5)
    assert h.reports == [
        "PROBLEM: router.yaml:7: unknown topic setting (mapping stopped: fix its configuration)"
    ]
    await h.pipeline.stop(timeout=1)
    await h.check()


async def test_an_unexpected_exception_is_retried_and_logged_with_its_traceback(
    make: MakeHarness, caplog: pytest.LogCaptureFixture
) -> None:
    class Buggy(FakeSource):
        runs = 0

        async def run(self, sink: Any) -> None:
            Buggy.runs += 1
            if Buggy.runs <= 2:
                raise ValueError("bad settings")
            sink.supervisor.working()
            await super().run(sink)

    source = Buggy(STREAM)
    h = make(STREAM, source=source)
    h.pipeline.supervisor.backoff = Backoff(base=0.001, cap=0.001)
    with caplog.at_level(logging.ERROR, logger="router.supervisor"):
        h.pipeline.start()
        await until(lambda: source.running, what="third run")
    problem = "PROBLEM: internal error: ValueError: bad settings (retrying; see the router log)"
    assert h.reports == [problem, "No records processed"]
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    # Rate-limited: the second failure, moments after the first, is not logged again.
    assert len(errors) == 1
    assert errors[0].exc_info is not None and "ValueError: bad settings" in caplog.text
    source.feed(records(1))
    await h.drain()
    await h.pipeline.stop(timeout=1)
    await h.check()


async def test_an_exception_group_is_retried_and_shows_its_real_cause(make: MakeHarness) -> None:
    class Grouped(FakeSource):
        runs = 0

        async def run(self, sink: Any) -> None:
            Grouped.runs += 1
            if Grouped.runs == 1:
                async with asyncio.TaskGroup() as tasks:
                    tasks.create_task(self._fail())
                    await asyncio.Event().wait()
            await super().run(sink)

        async def _fail(self) -> None:
            raise StoreError("store postgresql://db: writing checkpoints of m failed: gone")

    source = Grouped(STREAM)
    h = make(STREAM, source=source)
    h.pipeline.supervisor.backoff = Backoff(base=0.001, cap=0.001)
    h.pipeline.start()
    await until(lambda: source.running, what="second run")
    assert h.reports == ["PROBLEM: store postgresql://db: writing checkpoints of m failed: gone"]
    await h.pipeline.stop(timeout=1)
    await h.check()


async def test_stop_while_a_release_hangs_counts_each_record_once(make: MakeHarness) -> None:
    h = make(QUEUE, ScriptedInvoker([partial("1")]), batch_size=3, report_batch_item_failures=True)
    h.source.release_gate = asyncio.Event()
    await h.put(records(3, None))
    await until(lambda: h.source.acked == ["0", "2"], what="successes acked")
    await h.pipeline.stop(timeout=0.05)
    assert h.source.released == []
    await h.check(unresolved=["1"])


async def test_put_after_stop_takes_nothing(make: MakeHarness) -> None:
    h = make(STREAM)
    await h.pipeline.stop(timeout=1)
    await h.put(records(2))
    assert h.invoker.events == []
    await h.check(unresolved=["0", "1"])


async def test_cancelling_put_while_filtered_records_are_deleted_frees_their_room(
    make: MakeHarness,
) -> None:
    source = FakeSource(QUEUE)
    h = make(QUEUE, source=source, capacity=100, matcher=NothingMatcher())
    gate = asyncio.Event()
    plain_ack = source.ack

    async def slow_ack(batch: Any) -> None:
        await gate.wait()
        await plain_ack(batch)

    source.ack = slow_ack  # type: ignore[method-assign,assignment]
    task = asyncio.create_task(h.pipeline.put(records(10, None)))
    await settle()
    assert h.pipeline.free() == 90
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert h.pipeline.free() == 100
    assert len(source.released) == 10  # a queue stops holding them at once


async def test_wait_for_room_returns_once_acks_free_room(make: MakeHarness) -> None:
    invoker = gated()
    h = make(STREAM, invoker, capacity=4, batch_size=4)
    await h.put(records(4))
    waiter = asyncio.create_task(h.pipeline.wait_for_room())
    await settle()
    assert not waiter.done()
    assert invoker.gate is not None
    invoker.gate.set()
    await asyncio.wait_for(waiter, 5)
    await h.drain()
    await h.check()


async def test_a_dropped_connection_from_the_source_is_retried(make: MakeHarness) -> None:
    class Flaky(FakeSource):
        calls = 0

        async def run(self, sink: Any) -> None:
            Flaky.calls += 1
            if Flaky.calls == 1:
                raise ConnectionResetError("connection reset by peer")
            await asyncio.Event().wait()

    h = make(STREAM, source=Flaky(STREAM))
    h.pipeline.supervisor.backoff = Backoff(base=0.001, cap=0.001)
    h.pipeline.start()
    await until(lambda: Flaky.calls == 2, what="run() called again")
    assert h.reports == ["PROBLEM: connection reset by peer"]
    await h.pipeline.stop(timeout=1)
    await h.check()
