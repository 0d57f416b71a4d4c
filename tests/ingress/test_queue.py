"""The durable asynchronous queue: events committed by ``enqueue`` reach the target mapping's
pipeline with Lambda's asynchronous semantics, are deleted once delivered, and are shared by
replicas (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, cast

import pytest

from connectors.directory import DirectorySource
from router.abc import SourceContext
from router.cli import main
from router.config.convert import IngressSettings
from router.functions import Functions
from router.ingress import AsyncQueue, Ingress, IngressListener, mapping_target
from router.ingress.source import PushedSource
from router.models import InvokeResult, MappingConfig, PluginSettings, QueuedEvent, SourceSpec
from router.pipeline import Pipeline
from router.store import SQLStore, connect
from tests.pipeline.fakes import (
    FAST,
    RecordingDestination,
    ScriptedInvoker,
    error,
    ok,
    throttle,
    transport,
    until,
)
from tests.store.helpers import external_execute

SCALE = 0.01
"""``router.ingress.retry_delay_scale``: Lambda's 1 and 2 minutes become 0.6 s and 1.2 s."""


class HookSettings(PluginSettings):
    pass


class HookSource(PushedSource):
    """A front-end with nothing to serve: it only delivers its mapping's queued events."""

    Settings = HookSettings
    traits = DirectorySource.traits


def mapping(**settings: Any) -> MappingConfig:
    values: dict[str, Any] = {
        "batch_size": 1,
        "maximum_retry_attempts": 2,
        "maximum_record_age": 21600,
    }
    values.update(settings)
    return MappingConfig(
        name="hook",
        uuid="6c3b2a7e-0000-4000-8000-000000000001",
        function="f",
        source=SourceSpec(type="hook", settings=HookSettings()),
        **values,
    )


@contextlib.asynccontextmanager
async def replica(
    store: SQLStore,
    invoker: ScriptedInvoker,
    *,
    name: str = "r1",
    config: MappingConfig | None = None,
    on_failure: RecordingDestination | None = None,
    on_success: RecordingDestination | None = None,
    lease_timeout: float = 30.0,
    capacity: int | None = None,
) -> AsyncIterator[AsyncQueue]:
    """One router replica's queue, with the mapping's pipeline running on it."""
    config = config or mapping()
    async with AsyncQueue(
        store, replica_id=name, lease_timeout=lease_timeout, poll_interval=0.05
    ) as queue:
        ingress = Ingress(
            settings=IngressSettings(retry_delay_scale=SCALE),
            listener=cast(IngressListener, None),
            functions=cast(Functions, None),
            queue=queue,
        )
        source = HookSource(
            HookSettings(),
            SourceContext(mapping=config, store=store, replica_id=name, ingress=ingress),
        )
        pipeline = Pipeline(
            mapping=config,
            function=invoker.function,
            source=source,
            invoker=invoker,
            on_failure=on_failure,
            on_success=on_success,
            backoff=FAST,
            restart_backoff=FAST,
            capacity=capacity,
        )
        pipeline.start()
        try:
            yield queue
        finally:
            await pipeline.stop(5.0)


async def waiting(store: SQLStore) -> int:
    return sum(d.events for d in await store.queue_depths())


async def test_queued_events_are_delivered_once_and_deleted(store: SQLStore) -> None:
    invoker = ScriptedInvoker()
    success = RecordingDestination()
    async with replica(store, invoker, on_success=success) as queue:
        ids = await asyncio.gather(*(queue.enqueue(mapping(), {"n": n}) for n in range(20)))
        assert len(set(ids)) == 20
        await until(lambda: len(success.records) == 20, what="20 deliveries")
        await until(lambda: queue.held == 0, what="acks")
    assert sorted(e["n"] for e in invoker.events) == list(range(20))
    assert await waiting(store) == 0
    record = success.records[0]
    assert record["requestContext"]["condition"] == "Success"
    assert record["requestContext"]["approximateInvokeCount"] == 1
    assert record["requestPayload"] in [{"n": n} for n in range(20)]
    assert record["responsePayload"] is None


async def test_an_event_is_committed_before_enqueue_returns(store: SQLStore) -> None:
    async with AsyncQueue(store, replica_id="r1") as queue:
        event_id = await queue.enqueue("orders", b'{"order": 1}', attributes={"a": "b"})
        events = await store.list_events()
    assert [(e.id, e.target, e.payload, e.attributes) for e in events] == [
        (event_id, "function:orders", '{"order": 1}', {"a": "b"})
    ]


