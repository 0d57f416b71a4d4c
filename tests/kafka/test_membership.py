"""Static group membership: a replica killed with ``kill -9`` and started again gets its
partitions back without waiting for its old session to expire; a static member the cluster
does not let join falls back to dynamic membership and says so."""

from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer

from connectors.kafka.membership import (
    INSTANCE_ID_MAX,
    group_instance_id,
    static_membership_supported,
)
from router.store import SQLStore
from tests.fixtures.kafka import TopicFactory
from tests.helpers import eventually, start_router_process, terminate
from tests.kafka.helpers import make_source, offsets, produce, running
from tests.kafka.sink import RecordingSink

pytestmark = pytest.mark.kafka

PARTITIONS = 4

HANDLER = """
import os

def handle(event, context):
    with open(os.environ["MEMBERSHIP_OUT"], "a") as f:
        for records in event["records"].values():
            for r in records:
                f.write(f"{r['partition']} {r['offset']}\\n")
    return {}
"""


def test_instance_ids_are_stable_distinct_and_valid() -> None:
    uuid_ = "0d9b5a1e-4b7e-4c43-9d5f-6f1f0c1a2b3c"
    one = group_instance_id("router-0.example.com", uuid_)
    assert one == group_instance_id("router-0.example.com", uuid_)
    assert one != group_instance_id("router-1.example.com", uuid_)
    assert one != group_instance_id("router-0.example.com", "another-mapping")
    odd = group_instance_id("host name/with:odd*chars", uuid_)
    assert odd == f"host_name_with_odd_chars.{uuid_}"
    long = group_instance_id("r" * 400, uuid_)
    assert len(long) <= INSTANCE_ID_MAX
    assert long.endswith(uuid_)
    assert long != group_instance_id("r" * 399, uuid_)


async def test_the_test_broker_takes_static_members(kafka_broker: str, kafka_topic: str) -> None:
    """The API versions are read where static_membership_supported expects them."""
    consumer = AIOKafkaConsumer(
        kafka_topic,
        bootstrap_servers=kafka_broker,
        group_id="g-versions",
        group_instance_id="versions-1",
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
    )
    await consumer.start()
    try:
        assert static_membership_supported(consumer) is True
    finally:
        await consumer.stop()


def _delivered(path: Path) -> list[tuple[int, int]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2:  # a line cut by the kill is not a delivery
            out.append((int(parts[0]), int(parts[1])))
    return out


def _newest(path: Path) -> dict[int, int]:
    newest: dict[int, int] = {}
    for partition, offset in _delivered(path):
        newest[partition] = max(newest.get(partition, -1), offset)
    return newest


@pytest.mark.slow
async def test_a_replica_restarted_after_kill_9_gets_its_partitions_back_at_once(
    tmp_path: Path, kafka_broker: str, make_topic: TopicFactory
) -> None:
    """After the kill, the dead consumer's session lives on for ``session_timeout_ms``. A
    dynamic member that restarts shares the partitions with it until then, so not every
    partition is delivered again before the session expires. The restarted static member
    takes its place at once: every partition is delivered well before."""
    session = 40_000
    topic = await make_topic(PARTITIONS)
    (tmp_path / "membership_handler.py").write_text(HANDLER)
    out = tmp_path / "out.txt"
    config = tmp_path / "router.yaml"
    config.write_text(
        f"""
functions:
  fn:
    invoker: python
    handler: membership_handler:handle
mappings:
  - name: restart
    function: fn
    starting_position: TRIM_HORIZON
    source:
      type: kafka
      bootstrap_servers: ["{kafka_broker}"]
      topics: [{topic}]
      session_timeout_ms: {session}
      heartbeat_interval_ms: 3000
"""
    )
    store = f"sqlite:///{tmp_path / 'router.db'}"
    env = {"MEMBERSHIP_OUT": str(out), "ROUTER_REPLICA_ID": "replica-a"}
    log = tmp_path / "router.log"

    async def one_per_partition() -> None:
        for partition in range(PARTITIONS):
            await produce(kafka_broker, topic, [b"x"], partition=partition, one_by_one=True)

    proc = start_router_process(config, store, tmp_path, log, env)
    try:
        await one_per_partition()
        await eventually(
            lambda: len(_newest(out)) == PARTITIONS, timeout=90, what="every partition delivered"
        )
        assert "static member replica-a." in log.read_text()
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        before = _newest(out)
        await one_per_partition()
        restarted = time.monotonic()
        proc = start_router_process(config, store, tmp_path, log, env)

        def recovered() -> bool:
            newest = _newest(out)
            return all(newest.get(p, -1) > before[p] for p in range(PARTITIONS))

        await eventually(recovered, timeout=90, interval=0.2, what="every partition again")
        took = time.monotonic() - restarted
    finally:
        if proc.poll() is None:
            terminate(proc)
    assert took < session / 1000, (
        f"took {took:.1f}s: the restarted replica waited for its old session to expire"
    )


async def test_a_static_member_that_cannot_join_falls_back_to_dynamic(
    sqlite_store: SQLStore,
    kafka_broker: str,
    make_topic: TopicFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """tansu does not let a static member join a group whose leader was another static member
    that is gone; the source notices, says so, and joins as a dynamic member."""
    caplog.set_level(logging.INFO, "connectors.kafka")
    topic = await make_topic(2)
    for partition in range(2):
        await produce(kafka_broker, topic, [b"x"] * 3, partition=partition)
    uuid_ = "3f0c1a52-0000-4000-8000-0000000000aa"
    group = "g-static-fallback"
    first = make_source(
        sqlite_store,
        kafka_broker,
        [topic],
        group=group,
        uuid_=uuid_,
        replica="gone",
        static_membership=True,
    )
    sink1 = RecordingSink()
    async with running(first, sink1):
        await sink1.wait_count(6, timeout=60)
    # "gone" stopped without leaving the group (a static member does not); another replica:
    second = make_source(
        sqlite_store,
        kafka_broker,
        [topic],
        group=group,
        uuid_=uuid_,
        replica="other",
        static_membership=True,
    )
    sink2 = RecordingSink()
    async with running(second, sink2):
        records = await sink2.wait_count(6, timeout=90)
        assert sorted(offsets(records)) == [0, 0, 1, 1, 2, 2]
    messages = [r.getMessage() for r in caplog.records if r.name == "connectors.kafka.source"]
    assert any(
        f"kafka group {group}: could not join as static member other.{uuid_}" in m
        and "joining as a dynamic member" in m
        for m in messages
    ), messages
    assert any(f"kafka group {group}: static member gone.{uuid_}" in m for m in messages)
