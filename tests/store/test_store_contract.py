"""One contract suite for the Store, run on SQLite and PostgreSQL (``store`` fixture)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa

from connectors.aws.streams.leases import member_row
from router.errors import StoreError
from router.models import FailedEvent, QueuedEvent, StatsDelta
from router.store import SQLStore
from tests.store.helpers import collect_until, external_execute, make_row, primed_feed

# mappings


async def test_create_get_list_roundtrip(store: SQLStore) -> None:
    ts = datetime(2024, 5, 1, 12, 30, tzinfo=timezone(timedelta(hours=2)))
    row = make_row("orders", starting_position="AT_TIMESTAMP", starting_position_timestamp=ts)
    await store.create_mapping(row)
    assert len(row.uuid) == 36  # filled in

    got = await store.get_mapping(row.uuid)
    assert got is not None
    assert got.name == "orders"
    assert got.source_config == {"bootstrap_servers": "127.0.0.1:9092", "topic": "orders"}
    assert got.filter_criteria == {"Filters": [{"Pattern": '{"body": {"a": [1]}}'}]}
    assert got.function_response_types == ["ReportBatchItemFailures"]
    assert got.batch_size == 100
    assert got.maximum_batching_window is None
    assert got.starting_position_timestamp == ts
    assert got.starting_position_timestamp.tzinfo is not None
    assert got.created_at is not None and got.created_at.tzinfo is not None
    assert got.state == "Creating"
    assert got.origin == "yaml"
    assert got.enabled is True

    assert await store.get_mapping_by_name("orders") == got
    assert await store.get_mapping("nope") is None
    assert await store.get_mapping_by_name("nope") is None

    await store.create_mapping(make_row("alpha"))
    assert [m.name for m in await store.list_mappings()] == ["alpha", "orders"]


async def test_duplicate_name_is_a_permanent_error(store: SQLStore) -> None:
    await store.create_mapping(make_row("dup"))
    with pytest.raises(StoreError, match="already exists") as info:
        await store.create_mapping(make_row("dup"))
    assert info.value.retriable is False


async def test_update_writes_config_not_status(store: SQLStore) -> None:
    row = make_row("m")
    await store.create_mapping(row)
    await store.set_mapping_status(row.uuid, state="Enabled", last_result="OK")

    row.batch_size = 7
    row.enabled = False
    row.config_hash = "abc"
    row.filter_criteria = None
    row.state = "Deleting"  # not a configuration column: must be ignored
    await store.update_mapping(row)

    got = await store.get_mapping(row.uuid)
    assert got is not None
    assert (got.batch_size, got.enabled, got.config_hash, got.filter_criteria) == (
        7,
        False,
        "abc",
        None,
    )
    assert (got.state, got.last_processing_result) == ("Enabled", "OK")
    assert got.updated_at is not None and got.created_at is not None
    assert got.updated_at >= got.created_at

    missing = make_row("ghost", uuid="00000000-0000-4000-8000-000000000000")
    with pytest.raises(StoreError, match="no mapping has uuid"):
        await store.update_mapping(missing)


async def test_status_and_enabled(store: SQLStore) -> None:
    row = make_row("m")
    await store.create_mapping(row)
    await store.set_mapping_status(row.uuid, state="Enabling", reason="User action")
    await store.set_mapping_status(row.uuid, last_result="PROBLEM: broker unreachable")
    await store.set_enabled(row.uuid, False)
    got = await store.get_mapping(row.uuid)
    assert got is not None
    assert got.state == "Enabling"
    assert got.state_transition_reason == "User action"
    assert got.last_processing_result == "PROBLEM: broker unreachable"
    assert got.enabled is False
    # Missing mappings (deleted meanwhile) are not an error for status writes.
    await store.set_mapping_status("missing", state="Enabled")


async def test_delete_removes_mapping_checkpoints_and_stats(store: SQLStore) -> None:
    row = make_row("m")
    await store.create_mapping(row)
    await store.put_checkpoints(row.uuid, {"t:0": "10"})
    await store.add_stats(row.uuid, StatsDelta(records_in=1))
    event = FailedEvent(mapping_uuid=row.uuid, function_name="f", condition="x", payload={})
    await store.add_failed_event(event)
    await store.delete_mapping(row.uuid)
    assert await store.get_mapping(row.uuid) is None
    assert await store.get_checkpoints(row.uuid) == {}
    assert (await store.get_stats(row.uuid))["records_in"] == 0
    assert len(await store.list_failed_events(mapping_uuid=row.uuid)) == 1  # kept
    await store.delete_mapping(row.uuid)  # idempotent


async def test_a_retired_mapping_keeps_its_checkpoints_for_its_name(store: SQLStore) -> None:
    row = make_row("m")
    await store.create_mapping(row)
    await store.put_checkpoints(row.uuid, {"t:0": "10"})
    await store.add_stats(row.uuid, StatsDelta(records_in=4))
    await store.retire_mapping(row.uuid)
    await store.retire_mapping(row.uuid)  # gone already: nothing to do
    assert await store.get_mapping(row.uuid) is None
    (gone,) = await store.list_deleted_mappings()
    assert (gone.name, gone.uuid, gone.source_type) == ("m", row.uuid, "kafka")
    assert gone.deleted_at.tzinfo is not None
    assert await store.get_checkpoints(row.uuid) == {"t:0": "10"}

    # Created again with its uuid: it takes back what was kept.
    again = make_row("m", uuid=row.uuid)
    await store.create_mapping(again)
    assert await store.list_deleted_mappings() == []
    assert await store.get_checkpoints(row.uuid) == {"t:0": "10"}
    assert (await store.get_stats(row.uuid))["records_in"] == 4

    # Created again under another uuid: what was kept goes.
    await store.retire_mapping(row.uuid)
    other = make_row("m")
    await store.create_mapping(other)
    assert other.uuid != row.uuid
    assert await store.list_deleted_mappings() == []
    assert await store.get_checkpoints(row.uuid) == {}
    assert (await store.get_stats(row.uuid))["records_in"] == 0


async def test_purging_deleted_mappings(store: SQLStore) -> None:
    old, recent = make_row("old"), make_row("recent")
    for row in (old, recent):
        await store.create_mapping(row)
        await store.put_checkpoints(row.uuid, {"k": "v"})
        await store.retire_mapping(row.uuid)
    when = {g.name: g.deleted_at for g in await store.list_deleted_mappings()}
    assert when["old"] < when["recent"]
    assert await store.purge_deleted_mappings(when["old"]) == []  # strictly before
    assert await store.purge_deleted_mappings(when["recent"]) == ["old"]
    assert [g.name for g in await store.list_deleted_mappings()] == ["recent"]
    assert await store.get_checkpoints(old.uuid) == {}
    assert await store.get_checkpoints(recent.uuid) == {"k": "v"}
    later = datetime.now(UTC) + timedelta(seconds=1)
    assert await store.purge_deleted_mappings(later) == ["recent"]
    assert await store.list_deleted_mappings() == []


async def test_plain_sql_insert_gets_defaults(store: SQLStore) -> None:
    await external_execute(
        store,
        "INSERT INTO event_source_mappings (name, function_name, source_type, source_config) "
        """VALUES ('ops', 'fn', 'sqs', '{"queue_url": "http://q"}')""",
    )
    got = await store.get_mapping_by_name("ops")
    assert got is not None
    assert len(got.uuid) == 36 and got.uuid.count("-") == 4
    assert got.source_config == {"queue_url": "http://q"}
    assert (got.origin, got.state, got.enabled) == ("sql", "Creating", True)
    assert got.last_processing_result == "No records processed"
    assert got.created_at is not None and got.created_at.tzinfo is not None
    assert abs(got.created_at - datetime.now(UTC)) < timedelta(minutes=1)


async def test_mapping_overview_view(store: SQLStore) -> None:
    row = make_row("m")
    await store.create_mapping(row)
    await store.add_stats(row.uuid, StatsDelta(records_in=5, invoked=2))
    event = FailedEvent(mapping_uuid=row.uuid, function_name="f", condition="x", payload={})
    await store.add_failed_event(event)
    async with store.engine.connect() as conn:
        result = await conn.execute(
            sa.text("SELECT name, records_in, invoked, failed_events FROM mapping_overview")
        )
        assert result.all() == [("m", 5, 2, 1)]


async def test_mapping_overview_lag(store: SQLStore) -> None:
    """``lag`` / ``lag_unit``: each replica's figure, counts summed, ages the oldest; a
    replica that no longer runs the mapping takes its row away; deleting the mapping too."""
    counted, aged = make_row("counted"), make_row("aged")
    for row in (counted, aged):
        await store.create_mapping(row)

    async def overview() -> list[Any]:
        async with store.engine.connect() as conn:
            result = await conn.execute(
                sa.text("SELECT name, lag, lag_unit FROM mapping_overview ORDER BY name")
            )
            return [tuple(r) for r in result.all()]

    assert await overview() == [("aged", None, None), ("counted", None, None)]
    await store.put_lag(counted.uuid, "replica-a", 3, "records behind")
    await store.put_lag(counted.uuid, "replica-b", 4, "records behind")
    await store.put_lag(aged.uuid, "replica-a", 250, "ms behind")
    await store.put_lag(aged.uuid, "replica-b", 900, "ms behind")
    assert await overview() == [("aged", 900, "ms behind"), ("counted", 7, "records behind")]
    await store.put_lag(counted.uuid, "replica-b", 10, "records behind")  # replaced
    await store.put_lag(aged.uuid, "replica-b", None)
    assert await overview() == [("aged", 250, "ms behind"), ("counted", 13, "records behind")]
    await store.delete_mapping(counted.uuid)
    async with store.engine.connect() as conn:
        left = await conn.execute(sa.text("SELECT mapping_uuid FROM mapping_lag"))
        assert [r[0] for r in left.all()] == [aged.uuid]


async def test_mapping_overview_stream_shards_held(store: SQLStore) -> None:
    """``stream_shards_held``: the shards of the member rows a stream source's replicas
    write (``replica:<id>`` = ``<epoch> <held>``), summed; none without member rows."""
    row = make_row("m")
    await store.create_mapping(row)

    async def held() -> Any:
        async with store.engine.connect() as conn:
            result = await conn.execute(sa.text("SELECT stream_shards_held FROM mapping_overview"))
            return result.scalar_one()

    assert await held() is None
    await store.put_checkpoints(
        row.uuid,
        {"replica:a": member_row(100.0, 3), "replica:b": member_row(101.5, 5), "shard-0": "12"},
    )
    assert await held() == 8


# checkpoints


async def test_checkpoints(store: SQLStore) -> None:
    await store.put_checkpoints("u1", {"t:0": "5", "t:1": "9"})
    await store.put_checkpoints("u1", {"t:0": "6"})
    await store.put_checkpoints("u1", {})
    await store.put_checkpoints("u2", {"t:0": "100"})
    assert await store.get_checkpoints("u1") == {"t:0": "6", "t:1": "9"}
    await store.delete_checkpoints("u1", ["t:1", "absent"])
    await store.delete_checkpoints("u1", [])
    assert await store.get_checkpoints("u1") == {"t:0": "6"}
    assert await store.get_checkpoints("u2") == {"t:0": "100"}


# schedules


async def test_claim_fire_once_and_last_fire(store: SQLStore) -> None:
    t1 = datetime(2024, 1, 1, 12, 0, tzinfo=UTC)
    assert await store.last_fire("s") is None
    assert await store.claim_fire("s", t1, "a") is True
    assert await store.claim_fire("s", t1, "b") is False
    # The owner asking again (the answer to its insert was lost with the connection) is told
    # the fire is its own; nobody else is.
    assert await store.claim_fire("s", t1, "a") is True
    assert await store.claim_fire("s", t1, "b") is False
    # The same instant in another zone is the same fire.
    same = t1.astimezone(timezone(timedelta(hours=-5)))
    assert await store.claim_fire("s", same, "b") is False
    assert await store.claim_fire("other", t1, "b") is True
    t2 = t1 + timedelta(minutes=1)
    assert await store.claim_fire("s", t2, "b") is True
    assert await store.last_fire("s") == t2
    assert await store.prune_fires(t2) == 2
    assert await store.last_fire("s") == t2


async def test_a_claim_is_never_stored_without_its_pending_checkpoint(store: SQLStore) -> None:
    """The fire row and the pending checkpoint are one transaction: when the checkpoint
    statement fails after the fire row was inserted, neither is stored."""
    when = datetime(2024, 2, 1, 9, 0, tzinfo=UTC)
    pending = {"fire:2024-02-01T09:00:00Z": "a"}

    def second_statement_fails(conn: object, cursor: object, statement: str, *args: object) -> None:
        if "INSERT INTO checkpoints" in statement:
            raise RuntimeError("the checkpoint statement failed")

    engine = store.engine.sync_engine
    sa.event.listen(engine, "before_cursor_execute", second_statement_fails)
    try:
        with pytest.raises((RuntimeError, StoreError), match="checkpoint statement failed"):
            await store.claim_fire("s", when, "a", pending=pending)
    finally:
        sa.event.remove(engine, "before_cursor_execute", second_statement_fails)
    assert await store.last_fire("s") is None
    assert await store.get_checkpoints("s") == {}

    assert await store.claim_fire("s", when, "a", pending=pending) is True
    assert await store.last_fire("s") == when
    assert await store.get_checkpoints("s") == pending
    # The loser of a claim writes nothing.
    assert (
        await store.claim_fire("s", when, "b", pending={"fire:2024-02-01T09:00:00Z": "b"}) is False
    )
    assert await store.get_checkpoints("s") == pending


async def test_claim_fire_exactly_once_under_concurrency(store: SQLStore) -> None:
    """20 replicas (separate stores and engines) race for one fire: one wins."""
    url = store.engine.url.render_as_string(hide_password=False)
    replicas = [SQLStore(url) for _ in range(20)]
    try:
        await asyncio.gather(*(r.start() for r in replicas))
        when = datetime(2024, 3, 1, 8, 0, tzinfo=UTC)
        results = await asyncio.gather(
            *(r.claim_fire("race", when, f"replica-{i}") for i, r in enumerate(replicas))
        )
    finally:
        await asyncio.gather(*(r.aclose() for r in replicas))
    assert sorted(results) == [False] * 19 + [True]


# leases


async def _lease_expiry(store: SQLStore, key: str) -> datetime:
    async with store.engine.connect() as conn:
        table = sa.table("leases", sa.column("key"), sa.column("expires_at"))
        value = (
            await conn.execute(sa.select(table.c.expires_at).where(table.c.key == key))
        ).scalar()
    assert value is not None
    return value if isinstance(value, datetime) else datetime.fromisoformat(str(value))


async def test_lease_acquire_renew_release(store: SQLStore) -> None:
    assert await store.acquire_lease("shard-1", "a", 30) is True
    first = await _lease_expiry(store, "shard-1")
    assert await store.acquire_lease("shard-1", "b", 30) is False
    assert await store.acquire_lease("shard-1", "a", 60) is True  # renewal
    assert await _lease_expiry(store, "shard-1") > first
    await store.release_lease("shard-1", "b")  # not b's: no effect
    assert await store.acquire_lease("shard-1", "b", 30) is False
    await store.release_lease("shard-1", "a")
    assert await store.acquire_lease("shard-1", "b", 30) is True


async def test_expired_lease_is_stolen(store: SQLStore) -> None:
    assert await store.acquire_lease("cursor", "a", 0.2) is True
    assert await store.acquire_lease("cursor", "b", 30) is False
    deadline = asyncio.get_running_loop().time() + 5
    while not await store.acquire_lease("cursor", "b", 30):
        assert asyncio.get_running_loop().time() < deadline, "expired lease never taken over"
        await asyncio.sleep(0.05)
    assert await store.acquire_lease("cursor", "a", 30) is False


async def test_concurrent_lease_acquire_has_one_winner(store: SQLStore) -> None:
    url = store.engine.url.render_as_string(hide_password=False)
    replicas = [SQLStore(url) for _ in range(5)]
    try:
        await asyncio.gather(*(r.start() for r in replicas))
        results = await asyncio.gather(
            *(r.acquire_lease("shared", f"r{i}", 30) for i, r in enumerate(replicas))
        )
    finally:
        await asyncio.gather(*(r.aclose() for r in replicas))
    assert sorted(results) == [False] * 4 + [True]


# stats and failed events


async def test_stats_add_up_atomically(store: SQLStore) -> None:
    empty = await store.get_stats("u")
    assert empty == {
        "records_in": 0,
        "filtered": 0,
        "invoked": 0,
        "failed": 0,
        "last_invoke_at": None,
        "updated_at": None,
    }
    when = datetime(2024, 6, 1, tzinfo=UTC)
    await asyncio.gather(
        *(store.add_stats("u", StatsDelta(records_in=3, filtered=1, invoked=1)) for _ in range(20))
    )
    await store.add_stats("u", StatsDelta(failed=2, last_invoke=when))
    await store.add_stats("u", StatsDelta())  # nothing to add
    stats = await store.get_stats("u")
    assert (stats["records_in"], stats["filtered"], stats["invoked"], stats["failed"]) == (
        60,
        20,
        20,
        2,
    )
    assert stats["last_invoke_at"] == when
    # Plain str keys, so that the stats serialise as JSON (`router mappings show`).
    assert {type(key) for key in stats} == {str}
    await store.add_stats("u", StatsDelta(records_in=1))  # keeps the last invoke time
    assert (await store.get_stats("u"))["last_invoke_at"] == when


async def test_failed_events(store: SQLStore) -> None:
    payload = {"requestContext": {"condition": "RetryAttemptsExhausted"}, "records": [1, "x"]}
    ids = [
        await store.add_failed_event(
            FailedEvent(
                mapping_uuid=u, function_name="f", condition="RetriesExhausted", payload=payload
            )
        )
        for u in ("m1", "m1", "m2")
    ]
    assert ids == sorted(ids) and len(set(ids)) == 3
    events = await store.list_failed_events(mapping_uuid="m1")
    assert [e.id for e in events] == ids[:2]
    assert events[0].payload == payload
    assert events[0].created_at is not None and events[0].created_at.tzinfo is not None
    await store.mark_replayed([ids[0]])
    await store.mark_replayed([])
    assert [e.id for e in await store.list_failed_events()] == ids[1:]
    everything = await store.list_failed_events(include_replayed=True)
    assert [e.id for e in everything] == ids
    assert everything[0].replayed_at is not None


# change feed


async def test_feed_reports_external_config_update_not_status(store: SQLStore) -> None:
    quiet, marker = make_row("quiet"), make_row("marker")
    await store.create_mapping(quiet)
    await store.create_mapping(marker)
    feed = await primed_feed(store)
    try:
        await external_execute(
            store,
            "UPDATE event_source_mappings SET state = 'Enabled', last_processing_result = 'OK', "
            f"state_transition_reason = 'x' WHERE uuid = '{quiet.uuid}'",
        )
        await external_execute(
            store, f"UPDATE event_source_mappings SET batch_size = 5 WHERE uuid = '{marker.uuid}'"
        )
        seen = await collect_until(feed, lambda s: marker.uuid in s)
        assert quiet.uuid not in seen
    finally:
        await feed.aclose()
    got = await store.get_mapping(marker.uuid)
    assert got is not None and got.batch_size == 5


async def test_feed_reports_external_checkpoint_and_delete(store: SQLStore) -> None:
    a, b = make_row("a"), make_row("b")
    await store.create_mapping(a)
    await store.create_mapping(b)
    await store.put_checkpoints(a.uuid, {"t:0": "1"})
    feed = await primed_feed(store)
    try:
        await external_execute(
            store, f"UPDATE checkpoints SET value = '42' WHERE mapping_uuid = '{a.uuid}'"
        )
        await collect_until(feed, lambda s: a.uuid in s)
        await external_execute(store, f"DELETE FROM event_source_mappings WHERE uuid = '{b.uuid}'")
        await collect_until(feed, lambda s: b.uuid in s)
    finally:
        await feed.aclose()
    assert await store.get_checkpoints(a.uuid) == {"t:0": "42"}


async def test_feed_reports_own_config_writes_but_not_status(store: SQLStore) -> None:
    rows = [make_row(n) for n in ("created", "updated", "toggled", "moved", "status")]
    for row in rows[1:]:
        await store.create_mapping(row)
    created, updated, toggled, moved, status = rows
    feed = await primed_feed(store)
    try:
        await store.set_mapping_status(status.uuid, state="Enabled", last_result="OK")
        await store.create_mapping(created)
        updated.batch_size = 1
        await store.update_mapping(updated)
        await store.set_enabled(toggled.uuid, False)
        await store.put_checkpoints(moved.uuid, {"p:0": "7"})
        wanted = {created.uuid, updated.uuid, toggled.uuid, moved.uuid}
        seen = await collect_until(feed, lambda s: wanted <= s)
        assert status.uuid not in seen
        await store.delete_mapping(created.uuid)
        await collect_until(feed, lambda s: created.uuid in s)
    finally:
        await feed.aclose()


async def test_store_close_ends_feeds(store: SQLStore) -> None:
    url = store.engine.url.render_as_string(hide_password=False)
    other = SQLStore(url)
    await other.start()
    feed = await primed_feed(other)
    waiter = asyncio.ensure_future(feed.__anext__())
    await other.aclose()
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(waiter, 5)


# the asynchronous-invocation queue


def _event(target: str, n: int, **overrides: Any) -> QueuedEvent:
    values: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "target": target,
        "payload": f'{{"n": {n}}}',
        "attributes": {"client_context": "e30="} if n == 0 else {},
        "enqueued_at": datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=n),
    }
    values.update(overrides)
    return QueuedEvent(**values)


async def test_queued_events_are_claimed_oldest_first_and_once(store: SQLStore) -> None:
    events = [_event("function:f", n) for n in (2, 0, 1)]
    await store.enqueue_events(events)
    await store.enqueue_events([_event("mapping:other", 5)])
    first = await store.claim_events("function:f", "a", 2, 30)
    assert [e.payload for e in first] == ['{"n": 0}', '{"n": 1}']
    assert first[0].attributes == {"client_context": "e30="}
    assert first[0].enqueued_at == datetime(2026, 1, 1, tzinfo=UTC)
    assert {e.lease_owner for e in first} == {"a"}
    assert {e.deliveries for e in first} == {1}
    # Held by "a": another replica gets only what is left.
    rest = await store.claim_events("function:f", "b", 10, 30)
    assert [e.payload for e in rest] == ['{"n": 2}']
    assert await store.claim_events("function:f", "b", 10, 30) == []

    depths = {d.target: d for d in await store.queue_depths()}
    assert depths["function:f"].events == 3
    assert depths["function:f"].oldest == datetime(2026, 1, 1, tzinfo=UTC)
    assert depths["mapping:other"].events == 1

    await store.delete_events([e.id for e in first])
    assert [e.payload for e in await store.list_events(target="function:f")] == ['{"n": 2}']
    assert len(await store.list_events()) == 2


async def test_a_released_or_expired_claim_is_claimed_again(store: SQLStore) -> None:
    held, expiring = _event("function:f", 0), _event("function:f", 1)
    await store.enqueue_events([held, expiring])
    assert len(await store.claim_events("function:f", "a", 10, 30)) == 2
    assert await store.release_events([held.id], "b") == 0  # not b's: nothing happens
    assert await store.claim_events("function:f", "b", 10, 30) == []
    assert await store.release_events([held.id], "a") == 1
    again = await store.claim_events("function:f", "b", 10, 30)
    assert [(e.id, e.deliveries) for e in again] == [(held.id, 2)]

    # a's lease on the other one runs out without renewal.
    assert await store.renew_events([expiring.id, held.id], "a", 0.2) == {expiring.id}
    await asyncio.sleep(0.5)
    assert await store.renew_events([expiring.id], "b", 30) == set()
    taken = await store.claim_events("function:f", "b", 10, 30)
    assert [e.id for e in taken] == [expiring.id]
    assert await store.renew_events([expiring.id], "a", 30) == set()  # a lost it
    # b restarts: everything it held is free again.
    assert await store.release_events(None, "b") == 2
    assert len(await store.claim_events("function:f", "c", 10, 30)) == 2


async def test_an_events_attempts_and_retry_time_outlive_its_claim(store: SQLStore) -> None:
    event = _event("function:f", 0)
    await store.enqueue_events([event])
    (claimed,) = await store.claim_events("function:f", "a", 10, 30)
    assert (claimed.attempts, claimed.retry_at) == (0, None)
    later = datetime.now(UTC) + timedelta(hours=1)
    assert await store.record_attempt(event.id, "a", 1, later)
    assert not await store.record_attempt(event.id, "b", 5, None)  # b does not hold it
    # Released (a restart): not claimable before its retry time.
    assert await store.release_events(None, "a") == 1
    assert await store.claim_events("function:f", "b", 10, 30) == []
    (waiting,) = await store.list_events(target="function:f")
    assert waiting.attempts == 1
    assert waiting.retry_at is not None and abs((waiting.retry_at - later).total_seconds()) < 1
    # Due (an operator's SQL moves the retry time back): claimed with the attempts it used.
    await external_execute(
        store, f"UPDATE async_events SET retry_at = NULL WHERE id = '{event.id}'"
    )
    (due,) = await store.claim_events("function:f", "b", 10, 30)
    assert (due.id, due.attempts, due.deliveries) == (event.id, 1, 2)


async def test_concurrent_claims_never_share_an_event(store: SQLStore) -> None:
    await store.enqueue_events([_event("function:f", n) for n in range(60)])

    async def claim(owner: str) -> list[str]:
        got: list[str] = []
        while batch := await store.claim_events("function:f", owner, 7, 30):
            got.extend(e.id for e in batch)
        return got

    results = await asyncio.gather(*(claim(f"r{i}") for i in range(4)))
    claimed = [i for ids in results for i in ids]
    assert len(claimed) == 60
    assert len(set(claimed)) == 60


async def test_purging_the_queue(store: SQLStore) -> None:
    await store.enqueue_events([_event("function:f", n) for n in range(3)])
    await store.enqueue_events([_event("function:g", 9)])
    await store.claim_events("function:f", "a", 1, 30)
    assert await store.purge_events(target="function:f") == 3  # claimed ones too
    assert [d.target for d in await store.queue_depths()] == ["function:g"]
    assert await store.purge_events() == 1
    assert await store.queue_depths() == []


# many mappings at once


async def test_batched_mapping_reads_and_writes(store: SQLStore) -> None:
    rows = [make_row(f"m{i:03d}") for i in range(3)]
    await store.create_mappings(rows)
    assert all(len(row.uuid) == 36 for row in rows)
    assert [m.name for m in await store.list_mappings()] == ["m000", "m001", "m002"]
    with pytest.raises(StoreError, match="already exists") as info:
        await store.create_mappings([make_row("m001"), make_row("m003")])
    assert info.value.retriable is False
    assert len(await store.list_mappings()) == 3

    found = await store.get_mappings([rows[0].uuid, rows[2].uuid, "missing"])
    assert sorted(m.name for m in found) == ["m000", "m002"]
    assert await store.get_mappings([]) == []

    await store.set_mapping_status(rows[1].uuid, last_result="kept")
    await store.set_mapping_statuses(
        {
            rows[0].uuid: {"state": "Enabled", "reason": "USER_INITIATED"},
            rows[1].uuid: {"state": "Disabling"},
            rows[2].uuid: {"last_result": "PROBLEM: x", "state": None},
            "missing": {"state": "Enabled"},
        }
    )
    got = {m.name: m for m in await store.list_mappings()}
    assert (got["m000"].state, got["m000"].state_transition_reason) == ("Enabled", "USER_INITIATED")
    assert (got["m001"].state, got["m001"].last_processing_result) == ("Disabling", "kept")
    assert (got["m002"].state, got["m002"].last_processing_result) == ("Creating", "PROBLEM: x")
    await store.set_mapping_statuses({})

    await store.put_checkpoints(rows[0].uuid, {"reset": "x", "a": "1"})
    await store.put_checkpoints(rows[1].uuid, {"a_reset": "1", "r%": "1"})
    await store.put_checkpoints(rows[2].uuid, {"reset_at": "1"})
    owners = await store.checkpoint_owners([r.uuid for r in rows], "reset")
    assert owners == {rows[0].uuid, rows[2].uuid}
    assert await store.checkpoint_owners([rows[1].uuid], "r%") == {rows[1].uuid}
    assert await store.checkpoint_owners([rows[1].uuid], "r_") == set()
    assert await store.checkpoint_owners([], "reset") == set()

    await store.add_stats("s1", StatsDelta(records_in=1))
    when = datetime(2024, 6, 1, tzinfo=UTC)
    await store.add_stats_many(
        {
            "s1": StatsDelta(records_in=2, invoked=1),
            "s2": StatsDelta(failed=1, last_invoke=when),
            "s3": StatsDelta(),
        }
    )
    s1, s2 = await store.get_stats("s1"), await store.get_stats("s2")
    assert (s1["records_in"], s1["invoked"]) == (3, 1)
    assert (s2["failed"], s2["last_invoke_at"]) == (1, when)
    assert (await store.get_stats("s3"))["updated_at"] is None


async def test_batched_create_takes_back_a_retired_mapping(store: SQLStore) -> None:
    old = make_row("again")
    await store.create_mapping(old)
    await store.put_checkpoints(old.uuid, {"k": "v"})
    other = make_row("other")
    await store.create_mapping(other)
    await store.put_checkpoints(other.uuid, {"k": "w"})
    await store.retire_mapping(old.uuid)
    await store.retire_mapping(other.uuid)
    back = make_row("again")
    back.uuid = old.uuid
    await store.create_mappings([back, make_row("other")])
    assert await store.get_checkpoints(old.uuid) == {"k": "v"}
    assert await store.get_checkpoints(other.uuid) == {}
    assert await store.list_deleted_mappings() == []
