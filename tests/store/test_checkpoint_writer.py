"""Checkpoint writes of concurrent acknowledgements, group-committed, on SQLite and
PostgreSQL."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa

from router.errors import StoreError
from router.store import SQLStore
from router.store.checkpoints import CheckpointWriter


def count_checkpoint_writes(store: SQLStore) -> list[int]:
    """Each INSERT into checkpoints (one per transaction's statement) appended as its number
    of rows."""
    writes: list[int] = []

    def seen(conn: object, cursor: object, statement: str, params: object, *a: object) -> None:
        if "INSERT INTO checkpoints" in statement:
            writes.append(len(params) if isinstance(params, list) else 1)

    sa.event.listen(store.engine.sync_engine, "before_cursor_execute", seen)
    return writes


async def test_concurrent_puts_share_transactions_and_return_once_committed(
    store: SQLStore,
) -> None:
    writer = CheckpointWriter(store.put_checkpoints, "m")
    writes = count_checkpoint_writes(store)

    # 50 acknowledgements at once: the first is written alone, the rest wait for it and go
    # together; every put returns only once its own value is committed.
    async def put(i: int) -> None:
        await writer.put({f"k{i}": f"v{i}"})
        assert (await store.get_checkpoints("m"))[f"k{i}"] == f"v{i}"

    await asyncio.gather(*(put(i) for i in range(50)))
    assert await store.get_checkpoints("m") == {f"k{i}": f"v{i}" for i in range(50)}
    assert len(writes) <= 3, writes
    await writer.aclose()


async def test_a_later_value_of_a_key_wins(store: SQLStore) -> None:
    writer = CheckpointWriter(store.put_checkpoints, "m")
    await asyncio.gather(*(writer.put({"file": f"v{i}"}) for i in range(10)))
    assert await store.get_checkpoints("m") == {"file": "v9"}
    await writer.put({})  # nothing to write
    await writer.aclose()


async def test_a_failed_write_is_raised_to_each_of_its_acknowledgements(store: SQLStore) -> None:
    writer = CheckpointWriter(store.put_checkpoints, "m")
    await writer.put({"before": "x"})

    def fails(conn: object, cursor: object, statement: str, *a: object) -> None:
        if "INSERT INTO checkpoints" in statement:
            raise RuntimeError("the checkpoint statement failed")

    engine = store.engine.sync_engine
    sa.event.listen(engine, "before_cursor_execute", fails)
    try:
        results = await asyncio.gather(
            *(writer.put({f"k{i}": "v"}) for i in range(5)), return_exceptions=True
        )
    finally:
        sa.event.remove(engine, "before_cursor_execute", fails)
    assert all(isinstance(r, (RuntimeError, StoreError)) for r in results), results
    assert await store.get_checkpoints("m") == {"before": "x"}
    # The writer goes on after a failure.
    await writer.put({"after": "y"})
    assert await store.get_checkpoints("m") == {"before": "x", "after": "y"}
    await writer.aclose()


@pytest.mark.parametrize("limit", [1, 2])
async def test_limit_bounds_one_transaction(store: SQLStore, limit: int) -> None:
    writer = CheckpointWriter(store.put_checkpoints, "m", limit=limit)
    writes = count_checkpoint_writes(store)
    await asyncio.gather(*(writer.put({f"k{i}": "v"}) for i in range(6)))
    assert max(writes) <= limit
    assert len(await store.get_checkpoints("m")) == 6
