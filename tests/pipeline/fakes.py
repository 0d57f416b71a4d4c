"""Test doubles for the pipeline core: an in-memory source, a scripted invoker, recording
destinations, and helpers that wait for conditions and check record accounting."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any, cast

from connectors.aws.sqs import STANDARD_TRAITS
from connectors.directory import DirectorySource
from connectors.kafka.source import KafkaSource
from router.abc import (
    Destination,
    DestinationContext,
    Invoker,
    InvokerContext,
    Sink,
    Source,
    SourceContext,
    SourceTraits,
    Store,
)
from router.errors import DestinationError, SourceError
from router.models import (
    FunctionConfig,
    Invocation,
    InvokeResult,
    MappingConfig,
    Outcome,
    PluginSettings,
    Record,
    SourceKind,
    SourceSpec,
)
from router.pipeline import Backoff, Pipeline

NO_STORE = cast(Store, None)


class SkipMatcher:
    """Matches records whose body has no ``skip`` key."""

    fields = None

    def matches(self, event: Any) -> bool:
        return "skip" not in event["body"]


class NothingMatcher:
    """Matches no record."""

    fields = None

    def matches(self, event: Any) -> bool:
        return False


FAST = Backoff(base=0.001, cap=0.01)

# The traits of a real source of each kind: the pipeline sees what it sees in production. The
# stream retries as Kinesis does, without Kafka's cap of 10 retries when a mapping has an
# on-failure destination (test_rules checks the cap).
TRAITS = {
    SourceKind.STREAM: replace(KafkaSource.traits, retry_cap_with_destination=None),
    SourceKind.QUEUE: STANDARD_TRAITS,
    SourceKind.ASYNC: DirectorySource.traits,
}


class FakeSettings(PluginSettings):
    kind: SourceKind = SourceKind.STREAM


def record(
    ident: int | str,
    lane: Any = "p0",
    *,
    size: int = 100,
    arrival: float | None = None,
    **data: Any,
) -> Record:
    """A record whose identifier is ``str(ident)``; ``data`` goes into the record body."""
    name = str(ident)
    return Record(
        lane=lane,
        position=name,
        data={"messageId": name, "body": data or {"n": name}},
        identifier=name,
        size=size,
        arrival=time.time() if arrival is None else arrival,
    )


def records(n: int, lane: Any = "p0", start: int = 0, **kw: Any) -> list[Record]:
    return [record(i, lane, **kw) for i in range(start, start + n)]


def ids(batch: Iterable[Record]) -> list[str]:
    return [r.identifier for r in batch]


def event_ids(event: Mapping[str, Any]) -> list[str]:
    return [str(r["messageId"]) for r in event["Records"]]


class FakeSource(Source):
    """Records fed by the test; acks and releases recorded in call order."""

    Settings = FakeSettings

    def __init__(self, kind: SourceKind = SourceKind.STREAM, *, ack_failures: int = 0) -> None:
        mapping = MappingConfig(
            name="m", function="f", source=SourceSpec(type="fake", settings=FakeSettings())
        )
        super().__init__(
            FakeSettings(kind=kind), SourceContext(mapping=mapping, store=NO_STORE, replica_id="r1")
        )
        self.queue: asyncio.Queue[list[Record]] = asyncio.Queue()
        self.log: list[tuple[str, list[str]]] = []
        self.acked: list[str] = []
        self.released: list[str] = []
        self.ack_failures = ack_failures
        self.closed = False
        self.running = False
        self.release_gate: asyncio.Event | None = None
        """When set to an unset Event, releases wait on it."""

    @classmethod
    def traits_for(cls, settings: Any) -> SourceTraits:
        return TRAITS[settings.kind]

    def feed(self, batch: Sequence[Record]) -> None:
        self.queue.put_nowait(list(batch))

    async def run(self, sink: Sink) -> None:
        self.running = True
        try:
            while True:
                await sink.put(await self.queue.get())
        finally:
            self.running = False

    def build_event(self, records: Sequence[Record]) -> dict[str, Any]:
        return {"Records": [r.data for r in records]}

    async def ack(self, records: Sequence[Record]) -> None:
        await asyncio.sleep(0)
        if self.ack_failures > 0:
            self.ack_failures -= 1
            raise SourceError("broker unreachable")
        self.log.append(("ack", ids(records)))
        self.acked.extend(ids(records))

    async def release(self, records: Sequence[Record]) -> None:
        await asyncio.sleep(0)
        if self.release_gate is not None:
            await self.release_gate.wait()
        self.log.append(("release", ids(records)))
        self.released.extend(ids(records))

    def batch_info(self, records: Sequence[Record]) -> dict[str, Any]:
        return {
            "FakeBatchInfo": {
                "startSequenceNumber": records[0].identifier,
                "endSequenceNumber": records[-1].identifier,
                "batchSize": len(records),
            }
        }

    async def aclose(self) -> None:
        self.closed = True


def ok(payload: Any = None) -> InvokeResult:
    return InvokeResult(outcome=Outcome.SUCCESS, payload=payload)


def error(message: str = "boom") -> InvokeResult:
    return InvokeResult(
        outcome=Outcome.FUNCTION_ERROR,
        function_error="Unhandled",
        payload={"errorType": "Exception", "errorMessage": message, "stackTrace": []},
    )


def throttle() -> InvokeResult:
    return InvokeResult(outcome=Outcome.THROTTLED, status_code=429, detail="rate exceeded")


def transport() -> InvokeResult:
    return InvokeResult(outcome=Outcome.TRANSPORT_ERROR, status_code=0, detail="refused")


def partial(*failed: str) -> InvokeResult:
    return ok({"batchItemFailures": [{"itemIdentifier": f} for f in failed]})


Handler = Callable[[dict[str, Any]], InvokeResult | Awaitable[InvokeResult]]


class ScriptedInvoker(Invoker):
    """Answers each invoke from ``script`` (a list consumed in order, then ``ok()``) or from a
    callable of the event. Records every event and the peak number of concurrent invokes."""

    Settings = PluginSettings

    def __init__(self, script: Sequence[InvokeResult] | Handler = ()) -> None:
        function = FunctionConfig(name="f", invoker="fake", settings=PluginSettings())
        super().__init__(
            function, InvokerContext(store=NO_STORE, report_init_error=lambda _message: None)
        )
        self.script = list(script) if not callable(script) else []
        self.handler = script if callable(script) else None
        self.events: list[dict[str, Any]] = []
        self.backlogs: list[bool] = []
        """Each invocation's ``backlog``: the next full batch of its lane already waiting."""
        self.active = 0
        self.peak = 0
        self.gate = asyncio.Event()
        """Invokes wait on it: ``gate.clear()`` holds batches in flight."""
        self.gate.set()

    @property
    def batches(self) -> list[list[str]]:
        return [event_ids(e) for e in self.events]

    async def invoke(self, invocation: Invocation) -> InvokeResult:
        self.events.append(invocation.event)
        self.backlogs.append(invocation.backlog)
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            await asyncio.sleep(0)
            await self.gate.wait()
            if self.handler is not None:
                result = self.handler(invocation.event)
                if not isinstance(result, InvokeResult):
                    result = await result
                return result
            return self.script.pop(0) if self.script else ok()
        finally:
            self.active -= 1


