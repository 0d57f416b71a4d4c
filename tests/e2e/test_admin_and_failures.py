"""Through the Router on a real store: SQL changes reach a running router; failing handlers
are retried and end in destinations; `router replay` re-invokes failed events."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest

from router.models import MappingState
from router.store import SQLStore
from tests.helpers import eventually, router_command, run_router

HANDLERS = """
import json, os

CALLS = []

def record(event, context):
    with open(os.environ["EVENTS_FILE"], "a") as f:
        f.write(json.dumps(event) + "\\n")
    return {"ok": True}

def fail(event, context):
    with open(os.environ["EVENTS_FILE"], "a") as f:
        f.write(json.dumps(event) + "\\n")
    raise ValueError("this handler always fails")
"""


@pytest.fixture
def handlers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    module = tmp_path / "e2e_handlers.py"
    module.write_text(HANDLERS)
    monkeypatch.syspath_prepend(str(tmp_path))
    # Each test writes its own module: never reuse one imported by an earlier test.
    monkeypatch.delitem(sys.modules, "e2e_handlers", raising=False)
    events = tmp_path / "events.jsonl"
    monkeypatch.setenv("EVENTS_FILE", str(events))
    (tmp_path / "inbox").mkdir()
    return tmp_path


def _events(folder: Path) -> list[dict[str, Any]]:
    path = folder / "events.jsonl"
    if not path.exists():
        return []
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def _config(folder: Path, handler: str, extra: str = "") -> str:
    return f"""
functions:
  fn:
    invoker: python
    handler: e2e_handlers:{handler}
mappings:
  - name: inbox
    function: fn
    source:
      type: directory
      path: {folder / "inbox"}
{extra}"""


@pytest.mark.postgres
async def test_sql_update_reaches_the_running_router_on_postgres(
    pg_store: SQLStore, handlers: Path
) -> None:
    async with run_router(_config(handlers, "record"), pg_store) as router:
        row = await pg_store.get_mapping_by_name("inbox")
        assert row is not None
        await eventually(lambda: row.uuid in router.running, what="mapping running")
        url = pg_store.url.replace("postgresql+asyncpg", "postgresql")
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(
                "UPDATE event_source_mappings SET enabled = false WHERE name = 'inbox'"
            )
            await eventually(lambda: row.uuid not in router.running, timeout=5, what="disable")

            async def state() -> str | None:
                current = await pg_store.get_mapping(row.uuid)
                return None if current is None else current.state

            await eventually(
                lambda: _is(state(), MappingState.DISABLED), timeout=5, what="Disabled state"
            )
            await conn.execute(
                "UPDATE event_source_mappings SET enabled = true, maximum_retry_attempts = 1 "
                "WHERE name = 'inbox'"
            )
            await eventually(lambda: row.uuid in router.running, timeout=5, what="re-enable")
            assert router.running[row.uuid].config.maximum_retry_attempts == 1
            (handlers / "inbox" / "after.txt").write_text("x")
            await eventually(lambda: len(_events(handlers)) == 1, what="delivery after enable")
        finally:
            await conn.close()


async def _is(value: Any, expected: Any) -> bool:
    return bool((await value) == expected)


async def test_invalid_sql_change_is_reported_and_other_mappings_keep_running(
    sqlite_store: SQLStore, handlers: Path
) -> None:
    async with run_router(_config(handlers, "record"), sqlite_store) as router:
        row = await sqlite_store.get_mapping_by_name("inbox")
        assert row is not None
        await eventually(lambda: row.uuid in router.running, what="mapping running")
        row.maximum_retry_attempts = 7  # async sources allow 0..2
        await sqlite_store.update_mapping(row)

        async def problem() -> bool:
            current = await sqlite_store.get_mapping(row.uuid)
            return current is not None and current.last_processing_result.startswith("PROBLEM")

        await eventually(problem, timeout=5, what="PROBLEM in last_processing_result")
        assert row.uuid not in router.running


async def test_failing_handler_retried_then_table_destination_then_replay(
    sqlite_store: SQLStore, handlers: Path, tmp_path: Path
) -> None:
    extra = """    destination_config:
      on_failure:
        destination: table
"""
    async with run_router(_config(handlers, "fail", extra), sqlite_store):
        (handlers / "inbox" / "poison.txt").write_text("boom")

        async def failed() -> list[Any]:
            return await sqlite_store.list_failed_events()

        events = await eventually(failed, what="failed event in the table")
    # Two retries by default for asynchronous sources: three invocations in all.
    assert len(_events(handlers)) == 3
    record = events[0].payload
    assert record["requestContext"]["condition"] == "RetriesExhausted"
    assert record["requestContext"]["approximateInvokeCount"] == 3
    assert record["responseContext"]["functionError"] == "Unhandled"
    assert record["responsePayload"]["errorType"] == "ValueError"
    s3 = record["requestPayload"]["Records"][0]["s3"]
    assert s3["object"]["key"] == "poison.txt"

    # Replay with a configuration whose handler now succeeds.
    config = tmp_path / "replay.yaml"
    config.write_text(_config(handlers, "record"))
    db = sqlite_store.url.split("///", 1)[1]
    env = {"PYTHONPATH": str(handlers), "EVENTS_FILE": str(handlers / "events.jsonl")}
    result = subprocess.run(
        [*router_command(), "replay", "--config", str(config), "--store", f"sqlite:///{db}"],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        cwd=handlers,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 replayed, 0 failed" in result.stdout
    assert _events(handlers)[-1] == record["requestPayload"]
    assert (await sqlite_store.list_failed_events()) == []