async def test_failures_are_retried_twice_then_go_to_on_failure(store: SQLStore) -> None:
    invoker = ScriptedInvoker([error("one"), error("two"), error("three")])
    failure = RecordingDestination()
    async with replica(store, invoker, on_failure=failure) as queue:
        await queue.enqueue(mapping(), {"n": 1})
        await until(lambda: len(failure.records) == 1, what="the on-failure record")
        await until(lambda: queue.held == 0, what="the ack")
    assert len(invoker.events) == 3
    record = failure.records[0]
    assert record["requestContext"]["condition"] == "RetriesExhausted"
    assert record["requestContext"]["approximateInvokeCount"] == 3
    assert record["requestPayload"] == {"n": 1}
    assert record["responsePayload"]["errorMessage"] == "three"
    assert record["responseContext"]["functionError"] == "Unhandled"
    assert await waiting(store) == 0


async def test_zero_retries(store: SQLStore) -> None:
    invoker = ScriptedInvoker([error()])
    failure = RecordingDestination()
    config = mapping(maximum_retry_attempts=0)
    async with replica(store, invoker, config=config, on_failure=failure) as queue:
        await queue.enqueue(config, {"n": 1})
        await until(lambda: len(failure.records) == 1, what="the on-failure record")
    assert len(invoker.events) == 1


async def test_an_event_older_than_the_maximum_age_is_not_invoked(store: SQLStore) -> None:
    invoker = ScriptedInvoker()
    failure = RecordingDestination()
    config = mapping(maximum_record_age=60)
    async with AsyncQueue(store, replica_id="r0") as queue:
        await queue.enqueue(config, {"n": 1})
    # An hour in the queue (the router was down).
    shift = (
        "enqueued_at = enqueued_at - interval '1 hour'"
        if store.backend == "postgresql"
        else "enqueued_at = datetime(enqueued_at, '-1 hour')"
    )
    await external_execute(store, f"UPDATE async_events SET {shift}")
    async with replica(store, invoker, config=config, on_failure=failure):
        await until(lambda: len(failure.records) == 1, what="the on-failure record")
    assert invoker.events == []
    assert failure.records[0]["requestContext"]["condition"] == "EventAgeExceeded"
    assert failure.records[0]["requestContext"]["approximateInvokeCount"] == 0
    assert await waiting(store) == 0


class Timed:
    """A handler answering from ``script`` (then ``ok()``) that notes when each attempt came."""

    def __init__(self, *script: InvokeResult) -> None:
        self.script = list(script)
        self.times: list[float] = []

    def __call__(self, event: dict[str, Any]) -> InvokeResult:
        self.times.append(time.time())
        return self.script.pop(0) if self.script else ok()

    def gaps(self) -> list[float]:
        return [b - a for a, b in itertools.pairwise(self.times)]


# Waits end no earlier than asked, up to the clocks' resolution.
SLACK = 0.005


async def test_function_errors_are_retried_after_one_then_two_minutes(store: SQLStore) -> None:
    handler = Timed(error("one"), error("two"), error("three"))
    failure = RecordingDestination()
    async with replica(store, ScriptedInvoker(handler), on_failure=failure) as queue:
        enqueued = time.time()
        await queue.enqueue(mapping(), {"n": 1})
        await until(lambda: len(handler.times) == 1, what="the first attempt")
        # The next attempt is due 1 (then 2) minutes, scaled, after the last one, and the
        # store says so.
        (event,) = await eventually_stored(store, lambda e: e.attempts in (1, 2))
        assert event.retry_at is not None
        delay = 60 * SCALE if event.attempts == 1 else 120 * SCALE
        assert event.retry_at.timestamp() >= handler.times[event.attempts - 1] + delay - SLACK
        await until(lambda: len(failure.records) == 1, timeout=15, what="the on-failure record")
    first, second = handler.gaps()
    assert first >= 60 * SCALE - SLACK
    assert second >= 120 * SCALE - SLACK
    assert handler.times[0] - enqueued < 60 * SCALE  # the first attempt does not wait
    record = failure.records[0]
    assert record["requestContext"]["condition"] == "RetriesExhausted"
    assert record["requestContext"]["approximateInvokeCount"] == 3
    assert record["responsePayload"]["errorMessage"] == "three"


