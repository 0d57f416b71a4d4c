"""Helpers for the store tests: rows, SQL from outside the store, waiting on change feeds."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from typing import Any

from router.models import MappingRow
from router.store import SQLStore
from router.store.notify import ChangeFeed

FEED_DEADLINE = 5.0
"""How soon a change made in SQL must reach the router (a few seconds)."""


def make_row(name: str, **overrides: Any) -> MappingRow:
    values: dict[str, Any] = {
        "uuid": "",
        "name": name,
        "function_name": "handler",
        "source_type": "kafka",
        "source_config": {"bootstrap_servers": "127.0.0.1:9092", "topic": name},
        "batch_size": 100,
        "filter_criteria": {"Filters": [{"Pattern": '{"body": {"a": [1]}}'}]},
        "function_response_types": ["ReportBatchItemFailures"],
        "destination_config": {"OnFailure": {"Destination": "table"}},
    }
    values.update(overrides)
    return MappingRow(**values)


async def external_execute(store: SQLStore, sql: str) -> None:
    """Run ``sql`` through a connection of its own, as an operator's psql / sqlite3 would."""
    url = store.engine.url
    if store.backend == "postgresql":
        import asyncpg

        conn = await asyncpg.connect(
            host=url.host, port=url.port, user=url.username, database=url.database
        )
        try:
            await conn.execute(sql)
        finally:
            await conn.close()
        return
    path = url.database
    assert path

    def run() -> None:
        conn = sqlite3.connect(path, timeout=10)
        try:
            conn.execute(sql)
            conn.commit()
        finally:
            conn.close()

    await asyncio.to_thread(run)


async def collect_until(
    feed: ChangeFeed, done: Callable[[set[str]], bool], deadline: float = FEED_DEADLINE
) -> set[str]:
    """Union of what ``feed`` yields until ``done(union)``; fails after ``deadline`` s."""
    seen: set[str] = set()
    end = time.monotonic() + deadline
    while not done(seen):
        remaining = end - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"change feed did not report the change within {deadline}s")
        try:
            seen |= await asyncio.wait_for(feed.__anext__(), remaining)
        except TimeoutError:
            raise AssertionError(
                f"change feed did not report the change within {deadline}s (saw {seen})"
            ) from None
    return seen


async def primed_feed(store: SQLStore) -> ChangeFeed:
    """A feed that is listening, with its initial "reload all" consumed."""
    feed = store.changes()
    assert await asyncio.wait_for(feed.__anext__(), FEED_DEADLINE) == set()
    return feed
