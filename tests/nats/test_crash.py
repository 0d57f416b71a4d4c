"""``kill -9`` of ``router run`` in the middle of a NATS JetStream run: after a restart every
message is delivered at least once (the server delivers again what was not acknowledged,
after ``ack_wait``)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import nats
import pytest

from tests.fixtures.nats import StreamFactory
from tests.helpers import eventually, start_router_process, terminate

pytestmark = [pytest.mark.nats, pytest.mark.slow]

TOTAL = 4_000

HANDLER = """
import os
import time

OUT = os.environ["NATS_CRASH_FILE"]

def handle(event, context):
    lines = []
    for subject, records in event["records"].items():
        for r in records:
            lines.append(f"{subject} {r['sequence']}\\n")
    with open(OUT, "a") as f:
        f.write("".join(lines))
    time.sleep(0.02)  # a function that takes a little time, so the kill lands mid-run
    return {}
"""


def lines(path: Path) -> list[tuple[str, int]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():  # a line cut by the kill is not a delivery
            out.append((parts[0], int(parts[1])))
    return out


async def test_kill_9_loses_nothing(
    tmp_path: Path, nats_url: str, nats_streams: StreamFactory
) -> None:
    stream = await nats_streams("CRASH")
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        acks = [await js.publish(f"{stream}.{i % 4}", b"x" * 20) for i in range(TOTAL)]
    finally:
        await nc.close()
    seqs = {a.seq for a in acks}
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
      type: nats
      servers: ["{nats_url}"]
      stream: {stream}
      subjects: ["{stream}.>"]
      ack_wait: 2
"""
    )
    store_url = f"sqlite:///{tmp_path / 'router.db'}"
    env = {"NATS_CRASH_FILE": str(out), "ROUTER_REPLICA_ID": "r1"}
    log = tmp_path / "router.log"
    proc = start_router_process(config, store_url, tmp_path, log, env)
    try:
        await eventually(
            lambda: len(lines(out)) >= TOTAL // 10, timeout=90, what="a tenth delivered"
        )
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        assert len({s for _, s in lines(out)}) < TOTAL, "the kill came too late to test anything"
        proc = start_router_process(config, store_url, tmp_path, log, env)
        await eventually(
            lambda: {s for _, s in lines(out)} == seqs, timeout=120, what="every message"
        )
    finally:
        if proc.poll() is None:
            terminate(proc)