async def test_throttles_back_off_from_one_second_and_stop_at_the_event_age(
    store: SQLStore,
) -> None:
    handler = Timed(*[throttle()] * 1000)
    failure = RecordingDestination()
    # No retries: throttles do not spend them. 60 s of age, scaled: 0.6 s.
    config = mapping(maximum_retry_attempts=0, maximum_record_age=60)
    async with replica(store, ScriptedInvoker(handler), config=config, on_failure=failure) as q:
        enqueued = time.time()
        await q.enqueue(config, {"n": 1})
        await until(lambda: len(failure.records) == 1, timeout=15, what="the on-failure record")
        given_up = time.time()
    assert given_up - enqueued >= 60 * SCALE
    gaps = handler.gaps()
    # 1 s, 2 s, 4 s ... (scaled) between attempts; the last wait ends with the event's age.
    for n, gap in enumerate(gaps[:-1]):
        assert gap >= SCALE * 2**n - SLACK, gaps
    # Doubling from 10 ms, 0.6 s hold at most 7 attempts (the router's own backoff from
    # ROUTER_RETRY_BASE_DELAY would make more).
    assert 2 <= len(handler.times) <= 7, gaps
    record = failure.records[0]
    assert record["requestContext"]["condition"] == "EventAgeExceeded"
    assert record["requestContext"]["approximateInvokeCount"] == 0
    assert await waiting(store) == 0


async def test_throttles_and_function_errors_keep_their_own_timing(store: SQLStore) -> None:
    # A throttle, then a system error (the invoker unreachable), back off as one.
    handler = Timed(throttle(), transport(), error("one"), throttle(), ok("done"))
    success = RecordingDestination()
    config = mapping(maximum_retry_attempts=1)
    async with replica(store, ScriptedInvoker(handler), config=config, on_success=success) as q:
        await q.enqueue(config, {"n": 1})
        await until(lambda: len(success.records) == 1, timeout=15, what="the on-success record")
    assert len(handler.times) == 5
    after_throttle, after_second_throttle, after_error, after_throttle_again = handler.gaps()
    assert after_throttle >= 1 * SCALE - SLACK
    assert after_second_throttle >= 2 * SCALE - SLACK
    assert after_error >= 60 * SCALE - SLACK
    # The throttle after the retry starts its backoff from 1 s again.
    assert after_throttle_again >= 1 * SCALE - SLACK
    record = success.records[0]
    # The one function error spent the one retry; the throttles spent none.
    assert record["requestContext"]["approximateInvokeCount"] == 2
    assert record["responsePayload"] == "done"


async def eventually_stored(store: SQLStore, check: Callable[[QueuedEvent], bool]) -> list[Any]:
    deadline = time.monotonic() + 10
    while True:
        events = await store.list_events()
        if events and all(check(e) for e in events):
            return events
        assert time.monotonic() < deadline, events
        await asyncio.sleep(0.01)


async def test_an_event_queued_while_stopped_is_delivered_after_start(store: SQLStore) -> None:
    async with AsyncQueue(store, replica_id="r0") as queue:
        await queue.enqueue(mapping(), {"n": 7})
    invoker = ScriptedInvoker()
    async with replica(store, invoker):
        await until(lambda: len(invoker.events) == 1, what="the delivery")
    assert invoker.events == [{"n": 7}]


async def test_a_stopping_replica_gives_back_what_it_did_not_deliver(store: SQLStore) -> None:
    invoker = ScriptedInvoker()
    invoker.gate.clear()  # every invocation hangs
    async with replica(store, invoker) as queue:
        await queue.enqueue(mapping(), {"n": 1})
        await until(lambda: len(invoker.events) == 1, what="the invocation")
    # Not delivered: released for anyone to claim at once (no wait for the lease).
    events = await store.list_events()
    assert [(e.lease_owner, e.deliveries) for e in events] == [(None, 1)]
    other = ScriptedInvoker()
    async with replica(store, other, name="r2"):
        await until(lambda: len(other.events) == 1, what="the delivery by r2")
    assert await waiting(store) == 0


