"""A Kafka cluster that goes away while ``router run`` reads from it: the log says so, and
stays readable (the client's own lines are rate-limited; it would otherwise repeat the same
few lines dozens of times a second)."""

from __future__ import annotations

import asyncio
import collections
import re
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from router import logs
from tests.fixtures.kafka import tansu_broker
from tests.fixtures.procs import stop_process
from tests.helpers import eventually, start_router_process, terminate

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

OUTAGE = 15.0
"""Seconds the broker stays down: well inside one rate-limit window."""


def _template(line: str) -> str:
    """A console log line without its time stamp and numbers: one entry per message."""
    message = line.split(" ", 2)[-1]
    return re.sub(r"\d+", "N", message)


async def test_a_kafka_outage_is_reported_in_a_bounded_number_of_lines(tmp_path: Path) -> None:
    (tmp_path / "outage_handler.py").write_text("def handle(event, context):\n    return {}\n")
    log = tmp_path / "router.log"
    with tansu_broker() as (broker, broker_process):
        admin = AIOKafkaAdminClient(bootstrap_servers=broker)
        await admin.start()
        try:
            await admin.create_topics([NewTopic("outage", 2, 1)])
        finally:
            await admin.close()
        config = tmp_path / "router.yaml"
        config.write_text(
            f"""
functions:
  fn:
    invoker: python
    handler: outage_handler:handle
mappings:
  - name: orders
    function: fn
    source:
      type: kafka
      bootstrap_servers: ["{broker}"]
      topics: [outage]
      session_timeout_ms: 4000
      heartbeat_interval_ms: 500
"""
        )
        proc = start_router_process(config, f"sqlite:///{tmp_path / 'r.db'}", tmp_path, log)
        try:
            await eventually(
                lambda: "assigned" in log.read_text(), timeout=60, what="partitions assigned"
            )
            before = len(log.read_text().splitlines())
            stop_process(broker_process)
            await asyncio.sleep(OUTAGE)
            during = log.read_text().splitlines()[before:]
        finally:
            if proc.poll() is None:
                terminate(proc)
    assert any(
        "WARNING connectors.kafka.source: kafka" in line and "cluster unreachable" in line
        for line in during
    ), "\n".join(during)
    repeats = collections.Counter(_template(line) for line in during)
    worst, count = repeats.most_common(1)[0]
    assert count <= logs.LINES, f"{count} times in {OUTAGE:g}s: {worst}"
