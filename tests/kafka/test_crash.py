"""``kill -9`` of ``router run`` in the middle of a 20,000-record Kafka run: after a restart
every record is delivered, and first deliveries are in offset order per partition."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from tests.fixtures.kafka import TopicFactory
from tests.helpers import eventually, start_router_process, terminate
from tests.kafka.helpers import produce

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

TOTAL = 20_000
PARTITIONS = 4

HANDLER = """
import os
import time

OUT = os.environ["KAFKA_CRASH_FILE"]

def handle(event, context):
    lines = []
    for records in event["records"].values():
        for r in records:
            lines.append(f"{r['partition']} {r['offset']}\\n")
    with open(OUT, "a") as f:
        f.write("".join(lines))
    time.sleep(0.02)  # a function that takes a little time, so the kill lands mid-run
    return {}
"""


def lines(path: Path) -> list[tuple[int, int]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2:  # a line cut by the kill is not a delivery
            out.append((int(parts[0]), int(parts[1])))
    return out


async def test_kill_9_loses_nothing_and_keeps_order(
    tmp_path: Path, kafka_broker: str, make_topic: TopicFactory
) -> None:
    topic = await make_topic(PARTITIONS)
    per_partition = TOTAL // PARTITIONS
    for partition in range(PARTITIONS):
        await produce(kafka_broker, topic, [b"x" * 20] * per_partition, partition=partition)
    (tmp_path / "crash_handler.py").write_text(HANDLER)
    out = tmp_path / "deliveries.txt"
    config = tmp_path / "router.yaml"
    config.write_text(
        f"""
functions:
  fn:
    invoker: python
    handler: crash_handler:handle
mappings:
  - name: crash
    function: fn
    batch_size: 100
    starting_position: TRIM_HORIZON
    source:
      type: kafka
      bootstrap_servers: ["{kafka_broker}"]
      topics: [{topic}]
      consumer_group_id: g-crash
      session_timeout_ms: 1000
      heartbeat_interval_ms: 100
"""
    )
    store_url = f"sqlite:///{tmp_path / 'router.db'}"
    env = {"KAFKA_CRASH_FILE": str(out)}
    log = tmp_path / "router.log"
    proc = start_router_process(config, store_url, tmp_path, log, env)
    try:
        await eventually(
            lambda: len(lines(out)) >= TOTAL // 10, timeout=90, what="a tenth delivered"
        )
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        assert len(set(lines(out))) < TOTAL, "the kill came too late to test anything"
        proc = start_router_process(config, store_url, tmp_path, log, env)
        await eventually(
            lambda: len(set(lines(out))) == TOTAL, timeout=90, what="every record delivered"
        )
    finally:
        if proc.poll() is None:
            terminate(proc)
    firsts: dict[int, list[int]] = {p: [] for p in range(PARTITIONS)}
    seen: set[tuple[int, int]] = set()
    for partition, offset in lines(out):
        if (partition, offset) not in seen:
            seen.add((partition, offset))
            firsts[partition].append(offset)
    assert seen == {(p, o) for p in range(PARTITIONS) for o in range(per_partition)}
    for partition, order in firsts.items():
        assert order == list(range(per_partition)), f"partition {partition} out of order"
