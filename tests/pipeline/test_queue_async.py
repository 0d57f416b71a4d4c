"""QUEUE delivery (SQS-like: delete, release, FIFO groups, concurrency) and ASYNC delivery
(one event per invoke, retries, async destination records)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from router.models import InvokeResult, SourceKind
from router.pipeline import Backoff
from tests.pipeline.conftest import MakeHarness
from tests.pipeline.fakes import (
    RecordingDestination,
    ScriptedInvoker,
    SkipMatcher,
    error,
    event_ids,
    ok,
    partial,
    record,
    records,
    throttle,
    until,
)

QUEUE = SourceKind.QUEUE
ASYNC = SourceKind.ASYNC


@pytest.mark.parametrize(
    ("result", "acked", "released"),
    [
        (ok(), ["0", "1", "2", "3", "4"], []),
        (ok({"batchItemFailures": []}), ["0", "1", "2", "3", "4"], []),
        (error(), [], ["0", "1", "2", "3", "4"]),
        (partial("1", "3"), ["0", "2", "4"], ["1", "3"]),
        (partial("0"), ["1", "2", "3", "4"], ["0"]),
        (ok({"batchItemFailures": [{"itemIdentifier": ""}]}), [], ["0", "1", "2", "3", "4"]),
        (ok("not a response"), [], ["0", "1", "2", "3", "4"]),
    ],
)
async def test_queue_outcomes(
    make: MakeHarness, result: InvokeResult, acked: list[str], released: list[str]
) -> None:
    h = make(QUEUE, ScriptedInvoker([result]), batch_size=5, report_batch_item_failures=True)
    await h.put(records(5, None))
    await h.drain()
    assert h.invoker.batches == [["0", "1", "2", "3", "4"]]
    assert h.source.acked == acked
    assert h.source.released == released
    await h.check()


async def test_queue_throttles_are_retried(make: MakeHarness) -> None:
    h = make(QUEUE, ScriptedInvoker([throttle(), throttle()]), batch_size=5)
    await h.put(records(2, None))
    await h.drain()
    assert h.source.acked == ["0", "1"]
    assert len(h.invoker.events) == 3
    await h.check()


async def test_queue_filtered_records_without_lane_are_acked_at_once(make: MakeHarness) -> None:
    invoker = ScriptedInvoker()
    invoker.gate = asyncio.Event()
    h = make(QUEUE, invoker, matcher=SkipMatcher(), batch_size=10)
    await h.put([record(0, None), record(1, None, skip=1), record(2, None, skip=1)])
    # acked by put itself, while the matching record is still waiting for the function
    assert h.source.acked == ["1", "2"]
    invoker.gate.set()
    await h.drain()
    assert h.invoker.batches == [["0"]]
    assert h.source.acked == ["1", "2", "0"]
    await h.check()


async def test_queue_filtered_records_in_a_fifo_group_ride_along(make: MakeHarness) -> None:
    h = make(QUEUE, matcher=SkipMatcher(), batch_size=10)
    await h.put([record(0, "g"), record(1, "g", skip=1), record(2, "g")])
    await h.drain()
    assert h.invoker.batches == [["0", "2"]]
    assert h.source.log == [("ack", ["0", "1", "2"])]
    await h.check()


async def test_fifo_failure_still_deletes_filtered_records(make: MakeHarness) -> None:
    h = make(QUEUE, ScriptedInvoker([error()]), matcher=SkipMatcher(), batch_size=10)
    await h.put([record(0, "g", skip=1), record(1, "g"), record(2, "g", skip=1)])
    await h.drain()
    assert h.source.log == [("ack", ["0", "2"]), ("release", ["1"])]
    await h.check()


async def test_fifo_group_of_only_filtered_records(make: MakeHarness) -> None:
    h = make(QUEUE, matcher=SkipMatcher(), batch_size=10)
    await h.put([record(0, "g", skip=1), record(1, "g", skip=1)])
    await h.drain()
    assert h.invoker.events == []
    assert h.source.log == [("ack", ["0", "1"])]
    await h.check()


def fifo_fails_on(bad: str) -> ScriptedInvoker:
    def handler(event: dict[str, Any]) -> InvokeResult:
        return error() if bad in event_ids(event) else ok()

    return ScriptedInvoker(handler)


async def test_fifo_failure_releases_the_rest_of_the_group(make: MakeHarness) -> None:
    h = make(QUEUE, fifo_fails_on("g1-2"), batch_size=2)
    g1 = [record(f"g1-{i}", "g1") for i in range(6)]
    g2 = [record(f"g2-{i}", "g2") for i in range(4)]
    await h.put(g1 + g2)
    await h.drain()
    assert h.source.acked.count("g1-0") == 1
    assert [i for i in h.source.acked if i.startswith("g1")] == ["g1-0", "g1-1"]
    assert [i for i in h.source.acked if i.startswith("g2")] == ["g2-0", "g2-1", "g2-2", "g2-3"]
    assert h.source.released == ["g1-2", "g1-3", "g1-4", "g1-5"]
    assert ("release", ["g1-2", "g1-3"]) in h.source.log
    assert not any("g1-4" in b for b in h.invoker.batches)
    await h.check()


async def test_fifo_partial_response_releases_from_the_first_failure(make: MakeHarness) -> None:
    h = make(
        QUEUE,
        ScriptedInvoker([partial("g-1")]),
        batch_size=3,
        report_batch_item_failures=True,
    )
    await h.put([record(f"g-{i}", "g") for i in range(5)])
    await h.drain()
    assert h.source.acked == ["g-0"]
    assert h.source.released == ["g-1", "g-2", "g-3", "g-4"]
    await h.check()


async def test_maximum_concurrency_bounds_unordered_batches(make: MakeHarness) -> None:
    invoker = ScriptedInvoker()
    invoker.gate = asyncio.Event()
    h = make(QUEUE, invoker, batch_size=1, maximum_concurrency=3)
    await h.put(records(20, None))
    await until(lambda: invoker.active == 3, what="3 invokes in flight")
    for _ in range(20):
        await asyncio.sleep(0)
    assert invoker.active == 3
    invoker.gate.set()
    await h.drain()
    assert invoker.peak == 3
    assert len(invoker.events) == 20
    await h.check()


async def test_unordered_batches_run_concurrently_by_default(make: MakeHarness) -> None:
    invoker = ScriptedInvoker()
    invoker.gate = asyncio.Event()
    h = make(QUEUE, invoker, batch_size=2)
    await h.put(records(40, None))
    await until(lambda: invoker.active == 10, what="10 invokes in flight")
    invoker.gate.set()
    await h.drain()
    assert invoker.peak == 10
    await h.check()


async def test_queue_on_success_destination(make: MakeHarness) -> None:
    dest = RecordingDestination()
    h = make(QUEUE, on_success=dest, batch_size=2)
    await h.put(records(2, None))
    await h.drain()
    await until(lambda: len(dest.records) == 1, what="on-success record")
    assert dest.records[0]["requestContext"]["condition"] == "Success"
    await h.check()


# ----------------------------------------------------------------------------- async


async def test_async_invokes_one_record_at_a_time(make: MakeHarness) -> None:
    h = make(ASYNC, batch_size=10, maximum_retry_attempts=2)
    await h.put(records(3, "s"))
    await h.drain()
    assert h.invoker.batches == [["0"], ["1"], ["2"]]
    assert h.source.acked == ["0", "1", "2"]
    await h.check()


async def test_async_retries_twice_then_retries_exhausted(make: MakeHarness) -> None:
    dest = RecordingDestination()
    failure = error("bad input")
    h = make(ASYNC, ScriptedInvoker(lambda e: failure), on_failure=dest, maximum_retry_attempts=2)
    r = record(0, "s")
    await h.put([r])
    await h.drain()
    assert h.invoker.batches == [["0"]] * 3
    [sent] = dest.records
    assert sent["version"] == "1.0"
    assert sent["requestContext"]["condition"] == "RetriesExhausted"
    assert sent["requestContext"]["approximateInvokeCount"] == 3
    assert sent["requestContext"]["functionArn"].endswith(":function:f")
    assert sent["requestPayload"] == {"Records": [r.data]}
    assert sent["responsePayload"] == failure.payload
    assert sent["responseContext"] == {
        "statusCode": 200,
        "executedVersion": "$LATEST",
        "functionError": "Unhandled",
    }
    assert h.source.acked == ["0"]
    await h.check()


async def test_async_zero_retries(make: MakeHarness) -> None:
    dest = RecordingDestination()
    h = make(ASYNC, ScriptedInvoker([error()]), on_failure=dest, maximum_retry_attempts=0)
    await h.put(records(2, "s"))
    await h.drain()
    assert h.invoker.batches == [["0"], ["1"]]
    assert dest.records[0]["requestContext"]["approximateInvokeCount"] == 1
    await h.check()


async def test_async_success_record(make: MakeHarness) -> None:
    dest = RecordingDestination()
    h = make(
        ASYNC,
        ScriptedInvoker([error(), ok({"answer": 42})]),
        on_success=dest,
        maximum_retry_attempts=2,
    )
    r = record(0, "s")
    await h.put([r])
    await h.drain()
    [sent] = dest.records
    assert sent["requestContext"]["condition"] == "Success"
    assert sent["requestContext"]["approximateInvokeCount"] == 2
    assert sent["requestPayload"] == {"Records": [r.data]}
    assert sent["responsePayload"] == {"answer": 42}
    assert sent["responseContext"] == {"statusCode": 200, "executedVersion": "$LATEST"}
    await h.check()


async def test_async_event_age_exceeded(make: MakeHarness) -> None:
    dest = RecordingDestination()
    h = make(ASYNC, on_failure=dest, maximum_retry_attempts=2, maximum_record_age=60)
    await h.put([record(0, "s", arrival=time.time() - 61), record(1, "s")])
    await h.drain()
    assert h.invoker.batches == [["1"]]
    [sent] = dest.records
    assert sent["requestContext"]["condition"] == "EventAgeExceeded"
    assert sent["requestContext"]["approximateInvokeCount"] == 0
    assert sent["responsePayload"] is None
    await h.check()


async def test_async_throttles_do_not_spend_retries(make: MakeHarness) -> None:
    dest = RecordingDestination()
    h = make(
        ASYNC,
        ScriptedInvoker([throttle()] * 4 + [ok()]),
        on_failure=dest,
        maximum_retry_attempts=0,
    )
    await h.put(records(1, "s"))
    await h.drain()
    assert dest.records == []
    assert len(h.invoker.events) == 5
    await h.check()


async def test_an_event_in_retry_backoff_does_not_hold_an_invocation_slot(
    make: MakeHarness,
) -> None:
    # One invocation at a time; the first event fails and waits out a long backoff. The
    # other events are invoked meanwhile: the slot bounds invocations, not waiting retries.
    invoker = ScriptedInvoker(lambda e: error() if event_ids(e) == ["bad"] else ok())
    h = make(
        ASYNC,
        invoker,
        backoff=Backoff(base=30.0, cap=30.0),
        maximum_concurrency=1,
        maximum_retry_attempts=2,
    )
    await h.put([record("bad", "lane-bad")])
    await until(lambda: len(invoker.events) == 1, what="first invoke")
    await h.put([record("a", "lane-a"), record("b", "lane-b")])
    await until(lambda: sorted(h.source.acked) == ["a", "b"], what="other events delivered")
    await h.pipeline.stop(timeout=5)
    await h.check(unresolved=["bad"])