class RecordingDestination(Destination):
    """Accepts records after refusing the first ``failures`` sends."""

    Settings = PluginSettings

    def __init__(self, failures: int = 0) -> None:
        context = DestinationContext(
            store=NO_STORE, mapping_uuid="u", mapping_name="m", function_name="f"
        )
        super().__init__(PluginSettings(), context)
        self.failures = failures
        self.attempts = 0
        self.records: list[dict[str, Any]] = []

    async def send(self, record: Mapping[str, Any]) -> None:
        self.attempts += 1
        await asyncio.sleep(0)
        if self.failures > 0:
            self.failures -= 1
            raise DestinationError("queue unreachable")
        self.records.append(dict(record))

    @property
    def payload_ids(self) -> list[list[str]]:
        return [event_ids(r["payload"]) for r in self.records]


async def until(
    condition: Callable[[], bool], timeout: float = 5.0, what: str = "condition"
) -> None:
    """Poll ``condition`` until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.001)


class Harness:
    """A pipeline over the fakes, with the accounting invariant checked at the end: every
    record put is acked, released or left unresolved (dropped / abandoned) exactly once, and
    the pipeline's capacity comes back in full."""

    def __init__(
        self,
        kind: SourceKind = SourceKind.STREAM,
        invoker: ScriptedInvoker | None = None,
        *,
        on_failure: RecordingDestination | None = None,
        on_success: RecordingDestination | None = None,
        capacity: int = 1_000,
        matcher: Any = None,
        source: FakeSource | None = None,
        backoff: Backoff = FAST,
        **mapping: Any,
    ) -> None:
        self.source = source or FakeSource(kind)
        self.invoker = invoker or ScriptedInvoker()
        self.on_failure = on_failure
        self.on_success = on_success
        self.capacity = capacity
        self.reports: list[str] = []
        self.put_ids: list[str] = []
        self.config = MappingConfig(
            name="m",
            function="f",
            source=SourceSpec(type="fake", settings=self.source.settings),
            **mapping,
        )
        self.pipeline = Pipeline(
            mapping=self.config,
            function=self.invoker.function,
            source=self.source,
            invoker=self.invoker,
            matcher=matcher,
            on_failure=on_failure,
            on_success=on_success,
            backoff=backoff,
            report=self.reports.append,
            capacity=capacity,
        )
        self.negative = False
        give = self.pipeline.room.give

        def checked(n: int) -> None:
            give(n)
            self.negative = self.negative or self.pipeline.free() > self.capacity

        self.pipeline.room.give = checked  # type: ignore[method-assign]

    async def put(self, batch: Sequence[Record]) -> None:
        self.put_ids.extend(ids(batch))
        await self.pipeline.put(batch)

    def resolved(self) -> int:
        return len(self.source.acked) + len(self.source.released)

    async def drain(self, n: int | None = None, timeout: float = 5.0) -> None:
        """Wait until ``n`` records (default: all put) are acked or released."""
        want = len(self.put_ids) if n is None else n
        await until(lambda: self.resolved() >= want, timeout, f"{want} records resolved")

    async def check(self, unresolved: Iterable[str] = ()) -> None:
        """The accounting invariant, once the pipeline is idle. ``unresolved``: records
        expected to be neither acked nor released (dropped or abandoned)."""
        p = self.pipeline
        await until(lambda: p.free() >= self.capacity, what="capacity back in full")
        assert p.free() == self.capacity, "records counted as done more than once"
        assert not self.negative, "records counted as done more than once"
        acked, released = self.source.acked, self.source.released
        assert len(acked) == len(set(acked)), f"acked twice: {acked}"
        assert len(released) == len(set(released)), f"released twice: {released}"
        assert not set(acked) & set(released), "acked and released"
        left = sorted(set(self.put_ids) - set(acked) - set(released))
        assert left == sorted(unresolved), f"unresolved records: {left}"
        assert set(acked) | set(released) <= set(self.put_ids)

    def acks_in_lane_order(self, lanes: Mapping[str, Sequence[str]]) -> None:
        """Acks of each lane arrive in record order."""
        for lane_ids in lanes.values():
            members = set(lane_ids)
            got = [i for i in self.source.acked if i in members]
            assert got == [i for i in lane_ids if i in set(got)], got
