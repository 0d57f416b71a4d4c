"""The schedule source on the real store (SQLite and PostgreSQL), with a fake wall clock."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from connectors.schedule.source import EVENT_NAMESPACE, ScheduleSettings, ScheduleSource
from router.abc import SourceContext, Store
from router.lag import Lag, lag_of
from router.models import MappingConfig, Record, SourceKind, SourceSpec
from router.store import SQLStore
from tests.sources.fakes import RecordingSink

T0 = datetime(2024, 1, 1, tzinfo=UTC)


class FakeClock:
    """Wall clock that jumps forward when slept on; parks at ``stop`` until cancelled."""

    def __init__(self, start: datetime, stop: datetime) -> None:
        self.now = start
        self.stop = stop
        self.parked = asyncio.Event()

    def __call__(self) -> datetime:
        return self.now

    async def sleep(self, seconds: float) -> None:
        target = self.now + timedelta(seconds=seconds)
        if target > self.stop:
            self.now = self.stop
            self.parked.set()
            await asyncio.Event().wait()
        self.now = target
        await asyncio.sleep(0)


class LockstepClock(FakeClock):
    """One wall clock for several replicas: time moves only when every replica sleeps, to the
    earliest time one of them waits for, and those due wake in turn order (rotated each
    step), so that each replica is sometimes the first to claim a fire."""

    def __init__(self, start: datetime, stop: datetime, replicas: int) -> None:
        super().__init__(start, stop)
        self.replicas = replicas
        self.sleeping: list[tuple[datetime, asyncio.Future[None]]] = []
        self.parked_count = 0
        self.turn = 0

    async def sleep(self, seconds: float) -> None:
        target = self.now + timedelta(seconds=seconds)
        if target > self.stop:
            self.parked_count += 1
            if self.parked_count == self.replicas:
                self.now = self.stop
                self.parked.set()
            self._advance()
            await asyncio.Event().wait()
        woken: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.sleeping.append((target, woken))
        self._advance()
        await woken

    def _advance(self) -> None:
        if not self.sleeping or len(self.sleeping) + self.parked_count < self.replicas:
            return
        self.now = min(t for t, _ in self.sleeping)
        due = [f for t, f in self.sleeping if t <= self.now]
        self.sleeping = [(t, f) for t, f in self.sleeping if t > self.now]
        self.turn += 1
        k = self.turn % len(due)
        for woken in due[k:] + due[:k]:
            woken.set_result(None)


def make_source(
    store: Store,
    clock: FakeClock,
    *,
    mapping_uuid: str,
    replica: str = "replica-1",
    name: str = "nightly-report",
    **settings: Any,
) -> ScheduleSource:
    parsed = ScheduleSettings.model_validate(settings)
    mapping = MappingConfig(
        name=name,
        function="report",
        source=SourceSpec(type="schedule", settings=parsed),
        uuid=mapping_uuid,
    )
    context = SourceContext(mapping=mapping, store=store, replica_id=replica)
    return ScheduleSource(parsed, context, clock=clock, sleep=clock.sleep)


@contextlib.asynccontextmanager
async def running(source: ScheduleSource, sink: RecordingSink) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(source.run(sink))
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await source.aclose()


async def until(predicate: Callable[[], Awaitable[bool] | bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while True:
            result = predicate()
            if not isinstance(result, bool):
                result = await result
            if result:
                return
            await asyncio.sleep(0.02)


def times(records: list[Record]) -> list[str]:
    return [r.data["time"] for r in records]


@pytest.fixture
def mapping_uuid() -> str:
    return str(uuid.uuid4())


async def test_scheduled_event_shape(store: SQLStore, mapping_uuid: str) -> None:
    clock = FakeClock(T0 + timedelta(seconds=30), T0 + timedelta(minutes=3, seconds=10))
    source = make_source(store, clock, mapping_uuid=mapping_uuid, schedule="rate(1 minute)")
    sink = RecordingSink()
    async with running(source, sink):
        records = await sink.wait_for(3)
        await clock.parked.wait()
    assert times(records) == [
        "2024-01-01T00:01:00Z",
        "2024-01-01T00:02:00Z",
        "2024-01-01T00:03:00Z",
    ]
    first = records[0]
    expected_id = str(uuid.uuid5(EVENT_NAMESPACE, f"{mapping_uuid}:2024-01-01T00:01:00Z"))
    assert first.data == {
        "version": "0",
        "id": expected_id,
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "123456789012",
        "time": "2024-01-01T00:01:00Z",
        "region": "us-east-1",
        "resources": ["arn:aws:scheduler:us-east-1:123456789012:schedule/default/nightly-report"],
        "detail": {},
    }
    assert list(first.data) == [
        "version",
        "id",
        "detail-type",
        "source",
        "account",
        "time",
        "region",
        "resources",
        "detail",
    ]
    assert first.lane == "nightly-report"
    assert first.identifier == expected_id
    assert first.position == T0 + timedelta(minutes=1)
    assert first.size == len(orjson.dumps(first.data))
    assert first.arrival == (T0 + timedelta(minutes=1)).timestamp()
    assert source.build_event([first]) == first.data
    assert ScheduleSource.traits.kind is SourceKind.ASYNC
    assert ScheduleSource.traits.retry_default == 2
    # Each time fired once and was written as claimed and pending until acked.
    assert await store.last_fire(mapping_uuid) == T0 + timedelta(minutes=3)
    pending = await store.get_checkpoints(mapping_uuid)
    assert pending["fire:2024-01-01T00:01:00Z"] == "replica-1"
    await source.ack(records)
    after_ack = await store.get_checkpoints(mapping_uuid)
    assert after_ack == {"delivered": "2024-01-01T00:03:00Z"}


@pytest.mark.parametrize(
    ("configured", "delivered"),
    [
        ({"job": "cleanup", "n": [1, 2]}, {"job": "cleanup", "n": [1, 2]}),
        ('{"from": "string"}', {"from": "string"}),
        ("plain text", "plain text"),
        ([1, 2, 3], [1, 2, 3]),
    ],
)
async def test_input_replaces_the_event(
    sqlite_store: SQLStore, mapping_uuid: str, configured: Any, delivered: Any
) -> None:
    clock = FakeClock(T0, T0 + timedelta(minutes=1, seconds=5))
    source = make_source(
        sqlite_store,
        clock,
        mapping_uuid=mapping_uuid,
        ScheduleExpression="cron(* * * * ? *)",
        Input=configured,
    )
    sink = RecordingSink()
    async with running(source, sink):
        records = await sink.wait_for(1)
    assert source.build_event(records[:1]) == delivered
    assert records[0].data["detail-type"] == "Scheduled Event"  # filters still see the event
    assert records[0].size == len(orjson.dumps(delivered))


async def test_cron_in_time_zone_with_dates(sqlite_store: SQLStore, mapping_uuid: str) -> None:
    clock = FakeClock(datetime(2024, 3, 8, tzinfo=UTC), datetime(2024, 3, 20, tzinfo=UTC))
    source = make_source(
        sqlite_store,
        clock,
        mapping_uuid=mapping_uuid,
        schedule="cron(30 2 * * ? *)",
        timezone="America/New_York",
        start_date="2024-03-09T00:00:00",
        end_date="2024-03-12T12:00:00",
    )
    sink = RecordingSink()
    async with running(source, sink):
        await sink.wait_for(3)
        await until(lambda: source.next_after(clock()) is None)
    # 02:30 does not exist on 2024-03-10 in New York: no fire that day (as AWS).
    assert times(sink.records) == [
        "2024-03-09T07:30:00Z",
        "2024-03-11T06:30:00Z",
        "2024-03-12T06:30:00Z",
    ]


@pytest.mark.parametrize(("catch_up", "expected"), [(3600, 6), (0, 0), (86400, 18)])
async def test_catch_up_after_downtime(
    store: SQLStore,
    mapping_uuid: str,
    caplog: pytest.LogCaptureFixture,
    catch_up: int,
    expected: int,
) -> None:
    # The router last fired at 00:00 and comes back at 03:00:30; fires every 10 minutes.
    assert await store.claim_fire(mapping_uuid, T0, "old-replica")
    clock = FakeClock(T0 + timedelta(hours=3, seconds=30), T0 + timedelta(hours=3, minutes=15))
    source = make_source(
        store,
        clock,
        mapping_uuid=mapping_uuid,
        schedule="cron(0/10 * * * ? *)",
        catch_up=catch_up,
    )
    sink = RecordingSink()
    with caplog.at_level(logging.WARNING, logger="connectors.schedule"):
        async with running(source, sink):
            await clock.parked.wait()
            await sink.wait_for(expected + 1)
    missed = [f"2024-01-01T{h:02d}:{m:02d}:00Z" for h in range(3) for m in range(0, 60, 10)]
    missed = [*missed[1:], "2024-01-01T03:00:00Z"]
    assert times(sink.records) == [*missed[len(missed) - expected :], "2024-01-01T03:10:00Z"]
    skipped = 18 - expected
    if skipped:
        assert f"skipped {skipped} missed fire(s)" in caplog.text
    else:
        assert "skipped" not in caplog.text


async def test_a_schedule_stopped_before_its_first_fire_catches_it_up(
    store: SQLStore, mapping_uuid: str
) -> None:
    # The first run starts at 00:00:30 and stops before 00:10; the router is back at 00:25.
    first_clock = FakeClock(T0 + timedelta(seconds=30), T0 + timedelta(minutes=1))
    first = make_source(
        store, first_clock, mapping_uuid=mapping_uuid, schedule="cron(0/10 * * * ? *)"
    )
    sink = RecordingSink()
    async with running(first, sink):
        await first_clock.parked.wait()
    assert sink.records == []
    clock = FakeClock(T0 + timedelta(minutes=25), T0 + timedelta(minutes=35))
    again = make_source(store, clock, mapping_uuid=mapping_uuid, schedule="cron(0/10 * * * ? *)")
    async with running(again, sink):
        await clock.parked.wait()
        await sink.wait_for(3)
        await again.ack(sink.records)
    assert times(sink.records) == [
        "2024-01-01T00:10:00Z",
        "2024-01-01T00:20:00Z",
        "2024-01-01T00:30:00Z",
    ]
    # Once fires are delivered, catch-up starts from them: the start mark is gone.
    assert await store.get_checkpoints(mapping_uuid) == {"delivered": "2024-01-01T00:30:00Z"}


async def test_at_fires_once(sqlite_store: SQLStore, mapping_uuid: str) -> None:
    clock = FakeClock(T0, T0 + timedelta(days=2))
    source = make_source(
        sqlite_store,
        clock,
        mapping_uuid=mapping_uuid,
        schedule="at(2024-01-01T09:00:00)",
        timezone="Europe/Berlin",
    )
    sink = RecordingSink()
    async with running(source, sink):
        await sink.wait_for(1)
        await until(lambda: source.next_after(clock()) is None)
    assert times(sink.records) == ["2024-01-01T08:00:00Z"]


@pytest.mark.postgres
async def test_two_replicas_fire_each_time_once(pg_store: SQLStore, pg_upgraded_url: str) -> None:
    second_store = SQLStore(pg_upgraded_url)
    await second_store.start()
    mapping = str(uuid.uuid4())
    stop = T0 + timedelta(minutes=40, seconds=30)
    try:
        replicas = []
        # One clock that waits for both replicas, so that neither runs through all 40 fires
        # while the other is still starting.
        clock = LockstepClock(T0, stop, replicas=2)
        for replica, store in (("a", pg_store), ("b", second_store)):
            source = make_source(
                store, clock, mapping_uuid=mapping, replica=replica, schedule="rate(1 minute)"
            )
            replicas.append((source, RecordingSink(), clock))
        async with contextlib.AsyncExitStack() as stack:
            for source, sink, _ in replicas:
                await stack.enter_async_context(running(source, sink))
            for _, _, clock in replicas:
                await clock.parked.wait()
        fired = sorted(times(replicas[0][1].records) + times(replicas[1][1].records))
    finally:
        await second_store.aclose()
    assert fired == [f"2024-01-01T00:{m:02d}:00Z" for m in range(1, 41)]
    # Both replicas really raced (each won some of the 40 claims).
    assert replicas[0][1].records
    assert replicas[1][1].records


async def test_flexible_time_window(sqlite_store: SQLStore, mapping_uuid: str) -> None:
    clock = FakeClock(T0, T0 + timedelta(hours=6))
    settings: dict[str, Any] = {
        "schedule": "rate(1 hour)",
        "FlexibleTimeWindow": {"Mode": "FLEXIBLE", "MaximumWindowInMinutes": 15},
    }
    source = make_source(sqlite_store, clock, mapping_uuid=mapping_uuid, **settings)
    twin = make_source(sqlite_store, clock, mapping_uuid=mapping_uuid, replica="r2", **settings)
    offsets = [source.offset(T0 + timedelta(hours=h)) for h in range(200)]
    assert all(timedelta(0) <= o < timedelta(minutes=15) for o in offsets)
    assert len(set(offsets)) > 150  # spread over the window
    assert offsets == [twin.offset(T0 + timedelta(hours=h)) for h in range(200)]

    fired_at: list[datetime] = []
    sink = RecordingSink()
    original_put = sink.put

    async def put(records: Any) -> None:
        fired_at.append(clock())
        await original_put(records)

    sink.put = put  # type: ignore[method-assign]
    async with running(source, sink):
        await clock.parked.wait()
    assert len(sink.records) == 5
    for record, at in zip(sink.records, fired_at, strict=True):
        due = record.position + source.offset(record.position)
        assert record.arrival == due.timestamp()
        assert due <= at < due + timedelta(minutes=1)
        assert at - record.position < timedelta(minutes=15)


async def test_unacked_fire_is_redelivered_after_restart(
    store: SQLStore, mapping_uuid: str
) -> None:
    clock = FakeClock(T0, T0 + timedelta(minutes=1, seconds=30))
    first = make_source(store, clock, mapping_uuid=mapping_uuid, schedule="rate(1 minute)")
    sink = RecordingSink()
    async with running(first, sink):
        (lost,) = await sink.wait_for(1)
        await clock.parked.wait()
    # The process died before the invocation finished: the same replica id starts again.
    again = make_source(store, clock, mapping_uuid=mapping_uuid, schedule="rate(1 minute)")
    sink2 = RecordingSink()
    async with running(again, sink2):
        (redelivered,) = await sink2.wait_for(1)
        assert redelivered.data == lost.data
        await again.ack([redelivered])
    assert await store.get_checkpoints(mapping_uuid) == {"delivered": "2024-01-01T00:01:00Z"}
    third = make_source(store, clock, mapping_uuid=mapping_uuid, schedule="rate(1 minute)")
    sink3 = RecordingSink()
    async with running(third, sink3):
        await clock.parked.wait()
        await asyncio.sleep(0.2)
    assert sink3.records == []


async def test_pending_fires_of_a_dead_replica_are_taken_over(
    store: SQLStore, mapping_uuid: str
) -> None:
    clock = FakeClock(T0, T0 + timedelta(minutes=2, seconds=30))
    dead = make_source(
        store, clock, mapping_uuid=mapping_uuid, replica="a", schedule="rate(1 minute)", lease_ttl=1
    )
    sink = RecordingSink()
    task = asyncio.create_task(dead.run(sink))
    lost = await sink.wait_for(2)
    task.cancel()  # killed: no aclose, its lease runs out on its own
    with contextlib.suppress(asyncio.CancelledError):
        await task
    survivor = make_source(
        store, clock, mapping_uuid=mapping_uuid, replica="b", schedule="rate(1 minute)", lease_ttl=1
    )
    sink2 = RecordingSink()
    async with running(survivor, sink2):
        recovered = await sink2.wait_for(2)
        assert [r.data for r in recovered] == [r.data for r in lost]
        await survivor.ack(recovered)
    assert await store.get_checkpoints(mapping_uuid) == {"delivered": "2024-01-01T00:02:00Z"}


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"schedule": "cron(0 12 * * * *)"}, "use ? in one of them"),
        ({"schedule": "rate(1 minutes)"}, "rate(1 minute)"),
        ({"schedule": "rate(5 minutes)", "timezone": "Mars/Olympus"}, "unknown time zone"),
        (
            {"schedule": "rate(5 minutes)", "flexible_time_window": {"mode": "FLEXIBLE"}},
            "needs maximum_window_in_minutes",
        ),
        (
            {
                "schedule": "rate(5 minutes)",
                "flexible_time_window": {"mode": "FLEXIBLE", "maximum_window_in_minutes": 1441},
            },
            "less than or equal to 1440",
        ),
        ({"schedule": "rate(5 minutes)", "cron": "x"}, "Extra inputs are not permitted"),
        (
            {"schedule": "rate(5 minutes)", "start_date": "2024-02-01", "end_date": "2024-01-01"},
            "end_date is before start_date",
        ),
    ],
)
def test_invalid_settings(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as info:
        ScheduleSettings.model_validate(settings)
    assert message in str(info.value)


def test_pascal_case_aliases() -> None:
    settings = ScheduleSettings.model_validate(
        {
            "ScheduleExpression": "cron(0 9 ? * MON-FRI *)",
            "ScheduleExpressionTimezone": "Europe/Berlin",
            "FlexibleTimeWindow": {"Mode": "OFF"},
            "StartDate": "2024-01-01T00:00:00Z",
        }
    )
    assert settings.schedule == "cron(0 9 ? * MON-FRI *)"
    assert settings.timezone == "Europe/Berlin"
    assert settings.aware_start() == T0


async def test_fire_delay_is_the_lag(store: SQLStore, mapping_uuid: str) -> None:
    """``router_schedule_fire_delay_seconds``: from the last acknowledged fire's due time to
    its ack, on the source's clock; nothing before the first ack."""
    clock = FakeClock(T0 + timedelta(seconds=30), T0 + timedelta(minutes=3, seconds=10))
    source = make_source(store, clock, mapping_uuid=mapping_uuid, schedule="rate(1 minute)")
    sink = RecordingSink()
    async with running(source, sink):
        records = await sink.wait_for(3)
        await clock.parked.wait()
        assert source.metrics() == []
        await source.ack(records[:1])  # the 00:01 fire, acked at 00:03:10
        (family,) = source.metrics()
        assert family.name == "router_schedule_fire_delay_seconds"
        assert family.samples == [
            ("router_schedule_fire_delay_seconds", {"mapping": "nightly-report"}, 130.0)
        ]
        await source.ack(records[1:])  # the newest acked is 00:03
        assert lag_of(source.metrics()) == Lag(10.0, "s fire delay")


async def test_a_failing_recovery_pass_does_not_end_the_lease_renewals(
    sqlite_store: SQLStore, mapping_uuid: str, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock(T0, T0 + timedelta(minutes=10))
    source = make_source(
        sqlite_store, clock, mapping_uuid=mapping_uuid, schedule="rate(1 minute)", lease_ttl=1
    )
    passes = 0
    read = sqlite_store.checkpoints_with_prefix

    async def failing_once(prefix: str) -> Any:
        nonlocal passes
        passes += 1
        if passes == 1:
            raise RuntimeError("unexpected")
        return await read(prefix)

    sqlite_store.checkpoints_with_prefix = failing_once  # type: ignore[method-assign]
    with caplog.at_level(logging.ERROR, logger="connectors.schedule.coordinator"):
        async with running(source, RecordingSink()):
            await until(lambda: passes >= 3)
    assert any("re-delivering pending fires failed" in r.getMessage() for r in caplog.records)
