"""A bounded soak with faults: two `router run` replicas on a PostgreSQL store of their own,
fed by a folder, three schedules, a Kafka topic and an SQS FIFO queue, every record with a
unique id, while faults are injected at random:

* ``store_restart``: the PostgreSQL cluster stopped (fast) for 5-20 s and started again;
* ``broker_restart``: the Kafka broker unreachable for 5-15 s (every connection to it cut and
  refused: the test broker keeps its data in memory only, so stopping its process would lose
  the topic; a proxy in front of it is stopped instead);
* ``invoker_down``: the function's HTTP endpoint (Lambda Invoke API) down for 10-20 s;
* ``destination_down``: the on-failure destination answering 503 for 10-20 s while poison
  records (which the function fails) arrive;
* ``router_kill``: ``kill -9`` of a replica, started again 2-8 s later;
* ``replica_pause``: SIGSTOP of a replica for twice the lease time, then SIGCONT.

One fault at a time: it is injected, held, ended, and then the run waits until every record
produced before its end has been delivered (its recovery time) and for a calm moment before the
next one. At the end production stops, the run drains, and a table per fault kind (records
attributed to the fault during or after which they were produced) and per source is printed:
produced / delivered / duplicates / lost / longest recovery. Order per lane (Kafka partition,
FIFO message group) is checked on first deliveries.

    .venv/bin/python bench/chaos.py --minutes 10 [--seed 1]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import logging
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import orjson
from aiohttp import web

from router.store.migrate import upgrade_async
from tests.fixtures.pg_cluster import PgCluster, pg_cluster_running
from tests.fixtures.procs import background, free_port
from tests.helpers import start_router_process

# moto with FIFO groups that come back in order after a visibility timeout, as SQS keeps them,
# and Kinesis writing only to open shards after a reshard
MOTO_SERVER = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "moto_server.py"
LEASE_TTL = 5
RECOVERY_LIMIT = 180.0
FAULTS = (
    "store_restart",
    "broker_restart",
    "invoker_down",
    "destination_down",
    "router_kill",
    "replica_pause",
)
SCHEDULES = ("tick-a", "tick-b", "tick-c")
GROUPS = ("g0", "g1", "g2")


# ---------------------------------------------------------------------------- bookkeeping


@dataclass
class Ledger:
    """What was produced (id -> (source, lane, fault kind then)) and delivered (id -> count)."""

    produced: dict[str, tuple[str, str, str]] = field(default_factory=dict)
    order: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    delivered: dict[str, int] = field(default_factory=dict)
    firsts: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    uncertain: set[str] = field(default_factory=set)
    fault = "calm"

    def produce(self, source: str, lane: str, ids: list[str]) -> None:
        for i in ids:
            self.produced[i] = (source, lane, self.fault)
        self.order.setdefault((source, lane), []).extend(ids)

    def deliver(self, source: str, lane: str, id_: str) -> None:
        count = self.delivered.get(id_, 0)
        self.delivered[id_] = count + 1
        if count == 0:
            self.firsts.setdefault((source, lane), []).append(id_)

    def missing(self, ids: list[str]) -> list[str]:
        return [i for i in ids if i not in self.delivered]


LEDGER = Ledger()


def _event_ids(event: dict[str, Any]) -> Iterator[tuple[str, str, str]]:
    if event.get("eventSource") == "SelfManagedKafka":
        for records in event["records"].values():
            for r in records:
                yield "kafka", str(r["partition"]), base64.b64decode(r["value"]).decode()
    elif event.get("detail-type") == "Scheduled Event":
        name = event["resources"][0].rsplit("/", 1)[1]
        yield "schedule", name, f"{name}@{event['time']}"
    else:
        for r in event.get("Records", []):
            if r.get("eventSource") == "aws:sqs":
                yield "sqs", r["attributes"].get("MessageGroupId", "-"), r["body"]
            else:
                key = r["s3"]["object"]["key"]
                yield "directory", key, key.removesuffix(".txt")


class Endpoint:
    """An HTTP server of this process on a fixed port that can go down and come back."""

    def __init__(self, routes: list[tuple[str, Any]]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._routes = routes
        self._runner: web.AppRunner | None = None
        self.failing = False

    async def start(self) -> None:
        app = web.Application(client_max_size=16 * 1024 * 1024)
        for path, handler in self._routes:
            app.router.add_post(path, handler)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True).start()

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()


async def _invoke(request: web.Request) -> web.Response:
    event = orjson.loads(await request.read())
    found = list(_event_ids(event))
    if any(i.startswith("poison") for _, _, i in found):
        return web.json_response(
            {"errorType": "Poison", "errorMessage": "a poison record"},
            headers={"X-Amz-Function-Error": "Unhandled"},
        )
    for source, lane, id_ in found:
        LEDGER.deliver(source, lane, id_)
    return web.json_response({})


DESTINATION: Endpoint


async def _destination(request: web.Request) -> web.Response:
    if DESTINATION.failing:
        return web.Response(status=503)
    record = orjson.loads(await request.read())
    for source, lane, id_ in _event_ids(record.get("payload") or {}):
        LEDGER.deliver(source, lane, id_)
    return web.json_response({})


class Proxy:
    """TCP proxy in front of the broker; ``down()`` cuts every connection and refuses new
    ones until ``up()``."""

    def __init__(self, target_port: int) -> None:
        self.port = free_port()
        self.target = target_port
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def up(self) -> None:
        self._server = await asyncio.start_server(
            self._serve, "127.0.0.1", self.port, reuse_address=True
        )

    async def down(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()
        if server is not None:
            await server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers.difference_update((writer, up_writer))


# ---------------------------------------------------------------------------- the router


class Replica:
    def __init__(self, name: str, workdir: Path, store_url: str) -> None:
        self.name = name
        self.workdir = workdir
        self.store_url = store_url
        self.log = workdir / f"router-{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {
            "ROUTER_REPLICA_ID": self.name,
            "ROUTER_RETRY_BASE_DELAY": "0.5",
            "ROUTER_RETRY_MAX_DELAY": "5",
        }
        self.proc = start_router_process(
            self.workdir / "router.yaml", self.store_url, self.workdir, self.log, env
        )

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, sig)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        assert self.proc is not None
        self.proc.wait(10)

    def stop(self) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.signal(signal.SIGCONT)
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.kill()
            return -9


def _config(invoker: str, destination: str, broker: str, topic: str, sqs: str, queue: str) -> str:
    ticks = "".join(
        f"""  - name: {name}
    function: sink
    source: {{type: schedule, schedule: "cron(* * * * ? *)", lease_ttl: {LEASE_TTL}}}