async def test_two_replicas_share_the_queue_without_double_delivery(store: SQLStore) -> None:
    delivered: list[int] = []

    def handler(event: dict[str, Any]) -> InvokeResult:
        delivered.append(event["n"])
        return ok()

    first, second = ScriptedInvoker(handler), ScriptedInvoker(handler)
    for invoker in (first, second):
        invoker.gate.clear()  # held until both replicas hold events
    async with (
        replica(store, first, name="r1", capacity=20) as q1,
        replica(store, second, name="r2", capacity=20) as q2,
    ):
        queues = (q1, q2)
        await asyncio.gather(*(queues[n % 2].enqueue(mapping(), {"n": n}) for n in range(200)))
        # Each replica holds at most 20: the other one claims what is left.
        await until(lambda: q1.held > 0 and q2.held > 0, timeout=10, what="both claiming")
        first.gate.set()
        second.gate.set()
        await until(lambda: len(delivered) >= 200, timeout=30, what="200 deliveries")
        await until(lambda: q1.held + q2.held == 0, what="acks")
    assert sorted(delivered) == list(range(200))
    assert first.events and second.events
    assert await waiting(store) == 0


async def test_a_dead_replicas_events_are_claimed_when_its_lease_runs_out(
    store: SQLStore,
) -> None:
    async with AsyncQueue(store, replica_id="r0") as queue:
        event_id = await queue.enqueue(mapping(), {"n": 1})
    # r-dead claimed it and died without releasing it.
    assert len(await store.claim_events(mapping_target(mapping()), "r-dead", 10, 1.0)) == 1
    invoker = ScriptedInvoker()
    async with replica(store, invoker, name="r2"):
        await asyncio.sleep(0.3)
        assert invoker.events == []  # still leased
        await until(lambda: len(invoker.events) == 1, what="the delivery after the lease")
    assert [e for e in await store.list_events() if e.id == event_id] == []


async def test_depth_and_age_metrics(store: SQLStore) -> None:
    async with AsyncQueue(store, replica_id="r1", depth_interval=0.05) as queue:
        await queue.enqueue("orders", {"n": 1})
        await queue.enqueue(mapping(), {"n": 2})
        await until(lambda: len(queue.depths) == 2, what="a reading of the depth")
        families = {f.name: f for f in queue.metrics({mapping().uuid: "hook"})}
    events = families["router_queue_events"].samples
    assert sorted((labels["target"], value) for _, labels, value in events) == [
        ("function orders", 1),
        ("mapping hook", 1),
    ]
    ages = [value for _, _, value in families["router_queue_oldest_event_age_seconds"].samples]
    assert len(ages) == 2 and all(0 <= age < 60 for age in ages)
    assert families["router_queue_accepted_total"].samples[0][2] == 2


def test_the_queue_cli_lists_and_purges(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'router.db'}"

    async def fill() -> None:
        store = await connect(url)
        try:
            async with AsyncQueue(store, replica_id="r1") as queue:
                await queue.enqueue("orders", {"order": 1})
                await queue.enqueue("orders", {"order": 2})
                await queue.enqueue("audit", {"order": 3})
        finally:
            await store.aclose()

    asyncio.run(fill())
    common = ["--store", url, "--config", str(tmp_path / "none")]
    assert main(["queue", "list", *common]) == 0
    out = capsys.readouterr().out
    assert re.search(r"function orders\s+2\s", out), out
    assert re.search(r"function audit\s+1\s", out), out
    assert '{"order":2}' in out
    assert main(["queue", "list", "--function", "audit", *common]) == 0
    out = capsys.readouterr().out
    assert "orders" not in out and '{"order":3}' in out
    assert main(["queue", "purge", *common]) == 2
    assert "--all" in capsys.readouterr().err
    assert main(["queue", "purge", "--function", "orders", *common]) == 0
    assert capsys.readouterr().out.strip() == "purged 2 queued events of function orders"
    assert main(["queue", "purge", "--all", *common]) == 0
    assert capsys.readouterr().out.strip() == "purged 1 queued events"


async def test_a_long_delivery_keeps_its_lease(store: SQLStore) -> None:
    first, second = ScriptedInvoker(), ScriptedInvoker()
    for invoker in (first, second):
        invoker.gate.clear()  # an invocation lasts until its gate opens
    async with (
        replica(store, first, name="r1", lease_timeout=0.6) as q1,
        replica(store, second, name="r2", lease_timeout=0.6) as q2,
    ):
        await q1.enqueue(mapping(), {"n": 1})
        await until(lambda: len(first.events) + len(second.events) == 1, what="the invocation")
        await asyncio.sleep(2.0)  # three leases long: renewed meanwhile
        assert len(first.events) + len(second.events) == 1
        first.gate.set()
        second.gate.set()
        await until(lambda: q1.held + q2.held == 0, what="the ack")
    assert len(first.events) + len(second.events) == 1
    assert await waiting(store) == 0
