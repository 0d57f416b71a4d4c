"""``kill -9`` of ``router run`` in the middle of a Kinesis stream (moto, SQLite store):
after a restart every record is delivered at least once, and first deliveries are in
sequence order per shard."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest

from tests.aws.streams import RECORDING_HANDLER, deliveries, make_stream, put
from tests.helpers import eventually, start_router_process, terminate

pytestmark = [pytest.mark.aws, pytest.mark.slow]

RECORDS = 2000


async def test_kill_9_mid_stream_loses_nothing_and_keeps_order(tmp_path: Path, aws: Any) -> None:
    async with aws.client("kinesis") as kinesis:
        arn = await make_stream(kinesis, shards=2, prefix="crash")
        answers = await put(kinesis, arn, [(f"k{i % 50}", f"r{i}") for i in range(RECORDS)])
    expected = {(a["ShardId"], int(a["SequenceNumber"])) for a in answers}
    (tmp_path / "replica_handler.py").write_text(RECORDING_HANDLER)
    out = tmp_path / "deliveries.txt"
    config = tmp_path / "router.yaml"
    config.write_text(
        f"""
functions:
  fn:
    invoker: python
    handler: replica_handler:handle
mappings:
  - name: crash
    function: fn
    batch_size: 20
    starting_position: TRIM_HORIZON
    source:
      type: kinesis
      stream_arn: {arn}
      endpoint_url: {aws.endpoint}
      region: us-east-1
      poll_interval: 0.2
      checkpoint_interval: 0.1
      lease_duration: 3
"""
    )
    store_url = f"sqlite:///{tmp_path / 'router.db'}"
    env = {"STREAM_REPLICA_FILE": str(out), "ROUTER_REPLICA_ID": "solo"}
    log = tmp_path / "router.log"
    proc = start_router_process(config, store_url, tmp_path, log, env)
    try:
        await eventually(
            lambda: len(deliveries(out)) >= RECORDS // 10, timeout=90, what="a tenth delivered"
        )
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        assert len({(s, q) for s, q, _ in deliveries(out)}) < RECORDS, "the kill came too late"
        proc = start_router_process(config, store_url, tmp_path, log, env)
        await eventually(
            lambda: {(s, q) for s, q, _ in deliveries(out)} >= expected,
            timeout=120,
            what="every record delivered",
        )
    finally:
        if proc.poll() is None:
            terminate(proc)
    firsts: dict[str, list[int]] = {}
    seen: set[tuple[str, int]] = set()
    for shard, sequence, _ in deliveries(out):
        if (shard, sequence) not in seen:
            seen.add((shard, sequence))
            firsts.setdefault(shard, []).append(sequence)
    assert seen == expected
    for shard, order in firsts.items():
        assert order == sorted(order), f"{shard}: first deliveries out of order"
