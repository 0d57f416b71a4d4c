"""STREAM delivery: order per lane, retries, record age, bisect, partial batch responses,
filtered records, throttles and destinations that are down."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from router.models import InvokeResult, SourceKind, function_arn
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
    transport,
)

STREAM = SourceKind.STREAM


def fails_on(*bad: str) -> ScriptedInvoker:
    """A function that errors on every batch holding one of ``bad``."""

    def handler(event: dict[str, Any]) -> InvokeResult:
        return error() if set(event_ids(event)) & set(bad) else ok()

    return ScriptedInvoker(handler)


async def test_order_is_kept_per_lane_across_batches(make: MakeHarness) -> None:
    h = make(STREAM, batch_size=3)
    a = records(10, "a", start=0)
    b = records(10, "b", start=100)
    for i in range(0, 10, 4):
        await h.put(a[i : i + 4] + b[i : i + 4])
    await h.drain()
    by_lane: dict[str, list[str]] = {"a": [], "b": []}
    for batch in h.invoker.batches:
        assert 1 <= len(batch) <= 3
        lane = "a" if int(batch[0]) < 100 else "b"
        assert all((int(i) < 100) == (lane == "a") for i in batch), "a batch mixes lanes"
        by_lane[lane].extend(batch)
    assert by_lane == {"a": [r.identifier for r in a], "b": [r.identifier for r in b]}
    h.acks_in_lane_order(by_lane)
    await h.check()


async def test_one_batch_at_a_time_per_lane_lanes_run_concurrently(make: MakeHarness) -> None:
    invoker = ScriptedInvoker()
    invoker.gate = asyncio.Event()
    h = make(STREAM, invoker, batch_size=2)
    await h.put(records(6, "a") + records(6, "b", start=100))
    await until_active(invoker, 2)
    for _ in range(20):
        await asyncio.sleep(0)
    assert invoker.active == 2
    assert sorted(int(b[0]) for b in invoker.batches) == [0, 100]
    invoker.gate.set()
    await h.drain()
    assert invoker.peak == 2
    await h.check()


async def test_invocations_say_when_the_next_full_batch_waits(make: MakeHarness) -> None:
    # What lets the python invoker wait for a quick sync handler without holding back a
    # source whose records are still arriving (quick_wait_ms).
    h = make(STREAM, batch_size=3)
    await h.put(records(7, "a"))
    await h.drain()
    assert h.invoker.batches == [["0", "1", "2"], ["3", "4", "5"], ["6"]]
    assert h.invoker.backlogs == [True, False, False]
    await h.check()


async def until_active(invoker: ScriptedInvoker, n: int) -> None:
    from tests.pipeline.fakes import until

    await until(lambda: invoker.active >= n, what=f"{n} invokes in flight")


async def test_retries_then_on_failure_destination_and_lane_moves_on(make: MakeHarness) -> None:
    dest = RecordingDestination()
    h = make(STREAM, fails_on("1"), on_failure=dest, batch_size=3, maximum_retry_attempts=2)
    batch = records(6)
    await h.put(batch)
    await h.drain()
    assert h.invoker.batches == [["0", "1", "2"]] * 3 + [["3", "4", "5"]]
    assert h.source.acked == ["0", "1", "2", "3", "4", "5"]
    assert h.source.log[0] == ("ack", ["0", "1", "2"])
    [failure] = dest.records
    context = failure["requestContext"]
    assert context["condition"] == "RetryAttemptsExhausted"
    assert context["approximateInvokeCount"] == 3
    # The same ARN the function sees as context.invoked_function_arn.
    assert context["functionArn"] == function_arn("f")
    assert context["requestId"]
    assert failure["responseContext"] == {
        "statusCode": 200,
        "executedVersion": "$LATEST",
        "functionError": "Unhandled",
    }
    assert failure["version"] == "1.0"
    assert failure["timestamp"].endswith("Z")
    assert failure["FakeBatchInfo"] == {
        "startSequenceNumber": "0",
        "endSequenceNumber": "2",
        "batchSize": 3,
    }
    assert failure["payload"] == {"Records": [r.data for r in batch[:3]]}
    assert h.pipeline.counters.retries == 2
    await h.check()


async def test_zero_retries_sends_after_the_first_failure(make: MakeHarness) -> None:
    dest = RecordingDestination()
    h = make(STREAM, fails_on("0"), on_failure=dest, batch_size=1, maximum_retry_attempts=0)
    await h.put(records(2))
    await h.drain()
    assert h.invoker.batches == [["0"], ["1"]]
    assert dest.records[0]["requestContext"]["approximateInvokeCount"] == 1
    await h.check()


async def test_without_destination_exhausted_records_are_dropped(make: MakeHarness) -> None:
    h = make(STREAM, fails_on("0"), batch_size=1, maximum_retry_attempts=1)
    await h.put(records(2))
    await h.drain()
    assert h.source.acked == ["0", "1"]
    await h.check()


async def test_old_records_go_to_the_destination_without_invoke(make: MakeHarness) -> None:
    dest = RecordingDestination()
    h = make(STREAM, on_failure=dest, batch_size=10, maximum_record_age=60)
    old = [record(i, arrival=time.time() - 100) for i in range(3)]
    await h.put([*old, record(3)])
    await h.drain()
    assert h.invoker.batches == [["3"]]
    [failure] = dest.records
    assert failure["requestContext"]["condition"] == "RecordAgeExceeded"
    assert failure["requestContext"]["approximateInvokeCount"] == 0
    assert dest.payload_ids == [["0", "1", "2"]]
    assert h.source.acked == ["0", "1", "2", "3"]
    await h.check()


async def test_record_ages_out_while_retrying(make: MakeHarness) -> None:
    dest = RecordingDestination()
    h = make(STREAM, fails_on("0"), on_failure=dest, maximum_record_age=0.05)
    await h.put(records(1))
    await h.drain()
    [failure] = dest.records
    assert failure["requestContext"]["condition"] == "RecordAgeExceeded"
    assert failure["requestContext"]["approximateInvokeCount"] >= 1
    assert failure["responseContext"]["functionError"] == "Unhandled"
    await h.check()


async def test_bisect_isolates_the_poison_record(make: MakeHarness) -> None:
    dest = RecordingDestination()
    h = make(
        STREAM,
        fails_on("5"),
        on_failure=dest,
        batch_size=8,
        bisect_batch_on_function_error=True,
        maximum_retry_attempts=1,
    )
    await h.put(records(8))
    await h.drain()
    assert dest.payload_ids == [["5"]]
    assert dest.records[0]["requestContext"]["condition"] == "RetryAttemptsExhausted"
    delivered = [i for batch in h.invoker.batches if "5" not in batch for i in batch]
    assert delivered == ["0", "1", "2", "3", "4", "6", "7"]
    assert h.source.acked == [str(i) for i in range(8)]
    await h.check()


async def test_partial_response_checkpoints_before_first_failure(make: MakeHarness) -> None:
    seen_acks: list[list[str]] = []

    def handler(event: dict[str, Any]) -> InvokeResult:
        seen_acks.append(list(h.source.acked))
        return partial("2", "4") if len(seen_acks) == 1 else ok()

    h = make(STREAM, ScriptedInvoker(handler), batch_size=5, report_batch_item_failures=True)
    await h.put(records(5))
    await h.drain()
    assert h.invoker.batches == [["0", "1", "2", "3", "4"], ["2", "3", "4"]]
    assert seen_acks == [[], ["0", "1"]]
    assert h.source.log == [("ack", ["0", "1"]), ("ack", ["2", "3", "4"])]
    await h.check()


async def test_partial_response_exhausted_sends_the_failed_suffix(make: MakeHarness) -> None:
    dest = RecordingDestination()
    invoker = ScriptedInvoker(lambda event: partial(event_ids(event)[-1]))
    h = make(
        STREAM,
        invoker,
        on_failure=dest,
        batch_size=4,
        report_batch_item_failures=True,
        maximum_retry_attempts=1,
    )
    await h.put(records(4))
    await h.drain()
    assert invoker.batches == [["0", "1", "2", "3"], ["3"]]
    assert dest.payload_ids == [["3"]]
    assert h.source.acked == ["0", "1", "2", "3"]
    await h.check()


async def test_malformed_partial_response_fails_the_whole_batch(make: MakeHarness) -> None:
    bad = ok({"batchItemFailures": [{"itemIdentifier": "not-in-batch"}]})
    h = make(STREAM, ScriptedInvoker([bad]), batch_size=3, report_batch_item_failures=True)
    await h.put(records(3))
    await h.drain()
    assert h.invoker.batches == [["0", "1", "2"]] * 2
    assert h.source.log == [("ack", ["0", "1", "2"])]
    await h.check()


async def test_partial_response_ignored_without_report_batch_item_failures(
    make: MakeHarness,
) -> None:
    h = make(STREAM, ScriptedInvoker([partial("1")]), batch_size=3)
    await h.put(records(3))
    await h.drain()
    assert h.invoker.batches == [["0", "1", "2"]]
    await h.check()


async def test_filtered_records_are_acked_in_order_with_their_lane(make: MakeHarness) -> None:
    h = make(STREAM, ScriptedInvoker([error()]), matcher=SkipMatcher(), batch_size=1)
    batch = [record(0), record(1, skip=1), record(2), record(3, skip=1), record(4, skip=1)]
    await h.put(batch)
    await h.drain()
    assert h.invoker.batches == [["0"], ["0"], ["2"]]
    assert h.source.acked == ["0", "1", "2", "3", "4"]
    assert h.pipeline.counters.filtered == 3
    await h.check()


async def test_a_lane_of_only_filtered_records_is_acked_without_invoke(
    make: MakeHarness,
) -> None:
    h = make(STREAM, matcher=SkipMatcher(), batch_size=10)
    await h.put([record(i, skip=1) for i in range(3)])
    await h.drain()
    assert h.invoker.events == []
    assert h.source.acked == ["0", "1", "2"]
    await h.check()


async def test_throttles_and_transport_errors_do_not_spend_retries(make: MakeHarness) -> None:
    dest = RecordingDestination()
    script = [throttle()] * 5 + [transport()] * 2 + [ok()]
    h = make(STREAM, ScriptedInvoker(script), on_failure=dest, maximum_retry_attempts=0)
    await h.put(records(1))
    await h.drain()
    assert dest.records == []
    assert len(h.invoker.events) == 8
    assert h.pipeline.counters.throttles == 7
    assert h.source.acked == ["0"]
    assert h.reports[-1] == "OK"
    assert any(r.startswith("PROBLEM: function throttled") for r in h.reports)
    await h.check()


async def test_an_invoker_that_raises_is_a_transport_error(make: MakeHarness) -> None:
    calls = 0

    def handler(event: dict[str, Any]) -> InvokeResult:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise ConnectionError("reset")
        return ok()

    h = make(STREAM, ScriptedInvoker(handler), maximum_retry_attempts=0)
    await h.put(records(1))
    await h.drain()
    assert calls == 3
    await h.check()


async def test_throttled_until_expired_goes_to_destination(make: MakeHarness) -> None:
    dest = RecordingDestination()
    h = make(
        STREAM,
        ScriptedInvoker(lambda event: throttle()),
        on_failure=dest,
        maximum_record_age=0.05,
    )
    await h.put(records(1))
    await h.drain()
    assert dest.records[0]["requestContext"]["condition"] == "RecordAgeExceeded"
    await h.check()


async def test_destination_down_blocks_the_lane_then_proceeds(make: MakeHarness) -> None:
    dest = RecordingDestination(failures=3)
    blocked_until_sent: list[int] = []

    def handler(event: dict[str, Any]) -> InvokeResult:
        if event_ids(event) == ["0"]:
            return error()
        blocked_until_sent.append(len(dest.records))
        return ok()

    h = make(
        STREAM, ScriptedInvoker(handler), on_failure=dest, batch_size=1, maximum_retry_attempts=0
    )
    await h.put(records(3))
    await h.drain()
    assert dest.attempts == 4
    assert dest.payload_ids == [["0"]]
    assert blocked_until_sent == [1, 1]
    assert h.source.acked == ["0", "1", "2"]
    problems = [i for i, r in enumerate(h.reports) if "on-failure destination unavailable" in r]
    assert problems
    assert "OK" in h.reports[problems[-1] :]
    assert h.pipeline.status == "OK"
    await h.check()


async def test_on_success_destination(make: MakeHarness) -> None:
    dest = RecordingDestination()
    h = make(STREAM, ScriptedInvoker([ok({"done": True})]), on_success=dest, batch_size=2)
    await h.put(records(2))
    await h.drain()
    [success] = dest.records
    assert success["requestContext"]["condition"] == "Success"
    assert success["requestContext"]["approximateInvokeCount"] == 1
    assert success["responsePayload"] == {"done": True}
    assert dest.payload_ids == [["0", "1"]]
    assert h.source.acked == ["0", "1"]
    await h.check()


async def test_acks_are_retried_while_the_source_fails(make: MakeHarness) -> None:
    from tests.pipeline.fakes import FakeSource

    h = make(STREAM, source=FakeSource(STREAM, ack_failures=2), batch_size=2)
    await h.put(records(4))
    await h.drain()
    assert h.source.acked == ["0", "1", "2", "3"]
    assert any("cannot acknowledge" in r for r in h.reports)
    await h.check()


async def test_batches_respect_the_payload_limit(make: MakeHarness) -> None:
    mb = 1024 * 1024
    h = make(STREAM, batch_size=10)
    await h.put(records(5, size=2 * mb))
    await h.drain()
    assert [len(b) for b in h.invoker.batches] == [2, 2, 1]
    await h.check()


async def test_batching_window_waits_for_more_records(make: MakeHarness) -> None:
    h = make(STREAM, batch_size=3, maximum_batching_window=30)
    await h.put(records(2))
    for _ in range(20):
        await asyncio.sleep(0)
    assert h.invoker.events == []
    await h.put(records(2, start=2))
    await h.drain(3)
    assert h.invoker.batches == [["0", "1", "2"]]
    await h.pipeline.stop(timeout=1)
    await h.check(unresolved=["3"])


async def test_a_record_over_the_payload_limit_goes_to_the_destination(
    make: MakeHarness,
) -> None:
    dest = RecordingDestination()
    h = make(STREAM, on_failure=dest, batch_size=10)
    big = record(1, size=7 * 1024 * 1024)
    await h.put([record(0), big, record(2)])
    await h.drain()
    assert h.invoker.batches == [["0"], ["2"]]
    [failure] = dest.records
    assert failure["requestContext"]["condition"] == "PayloadTooLarge"
    assert failure["responseContext"]["statusCode"] == 413
    assert dest.payload_ids == [["1"]]
    assert h.source.acked == ["0", "1", "2"]
    await h.check()


async def test_batching_window_expiry_cuts_a_short_batch(make: MakeHarness) -> None:
    h = make(STREAM, batch_size=10, maximum_batching_window=0.05)
    started = time.monotonic()
    await h.put(records(2))
    await h.drain()
    assert time.monotonic() - started >= 0.04
    assert h.invoker.batches == [["0", "1"]]
    await h.check()