"""
        for name in SCHEDULES
    )
    return f"""\
functions:
  sink:
    invoker: http
    url: {invoker}
    timeout: 10
    connect_timeout: 1
mappings:
  - name: files
    function: sink
    source: {{type: directory, path: ./inbox, settle: 0.1, lease_ttl: {LEASE_TTL}}}
{ticks}  - name: stream
    function: sink
    batch_size: 10
    starting_position: TRIM_HORIZON
    maximum_retry_attempts: 0
    destination_config:
      on_failure:
        destination: {destination}/destination
    source:
      type: kafka
      bootstrap_servers: ["{broker}"]
      topics: [{topic}]
      consumer_group_id: chaos
      session_timeout_ms: 6000
      heartbeat_interval_ms: 500
  - name: queue
    function: sink
    batch_size: 5
    source:
      type: sqs
      queue_url: {queue}
      endpoint_url: {sqs}
      region: us-east-1
      wait_time_seconds: 1
"""


# ---------------------------------------------------------------------------- producing


class Producer:
    def __init__(self, inbox: Path, broker: str, topic: str, sqs: Any, queue: str) -> None:
        self.inbox = inbox
        self.broker = broker
        self.topic = topic
        self.sqs = sqs
        self.queue = queue
        self.n = 0
        self.poison_next = False
        self.kafka: Any = None

    async def tick(self) -> None:
        self.n += 1
        n = self.n
        name = f"file-{n:06d}"
        (self.inbox / f"{name}.txt").write_text(name)
        LEDGER.produce("directory", f"{name}.txt", [name])
        await asyncio.gather(self._kafka(n), self._sqs(n))

    async def _kafka(self, n: int) -> None:
        from aiokafka import AIOKafkaProducer

        if self.kafka is None:
            producer = AIOKafkaProducer(
                bootstrap_servers=self.broker, acks="all", enable_idempotence=False
            )
            try:
                await producer.start()
            except Exception:
                await producer.stop()
                return
            self.kafka = producer
        for p in (0, 1):
            ids = [f"p{p}-{n:06d}-{k}" for k in range(5)]
            if self.poison_next and p == 0:
                ids[2] = f"poison-{n:06d}"
                self.poison_next = False
            try:
                async with asyncio.timeout(5):
                    futures = [
                        await self.kafka.send(self.topic, i.encode(), partition=p) for i in ids
                    ]
                    await asyncio.gather(*futures)
            except Exception:
                LEDGER.uncertain.update(ids)
                with contextlib.suppress(Exception):
                    await self.kafka.stop()
                self.kafka = None
                return
            LEDGER.produce("kafka", str(p), ids)

    async def _sqs(self, n: int) -> None:
        entries = [{"Id": g, "MessageBody": f"{g}-{n:06d}", "MessageGroupId": g} for g in GROUPS]
        try:
            await self.sqs.send_message_batch(QueueUrl=self.queue, Entries=entries)
        except Exception:
            LEDGER.uncertain.update(e["MessageBody"] for e in entries)
            return
        for e in entries:
            LEDGER.produce("sqs", e["MessageGroupId"], [e["MessageBody"]])


# ---------------------------------------------------------------------------- the run


@dataclass
class FaultStats:
    injected: int = 0
    recovery: list[float] = field(default_factory=list)
    unrecovered: int = 0


async def _caught_up(ids: list[str]) -> float | None:
    started = time.monotonic()
    while time.monotonic() - started < RECOVERY_LIMIT:
        if not LEDGER.missing(ids):
            return time.monotonic() - started
        await asyncio.sleep(0.2)
    return None


async def _inject(
    kind: str,
    rng: random.Random,
    cluster: PgCluster,
    proxy: Proxy,
    invoker: Endpoint,
    producer: Producer,
    replicas: list[Replica],
) -> None:
    if kind == "store_restart":
        await asyncio.to_thread(cluster.stop, "fast")
        await asyncio.sleep(rng.uniform(5, 20))
        await asyncio.to_thread(cluster.start)
    elif kind == "broker_restart":
        await proxy.down()
        await asyncio.sleep(rng.uniform(5, 15))
        await proxy.up()
    elif kind == "invoker_down":
        await invoker.stop()
        await asyncio.sleep(rng.uniform(10, 20))
        await invoker.start()
    elif kind == "destination_down":
        DESTINATION.failing = True
        producer.poison_next = True
        await asyncio.sleep(rng.uniform(10, 20))
        DESTINATION.failing = False
    elif kind == "router_kill":
        replica = rng.choice(replicas)
        await asyncio.to_thread(replica.kill)
        await asyncio.sleep(rng.uniform(2, 8))
        replica.start()
    elif kind == "replica_pause":
        replica = rng.choice(replicas)
        replica.signal(signal.SIGSTOP)
        await asyncio.sleep(2 * LEASE_TTL + rng.uniform(0, 2))
        replica.signal(signal.SIGCONT)


async def _running(replica: Replica) -> None:
    while "running:" not in (replica.log.read_text() if replica.log.exists() else ""):
        assert replica.proc is not None
        if replica.proc.poll() is not None:
            raise SystemExit(f"{replica.name} exited:\n{replica.log.read_text()}")
        await asyncio.sleep(0.1)


def _expected_fires(start: float, end: float) -> list[str]:
    out: list[str] = []
    minute = (int(start) // 60 + 1) * 60
    while minute <= end:
        stamp = datetime.fromtimestamp(minute, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        out.extend(f"{name}@{stamp}" for name in SCHEDULES)
        minute += 60
    return out


async def run(minutes: float, seed: int) -> None:
    rng = random.Random(seed)
    import aioboto3
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    work = Path(tempfile.mkdtemp(prefix="router-chaos-"))
    (work / "inbox").mkdir()
    moto_port = free_port()
    os.environ.update(
        {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x", "AWS_DEFAULT_REGION": "us-east-1"}
    )
    moto = [sys.executable, str(MOTO_SERVER), "-H", "127.0.0.1", "-p", str(moto_port)]
    kafka_port = free_port()
    stats = {kind: FaultStats() for kind in FAULTS}
    global DESTINATION
    with (
        pg_cluster_running() as cluster,
        background(moto, port=moto_port, timeout=60),
        contextlib.ExitStack() as stack,
    ):
        proxy = Proxy(kafka_port)
        await proxy.up()
        # The broker advertises the proxy: every client goes through it.
        stack.enter_context(_broker(kafka_port, proxy.port))
        broker = f"127.0.0.1:{proxy.port}"
        admin = AIOKafkaAdminClient(bootstrap_servers=broker)
        await admin.start()
        await admin.create_topics([NewTopic("chaos", num_partitions=2, replication_factor=1)])
        await admin.close()
        sqs_url = f"http://127.0.0.1:{moto_port}"
        session = aioboto3.Session(region_name="us-east-1")
        async with session.client("sqs", endpoint_url=sqs_url) as sqs:
            queue = (
                await sqs.create_queue(
                    QueueName="chaos.fifo",
                    Attributes={
                        "FifoQueue": "true",
                        "ContentBasedDeduplication": "true",
                        "VisibilityTimeout": "10",
                    },
                )
            )["QueueUrl"]
            invoker = Endpoint([("/2015-03-31/functions/{name}/invocations", _invoke)])
            DESTINATION = Endpoint([("/destination", _destination)])
            await invoker.start()
            await DESTINATION.start()
            store_url = await cluster.create_database()
            await upgrade_async(store_url)
            (work / "router.yaml").write_text(
                _config(invoker.url, DESTINATION.url, broker, "chaos", sqs_url, queue)
            )
            replicas = [Replica(n, work, store_url) for n in ("replica-a", "replica-b")]
            for r in replicas:
                # One after the other: the first applies the YAML into the empty store.
                r.start()
                await _running(r)
            producer = Producer(work / "inbox", broker, "chaos", sqs, queue)
            started = time.time()
            end = time.monotonic() + minutes * 60
            stop_producing = asyncio.Event()

            async def produce_forever() -> None:
                while not stop_producing.is_set():
                    await producer.tick()
                    await asyncio.sleep(0.5)

            producing = asyncio.create_task(produce_forever())
            print(f"chaos: {minutes} min, seed {seed}, work dir {work}", flush=True)
            await asyncio.sleep(20)  # calm start: replicas join, first records flow
            while time.monotonic() < end - 30:
                kind = rng.choice(FAULTS)
                LEDGER.fault = kind
                stats[kind].injected += 1
                t0 = time.monotonic()
                await _inject(kind, rng, cluster, proxy, invoker, producer, replicas)
                ids = [i for i in LEDGER.produced if i not in LEDGER.delivered]
                took = await _caught_up(ids)
                if took is None:
                    stats[kind].unrecovered += 1
                else:
                    stats[kind].recovery.append(took)
                print(
                    f"  {kind:17s} held {time.monotonic() - t0 - (took or 0):5.1f}s, "
                    f"recovered in {'>180' if took is None else f'{took:.1f}'}s",
                    flush=True,
                )
                await asyncio.sleep(rng.uniform(3, 10))
            stop_producing.set()
            await producing
            produced_until = time.time()
            for fire in _expected_fires(started + 15, produced_until - 5):
                LEDGER.produce("schedule", fire.split("@")[0], [fire])
            drain = await _caught_up(list(LEDGER.produced))
            print(f"  drained in {'>180' if drain is None else f'{drain:.1f}'}s", flush=True)
            await asyncio.sleep(3)  # late duplicates
            codes = [await asyncio.to_thread(r.stop) for r in replicas]
            if producer.kafka is not None:
                await producer.kafka.stop()
            await invoker.stop()
            await DESTINATION.stop()
        await proxy.down()
    _report(stats, codes, work)


@contextlib.contextmanager
def _broker(port: int, advertised: int) -> Iterator[None]:
    from tests.fixtures.kafka import tansu_binary

    argv = [
        str(tansu_binary()),
        "broker",
        "--listener-url",
        f"tcp://127.0.0.1:{port}",
        "--advertised-listener-url",
        f"tcp://127.0.0.1:{advertised}",
        "--storage-engine",
        "memory://tansu/",
    ]
    with background(argv, port=port):
        yield


def _report(stats: dict[str, FaultStats], codes: list[int], work: Path) -> None:
    rows: dict[str, list[int]] = {}
    by_source: dict[str, list[int]] = {}
    for id_, (source, _, fault) in LEDGER.produced.items():
        count = LEDGER.delivered.get(id_, 0)
        for table, key in ((rows, fault), (by_source, source)):
            row = table.setdefault(key, [0, 0, 0, 0])
            row[0] += 1
            row[1] += count > 0
            row[2] += max(0, count - 1)
            row[3] += count == 0
    disorder: list[str] = []
    for (source, lane), ids in LEDGER.order.items():
        if source in ("kafka", "sqs"):
            wanted = [i for i in ids if not i.startswith("poison")]
            known = set(wanted)
            got = [i for i in LEDGER.firsts.get((source, lane), []) if i in known]
            arrived = set(got)
            expected = [i for i in wanted if i in arrived]
            if got != expected:
                at = next(n for n, (a, b) in enumerate(zip(got, expected, strict=True)) if a != b)
                disorder.append(f"{source} {lane}: {got[at]} came before {expected[at]}")
    print()
    print(
        f"{'fault':18s} {'injected':>8s} {'produced':>9s} {'delivered':>9s} "
        f"{'duplicates':>10s} {'lost':>5s} {'longest recovery':>17s}"
    )
    for kind in ("calm", *FAULTS):
        produced, delivered, dups, lost = rows.get(kind, [0, 0, 0, 0])
        s = stats.get(kind)
        injected = s.injected if s else 0
        longest = "-"
        if s and s.recovery:
            longest = f"{max(s.recovery):.1f}s"
        if s and s.unrecovered:
            longest = f">{RECOVERY_LIMIT:.0f}s ({s.unrecovered}x)"
        print(
            f"{kind:18s} {injected:8d} {produced:9d} {delivered:9d} {dups:10d} {lost:5d} "
            f"{longest:>17s}"
        )
    print()
    print(f"{'source':18s} {'produced':>9s} {'delivered':>9s} {'duplicates':>10s} {'lost':>5s}")
    for source, (produced, delivered, dups, lost) in sorted(by_source.items()):
        print(f"{source:18s} {produced:9d} {delivered:9d} {dups:10d} {lost:5d}")
    print()
    for line in disorder:
        print(f"  out of order: {line}")
    print(
        f"lanes out of order (first deliveries): {len(disorder)}; "
        f"records of failed sends (not counted): {len(LEDGER.uncertain)}; "
        f"replica exit codes: {codes}; logs in {work}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=int(time.time()))
    args = parser.parse_args()
    # The producer's client complains at every broker outage: the table is what counts.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    asyncio.run(run(args.minutes, args.seed))


if __name__ == "__main__":
    main()
