"""``kill -9`` of ``router run`` in the middle of a Redis Streams run: after a restart with the
same replica id, every entry is delivered, first deliveries in entry order per stream."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from tests.helpers import eventually, start_router_process, terminate

pytestmark = [pytest.mark.redis, pytest.mark.slow]

TOTAL = 6_000
STREAMS = 2

HANDLER = """
import os
import time

OUT = os.environ["REDIS_CRASH_FILE"]

def handle(event, context):
    lines = []
    for stream, records in event["records"].items():
        for r in records:
            lines.append(f"{stream} {r['id']}\\n")
    with open(OUT, "a") as f:
        f.write("".join(lines))
    time.sleep(0.02)  # a function that takes a little time, so the kill lands mid-run
    return {}
"""


def lines(path: Path) -> list[tuple[str, str]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2 and "-" in parts[1]:  # a line cut by the kill is not a delivery
            out.append((parts[0], parts[1]))
    return out


async def test_kill_9_loses_nothing_and_keeps_order(
    tmp_path: Path, redis_url: str, redis_streams: Callable[[str], str]
) -> None:
    streams = [redis_streams("crash") for _ in range(STREAMS)]
    client = aioredis.Redis.from_url(redis_url)
    ids: dict[str, list[str]] = {}
    try:
        for stream in streams:
            async with client.pipeline(transaction=False) as pipe:
                for i in range(TOTAL // STREAMS):
                    pipe.xadd(stream, {"data": f"{i}"})
                got: Any = await pipe.execute()
            ids[stream] = [i.decode() for i in got]
    finally:
        await client.aclose()
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
      type: redis
      url: "{redis_url}"
      streams: [{", ".join(streams)}]
      group: g-crash
"""
    )
    store_url = f"sqlite:///{tmp_path / 'router.db'}"
    env = {"REDIS_CRASH_FILE": str(out), "ROUTER_REPLICA_ID": "r1"}
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
            lambda: len(set(lines(out))) == TOTAL, timeout=90, what="every entry delivered"
        )
    finally:
        if proc.poll() is None:
            terminate(proc)
    firsts: dict[str, list[str]] = {s: [] for s in streams}
    seen: set[tuple[str, str]] = set()
    for stream, entry_id in lines(out):
        if (stream, entry_id) not in seen:
            seen.add((stream, entry_id))
            firsts[stream].append(entry_id)
    for stream in streams:
        assert firsts[stream] == ids[stream], f"stream {stream} out of order or incomplete"
