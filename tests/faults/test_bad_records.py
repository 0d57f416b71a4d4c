"""A file whose name is not valid UTF-8 in a watched folder, through `router run`: it is
reported (log, counter, on-failure destination) and skipped, on every start, and every file
behind it is delivered."""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path

import aiohttp

from router.store import SQLStore
from tests.faults.harness import (
    FUNCTIONS,
    Deliveries,
    RouterProcess,
    directory_mapping,
    drop_files,
    file_ids,
    seq,
    statuses,
    until,
    write_workdir,
)


async def _metric(router: RouterProcess, name: str) -> str:
    found = re.findall(r"operations listener on (http://\S+)", router.log_text())
    async with aiohttp.ClientSession() as session, session.get(f"{found[-1]}/metrics") as r:
        text = await r.text()
    return " ".join(line for line in text.splitlines() if line.startswith(name))


async def test_a_file_name_that_is_not_utf8_is_reported_and_skipped_on_every_start(
    tmp_path: Path,
) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    Path(os.fsdecode(bytes(inbox) + b"/r\xe9sum\xe9.txt")).write_text("latin-1 name")
    drop_files(inbox, seq("behind", 5))
    mapping = (
        directory_mapping()
        + """\
    destination_config:
      on_failure:
        destination: table
"""
    )
    write_workdir(tmp_path, FUNCTIONS + mapping)
    store_url = f"sqlite:///{tmp_path / 'router.db'}"
    router = RouterProcess(tmp_path, store_url)
    deliveries = Deliveries(tmp_path / "deliveries.txt")
    names = seq("behind", 5)
    try:
        await asyncio.to_thread(router.start)
        await until(lambda: deliveries.has_all("inbox", file_ids(names)), 20, "files behind it")
        drop_files(inbox, seq("later", 3))
        names += seq("later", 3)
        await until(lambda: deliveries.has_all("inbox", file_ids(names)), 20, "later files")
        assert 'router_records_rejected_total{mapping="files"} 1' in await _metric(
            router, "router_records_rejected_total"
        )
        assert router.stop() == 0
        # Started again: the mapping runs, the file is not reported twice.
        drop_files(inbox, seq("after-restart", 2))
        names += seq("after-restart", 2)
        await asyncio.to_thread(router.start)
        await until(lambda: deliveries.has_all("inbox", file_ids(names)), 20, "after restart")
        assert (await statuses(store_url))["files"] in ("OK", "No records processed")
    finally:
        code = await asyncio.to_thread(router.stop)
    assert code == 0, router.log_text()
    assert "r\\xe9sum\\xe9.txt" in router.log_text()
    assert "not valid UTF-8" in router.log_text()
    store = SQLStore(store_url)
    await store.start()
    try:
        failed = await store.list_failed_events()
    finally:
        await store.aclose()
    assert [e.condition for e in failed] == ["RecordRejected"]
    payload = failed[0].payload
    assert payload["requestPayload"]["key"] == "r\\xe9sum\\xe9.txt"
    assert "not valid UTF-8" in payload["responsePayload"]["errorMessage"]
    assert deliveries.ids("inbox") == file_ids(names)
