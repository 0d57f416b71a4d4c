"""The store's batched schedule methods, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from router.errors import StoreError
from router.store import SQLStore

T1 = datetime(2024, 1, 1, 12, 0, tzinfo=UTC)
T2 = T1 + timedelta(minutes=1)


async def test_claim_fires_wins_each_pair_once_with_its_pending_rows(store: SQLStore) -> None:
    assert await store.claim_fire("s1", T1, "b") is True
    claims = [
        ("s1", T1, {"fire:1": "a"}),  # taken by b
        ("s2", T1, {"fire:1": "a"}),
        ("s2", T2, {"fire:2": "a"}),
        ("s2", T2, {"fire:2": "a"}),  # the same pair twice in one batch
    ]
    assert await store.claim_fires(claims, "a") == {("s2", T1), ("s2", T2)}
    assert await store.get_checkpoints("s1") == {}
    assert await store.get_checkpoints("s2") == {"fire:1": "a", "fire:2": "a"}
    # The owner asking again wins again; anyone else, in any zone, does not.
    again: list[tuple[str, datetime, dict[str, str]]] = [
        ("s2", T1.astimezone(timezone(timedelta(hours=5))), {})
    ]
    assert await store.claim_fires(again, "a") == {("s2", T1)}
    assert await store.claim_fires(again, "b") == set()
    assert await store.claim_fires([], "a") == set()
    assert await store.last_fires(["s1", "s2", "never"]) == {"s1": T1, "s2": T2}


async def test_claim_fires_stores_no_claim_without_its_pending_rows(store: SQLStore) -> None:
    def checkpoint_statement_fails(
        conn: object, cursor: object, statement: str, *a: object
    ) -> None:
        if "INSERT INTO checkpoints" in statement:
            raise RuntimeError("the checkpoint statement failed")

    engine = store.engine.sync_engine
    sa.event.listen(engine, "before_cursor_execute", checkpoint_statement_fails)
    try:
        with pytest.raises((RuntimeError, StoreError), match="checkpoint statement failed"):
            await store.claim_fires([("s", T1, {"fire:1": "a"}), ("t", T1, {"fire:1": "a"})], "a")
    finally:
        sa.event.remove(engine, "before_cursor_execute", checkpoint_statement_fails)
    assert await store.last_fires(["s", "t"]) == {}


async def test_many_schedules_in_one_call(store: SQLStore) -> None:
    """More schedules than one statement takes (chunks of 500)."""
    keys = [f"k{i:04d}" for i in range(1200)]
    won = await store.claim_fires([(k, T1, {"fire:x": "a"}) for k in keys], "a")
    assert len(won) == 1200
    assert (await store.last_fires(keys)).keys() == set(keys)
    await store.update_checkpoints(
        {k: {"delivered": "x"} for k in keys}, {k: ["fire:x"] for k in keys}
    )
    many = await store.get_checkpoints_many(keys)
    assert many == {k: {"delivered": "x"} for k in keys}
    assert await store.checkpoints_with_prefix("fire:") == []


async def test_update_checkpoints_and_prefix_reads(store: SQLStore) -> None:
    await store.put_checkpoints("m1", {"since": "s", "fire:1": "a", "fire_x": "no"})
    await store.put_checkpoints("m2", {"fire:2": "b"})
    assert sorted(await store.checkpoints_with_prefix("fire:")) == [
        ("m1", "fire:1", "a"),
        ("m2", "fire:2", "b"),
    ]
    await store.update_checkpoints(
        {"m1": {"delivered": "d"}, "m3": {"since": "t"}},
        {"m1": ["fire:1", "since"], "m2": ["fire:2"], "m3": ["since"]},
    )
    assert await store.get_checkpoints_many(["m1", "m2", "m3", "m4"]) == {
        "m1": {"delivered": "d", "fire_x": "no"},
        "m3": {"since": "t"},
    }
    await store.update_checkpoints({}, {})
