"""Two `router run` replicas on one PostgreSQL store: a replica paused (SIGSTOP) for longer
than its lease loses it, and waits for it again instead of stopping its source; a replica
killed with kill -9 has its directory and schedule work taken over by the other."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from router.store.migrate import upgrade
from tests.faults.harness import (
    FUNCTIONS,
    Deliveries,
    RouterProcess,
    at_mapping,
    directory_mapping,
    drop_files,
    file_ids,
    seconds_from_now,
    seq,
    until,
    write_workdir,
)

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

TTL = 3
"""lease_ttl of the mappings (seconds): short, so that the test is."""


async def _store(empty_pg_url: str) -> str:
    await asyncio.to_thread(upgrade, empty_pg_url)
    return empty_pg_url


@pytest.mark.timeout(180)
async def test_a_paused_replica_loses_its_lease_then_waits_for_it_and_takes_it_back(
    tmp_path: Path, empty_pg_url: str
) -> None:
    url = await _store(empty_pg_url)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    write_workdir(tmp_path, FUNCTIONS + directory_mapping(lease_ttl=TTL))
    a = RouterProcess(tmp_path, url, replica="replica-a")
    b = RouterProcess(tmp_path, url, replica="replica-b")
    deliveries = Deliveries(tmp_path / "deliveries.txt")
    names: list[str] = []

    async def drop(tag: str) -> None:
        batch = seq(tag, 3)
        drop_files(inbox, batch)
        names.extend(batch)
        await until(lambda: deliveries.has_all("inbox", file_ids(names)), 30, f"{tag} delivered")

    try:
        await asyncio.to_thread(a.start)
        await until(lambda: "new or changed since last run" in a.log_text(), 20, "a scans")
        await asyncio.to_thread(b.start)  # standby: a holds the lease
        await drop("first")
        a.pause()
        await asyncio.sleep(3 * TTL)  # the lease expires; b takes it over
        await drop("while-a-paused")
        a.resume()
        await asyncio.sleep(2 * TTL)  # a's next renewal finds the lease taken
        await drop("after-resume")
        await asyncio.to_thread(b.kill)
        killed = time.monotonic()
        await drop("after-b-died")  # only a is left to deliver these
        took = time.monotonic() - killed
        assert a.alive and a.starts == 1
    finally:
        code = await asyncio.to_thread(a.stop)
        if b.alive:
            await asyncio.to_thread(b.stop)
    assert code == 0, a.log_text()
    assert deliveries.has_all("inbox", file_ids(names))
    assert "was taken over by another replica" in a.log_text()
    assert "took over the lease" in a.log_text()
    print(f"a took the lease back {took:.1f}s after b died")


@pytest.mark.timeout(180)
async def test_a_replica_killed_has_its_directory_and_schedule_work_taken_over(
    tmp_path: Path, empty_pg_url: str
) -> None:
    url = await _store(empty_pg_url)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    first = seconds_from_now(10)
    config = FUNCTIONS + directory_mapping(lease_ttl=TTL)
    fires = {f"tick-{i}": first.timestamp() + 3 * i for i in range(4)}
    for name, when in fires.items():
        config += at_mapping(name, datetime.fromtimestamp(when, UTC), lease_ttl=TTL)
    write_workdir(tmp_path, config)
    # a's function is slow, so the kill lands while it holds files and fires in flight.
    a = RouterProcess(tmp_path, url, replica="replica-a", env={"FAULT_DELAY": "2"})
    b = RouterProcess(tmp_path, url, replica="replica-b")
    deliveries = Deliveries(tmp_path / "deliveries.txt")
    names = seq("file", 10)
    try:
        await asyncio.to_thread(a.start)
        await until(lambda: "new or changed since last run" in a.log_text(), 20, "a scans")
        await asyncio.to_thread(b.start)
        drop_files(inbox, names[:5])
        await asyncio.sleep(max(0.0, first.timestamp() + 1 - time.time()))  # tick-0 in flight
        await asyncio.to_thread(a.kill)
        killed = time.monotonic()
        drop_files(inbox, names[5:])
        await until(
            lambda: (
                deliveries.has_all("inbox", file_ids(names))
                and {i.split("@")[0] for i in deliveries.ids("schedule")} >= set(fires)
            ),
            60,
            "every file and every fire delivered by b",
        )
        took = time.monotonic() - killed
        assert b.alive and b.starts == 1
    finally:
        code = await asyncio.to_thread(b.stop)
    assert code == 0, b.log_text()
    print(f"b delivered everything {took:.1f}s after a died")
