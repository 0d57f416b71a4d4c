"""The PostgreSQL store stopped and started under two `router run` replicas with directory,
schedule and Kafka mappings: nothing is lost, schedule fires that came due during the outage
fire once across the replicas, every mapping recovers without a restart.

The store is a cluster of the test's own (``pg_cluster``), never the shared server. Two
outages: the 5-second restart an operator does, and 45 seconds, longer than the directory
lease (30 s) and the change feed's longest reconnect wait (30 s).
"""

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
    all_healthy,
    at_mapping,
    directory_mapping,
    drop_files,
    file_ids,
    kafka_mapping,
    seconds_from_now,
    seq,
    until,
    write_workdir,
)
from tests.fixtures.kafka import TopicFactory
from tests.fixtures.pg_cluster import PgCluster
from tests.kafka.helpers import produce

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

RECOVERY = 60.0
"""Seconds after the store is back within which everything must be delivered and healthy."""


async def _produce(broker: str, topic: str, ids: list[str], partition: int) -> None:
    await produce(broker, topic, [i.encode() for i in ids], partition=partition)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("outage", [5, 45], ids=["5s", "45s"])
async def test_store_restart_loses_nothing_and_every_mapping_recovers(
    outage: int,
    tmp_path: Path,
    pg_cluster: PgCluster,
    kafka_broker: str,
    make_topic: TopicFactory,
) -> None:
    url = await pg_cluster.create_database()
    await asyncio.to_thread(upgrade, url)
    topic = await make_topic(2)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    # When the store goes down: after both replicas joined the Kafka group (tansu holds a
    # join for half the session timeout, and the second replica's join means a second round).
    base = seconds_from_now(20)
    fire_at = {
        "before": base.timestamp() - 4,
        "during-a": base.timestamp() + 1,
        "during-b": base.timestamp() + outage - 2,
        "after": base.timestamp() + outage + 3,
    }
    config = FUNCTIONS + directory_mapping() + kafka_mapping("stream", kafka_broker, topic)
    for name, when in fire_at.items():
        config += at_mapping(f"at-{name}", datetime.fromtimestamp(when, UTC))
    write_workdir(tmp_path, config)
    replicas = [RouterProcess(tmp_path, url, replica=r) for r in ("replica-a", "replica-b")]
    deliveries = Deliveries(tmp_path / "deliveries.txt")
    files: list[str] = []
    stream: dict[int, list[str]] = {0: [], 1: []}

    async def feed(tag: str) -> None:
        names = seq(f"{tag}-file", 5)
        drop_files(inbox, names)
        files.extend(names)
        for p in (0, 1):
            ids = seq(f"{tag}-p{p}", 20)
            await _produce(kafka_broker, topic, ids, p)
            stream[p].extend(ids)

    try:
        for r in replicas:
            await asyncio.to_thread(r.start)
        await feed("before")
        # Delivering before the outage; a loaded machine can take longer than ``base`` to get
        # here, and then the store goes down at once.
        await until(lambda: len(deliveries.lines()) >= 45, 60, "the first files and records")
        await asyncio.sleep(max(0.0, base.timestamp() - time.time()))
        await asyncio.to_thread(pg_cluster.stop, "fast")
        await feed("during1")
        await asyncio.sleep(outage / 2)
        await feed("during2")
        await asyncio.sleep(outage / 2)
        await asyncio.to_thread(pg_cluster.start)
        back = time.monotonic()
        await feed("after")
        expected_fires = {f"at-{name}" for name in fire_at}

        def everything() -> bool:
            fired = {i.split("@")[0] for i in deliveries.ids("schedule")}
            return (
                deliveries.has_all("inbox", file_ids(files))
                and deliveries.has_all("kafka", set(stream[0]) | set(stream[1]))
                and fired >= expected_fires
            )

        left = RECOVERY - (time.monotonic() - back)
        await until(everything, max(left, 1), "every file, record and fire delivered")
        await until(
            lambda: all_healthy(url), RECOVERY - (time.monotonic() - back), "no PROBLEM left"
        )
        await asyncio.sleep(1.0)  # a fire delivered twice would show up now
        for r in replicas:
            assert r.alive and r.starts == 1, r.log_text()
    finally:
        codes = [await asyncio.to_thread(r.stop) for r in replicas]
    logs = "".join(r.log_text() for r in replicas)
    assert codes == [0, 0], logs
    # Each scheduled time fired exactly once across the two replicas.
    fires = [i for k, i, _ in deliveries.lines() if k == "schedule"]
    assert sorted(f.split("@")[0] for f in fires) == sorted(expected_fires), fires
    # Kafka: order per partition kept (first deliveries in offset order).
    firsts = deliveries.firsts("kafka")
    assert firsts == {"0": stream[0], "1": stream[1]}
    # The real cause was reported, never a bare ExceptionGroup, and nothing stopped for good.
    assert "store unavailable while" in logs
    assert "ExceptionGroup" not in logs and "source failed" not in logs
