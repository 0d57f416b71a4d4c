"""Three ``router run`` processes on one PostgreSQL store sharing the 8 shards of a Kinesis
stream (moto): each holds its fair share; one is killed with ``kill -9``; its shards are
taken by the others within the lease time and nothing is lost; first deliveries stay in
order per shard."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from connectors.aws.streams.leases import live_members
from router.store import SQLStore
from tests.aws.streams import RECORDING_HANDLER, deliveries, make_stream, put
from tests.helpers import eventually, start_router_process, terminate

pytestmark = [pytest.mark.aws, pytest.mark.postgres, pytest.mark.slow]

SHARDS = 8
LEASE = 3.0


async def held(store: SQLStore) -> dict[str, int]:
    row = await store.get_mapping_by_name("shared")
    if row is None:
        return {}
    return live_members(await store.get_checkpoints(row.uuid), time.time(), LEASE)


async def test_three_replicas_share_shards_and_take_a_killed_ones_over(
    tmp_path: Path, aws: Any, pg_store: SQLStore, pg_upgraded_url: str
) -> None:
    async with aws.client("kinesis") as kinesis:
        arn = await make_stream(kinesis, shards=SHARDS, prefix="shared")
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
  - name: shared
    function: fn
    batch_size: 10
    starting_position: TRIM_HORIZON
    source:
      type: kinesis
      stream_arn: {arn}
      endpoint_url: {aws.endpoint}
      region: us-east-1
      poll_interval: 0.2
      shard_sync_interval: 1
      checkpoint_interval: 0.1
      lease_duration: {LEASE}
"""
        )
        procs: dict[str, subprocess.Popen[bytes]] = {}
        try:
            for name in ("r1", "r2", "r3"):
                env = {"STREAM_REPLICA_FILE": str(out), "ROUTER_REPLICA_ID": name}
                log = tmp_path / f"{name}.log"
                procs[name] = start_router_process(config, pg_upgraded_url, tmp_path, log, env)
                await eventually(
                    lambda name=name: _has(held(pg_store), name),  # type: ignore[misc]
                    timeout=60,
                    what=f"{name} running",
                )

            async def fair() -> dict[str, int] | None:
                counts = await held(pg_store)
                if sorted(counts.values()) == [2, 3, 3]:
                    return counts
                return None

            counts = await eventually(fair, timeout=60, what="a fair share each (3, 3, 2)")
            victim = max(counts, key=lambda n: (counts[n], n))
            first = await put(kinesis, arn, [(f"k{i}", f"a{i}") for i in range(800)])
            await eventually(
                lambda: sum(1 for _, _, r in deliveries(out) if r == victim) >= 30,
                timeout=60,
                what=f"{victim} delivering",
            )
            os.killpg(procs[victim].pid, signal.SIGKILL)
            procs[victim].wait(10)
            killed_at = time.monotonic()
            second = await put(kinesis, arn, [(f"k{i}", f"b{i}") for i in range(400)])

            async def taken_over() -> bool:
                counts = await held(pg_store)
                return victim not in counts and sum(counts.values()) == SHARDS

            await eventually(taken_over, timeout=60, what="the killed replica's shards taken")
            takeover = time.monotonic() - killed_at
            expected = {(a["ShardId"], int(a["SequenceNumber"])) for a in first + second}

            def all_delivered() -> bool:
                return {(s, q) for s, q, _ in deliveries(out)} >= expected

            await eventually(all_delivered, timeout=90, what="every record delivered")
        finally:
            for proc in procs.values():
                if proc.poll() is None:
                    terminate(proc)
    # Within the lease time, plus a renewal round and the time to notice (member rows).
    assert takeover < LEASE * 3, takeover
    got = deliveries(out)
    assert {(s, q) for s, q, _ in got} == expected
    firsts: dict[str, list[int]] = {}
    seen: set[tuple[str, int]] = set()
    for shard, sequence, _ in got:
        if (shard, sequence) not in seen:
            seen.add((shard, sequence))
            firsts.setdefault(shard, []).append(sequence)
    for shard, order in firsts.items():
        assert order == sorted(order), f"{shard}: first deliveries out of order"
    readers = {replica for _, _, replica in got}
    assert readers == {"r1", "r2", "r3"}


async def _has(counts: Any, name: str) -> bool:
    return name in await counts
