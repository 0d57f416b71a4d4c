"""What the fault tests share: a handler that writes down every record it is given, a reader
of what it wrote, `router run` processes that can be killed, paused and restarted, and
producers for each source.

Every record carries a unique id; the handler appends one line per record, ``KIND ID LANE``,
after the invocation's work is done (a line is a delivery). A test asserts on those lines:
every id produced is there (nothing lost), and per lane the first delivery of each id comes
in production order (order kept; a re-delivery after a fault may repeat ids).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from router.store import SQLStore
from tests.helpers import start_router_process

HANDLER = """\
import base64, os, time

OUT = os.environ["FAULT_OUT"]


def _lines(event):
    if event.get("eventSource") == "SelfManagedKafka":
        for records in event["records"].values():
            for r in records:
                yield "kafka", base64.b64decode(r["value"]).decode(), str(r["partition"])
    elif event.get("detail-type") == "Scheduled Event":
        name = event["resources"][0].rsplit("/", 1)[1]
        yield "schedule", name + "@" + event["time"], name
    else:
        for r in event.get("Records", []):
            if r.get("eventSource") == "aws:sqs":
                group = r["attributes"].get("MessageGroupId", "-")
                yield "sqs", r["body"], group
            else:
                key = r["s3"]["object"]["key"]
                yield r["s3"]["bucket"]["name"], key, key


def handle(event, context):
    lines = [" ".join(parts) + "\\n" for parts in _lines(event)]
    poison = os.environ.get("FAULT_POISON")
    if poison and any(poison in line for line in lines):
        raise RuntimeError("poison record")
    delay = float(os.environ.get("FAULT_DELAY", "0"))
    if delay:
        time.sleep(delay)
    with open(OUT, "a") as f:
        f.write("".join(lines))
    return {}
"""


class Deliveries:
    """The lines the handler wrote."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def lines(self) -> list[tuple[str, str, str]]:
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_text(errors="replace").splitlines():
            parts = line.split(" ")
            if len(parts) == 3:  # a line cut by a kill is not a delivery
                out.append((parts[0], parts[1], parts[2]))
        return out

    def ids(self, kind: str) -> set[str]:
        return {i for k, i, _ in self.lines() if k == kind}

    def count(self, kind: str, id_: str) -> int:
        return sum(1 for k, i, _ in self.lines() if k == kind and i == id_)

    def firsts(self, kind: str) -> dict[str, list[str]]:
        """Per lane, ids in the order of their first delivery."""
        seen: set[str] = set()
        lanes: dict[str, list[str]] = {}
        for k, i, lane in self.lines():
            if k == kind and i not in seen:
                seen.add(i)
                lanes.setdefault(lane, []).append(i)
        return lanes

    def has_all(self, kind: str, ids: set[str]) -> bool:
        return ids <= self.ids(kind)


def seq(prefix: str, n: int, start: int = 0) -> list[str]:
    """Ids that sort in production order: ``p0-00007``."""
    return [f"{prefix}-{i:05d}" for i in range(start, start + n)]


async def until(
    check: Callable[[], Any], timeout: float, what: str, interval: float = 0.1
) -> float:
    """Wait for ``check()`` (sync or async) to be truthy; returns the seconds it took."""
    started = time.monotonic()
    deadline = started + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return time.monotonic() - started
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        await asyncio.sleep(interval)


class RouterProcess:
    """One `router run` replica: start, kill -9, pause (SIGSTOP) / resume, stop."""

    def __init__(
        self,
        workdir: Path,
        store_url: str,
        *,
        replica: str = "replica-a",
        env: dict[str, str] | None = None,
    ) -> None:
        self.workdir = workdir
        self.store_url = store_url
        self.replica = replica
        self.log = workdir / f"router-{replica}.log"
        self.env = {
            "FAULT_OUT": str(workdir / "deliveries.txt"),
            "ROUTER_REPLICA_ID": replica,
            **(env or {}),
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self, timeout: float = 60.0) -> None:
        mark = self.log.stat().st_size if self.log.exists() else 0
        self.proc = start_router_process(
            self.workdir / "router.yaml", self.store_url, self.workdir, self.log, self.env
        )
        self.starts += 1
        deadline = time.monotonic() + timeout
        while "running:" not in self.log_text()[mark:]:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"router exited with {self.proc.returncode}:\n{self.log_text()}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"router did not start:\n{self.log_text()}")
            time.sleep(0.05)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """``kill -9`` of the router and everything it started."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def pause(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGCONT)

    def stop(self) -> int:
        """SIGTERM and wait; the exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc is not None else 0
        os.killpg(self.proc.pid, signal.SIGCONT)
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
            raise

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def write_workdir(workdir: Path, config: str) -> None:
    (workdir / "router.yaml").write_text(config)
    (workdir / "fault_handler.py").write_text(HANDLER)


FUNCTIONS = """\
functions:
  sink:
    invoker: python
    handler: fault_handler:handle
    timeout: 30
mappings:
"""


def directory_mapping(name: str = "files", path: str = "./inbox", **extra: Any) -> str:
    settings = "".join(f"      {k}: {v}\n" for k, v in extra.items())
    return f"""\
  - name: {name}
    function: sink
    source:
      type: directory
      path: {path}
      settle: 0.1
{settings}"""


def at_mapping(name: str, when: datetime, **extra: Any) -> str:
    settings = "".join(f"      {k}: {v}\n" for k, v in extra.items())
    return f"""\
  - name: {name}
    function: sink
    source:
      type: schedule
      schedule: at({when.astimezone(UTC):%Y-%m-%dT%H:%M:%S})
{settings}"""


def kafka_mapping(name: str, broker: str, topic: str, batch_size: int = 20) -> str:
    return f"""\
  - name: {name}
    function: sink
    batch_size: {batch_size}
    starting_position: TRIM_HORIZON
    source:
      type: kafka
      bootstrap_servers: ["{broker}"]
      topics: [{topic}]
      consumer_group_id: g-{topic}
      session_timeout_ms: 6000
      heartbeat_interval_ms: 500
"""


def sqs_mapping(name: str, endpoint: str, url: str, batch_size: int = 5) -> str:
    return f"""\
  - name: {name}
    function: sink
    batch_size: {batch_size}
    source:
      type: sqs
      queue_url: {url}
      endpoint_url: {endpoint}
      region: us-east-1
      wait_time_seconds: 1
"""


def s3_mapping(name: str, endpoint: str, url: str) -> str:
    return f"""\
  - name: {name}
    function: sink
    source:
      type: s3
      queue_url: {url}
      endpoint_url: {endpoint}
      region: us-east-1
      wait_time_seconds: 1
"""


def seconds_from_now(seconds: float) -> datetime:
    """A whole second at least ``seconds`` from now (``at()`` has second precision)."""
    return (datetime.now(UTC) + timedelta(seconds=seconds + 1)).replace(microsecond=0)


async def statuses(store_url: str) -> dict[str, str]:
    """``last_processing_result`` of every mapping, read from the store."""
    store = SQLStore(store_url)
    await store.start()
    try:
        return {m.name: m.last_processing_result for m in await store.list_mappings()}
    finally:
        await store.aclose()


async def all_healthy(store_url: str) -> bool:
    return not any(s.startswith("PROBLEM") for s in (await statuses(store_url)).values())


def drop_files(folder: Path, names: list[str]) -> None:
    for name in names:
        (folder / f"{name}.txt").write_text(name)


def file_ids(names: list[str]) -> set[str]:
    return {f"{n}.txt" for n in names}


class HttpEndpoint:
    """A small HTTP server of the test's own on a fixed port, stopped and started again at
    will: the Lambda Invoke API (``POST /2015-03-31/functions/NAME/invocations``, answering
    200 ``{}``) and a destination (``POST /destination``, answering 200). Kafka record ids
    invoked and destination records received are kept."""

    def __init__(self) -> None:
        from tests.fixtures.procs import free_port

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.invoked: list[tuple[str, str]] = []
        """(partition, id) of every Kafka record in every invocation, in arrival order."""
        self.received: list[dict[str, Any]] = []
        self._runner: Any = None

    async def start(self) -> None:
        import base64

        import orjson
        from aiohttp import web

        async def invoke(request: web.Request) -> web.Response:
            event = orjson.loads(await request.read())
            for records in event.get("records", {}).values():
                for r in records:
                    self.invoked.append(
                        (str(r["partition"]), base64.b64decode(r["value"]).decode())
                    )
            return web.json_response({})

        async def destination(request: web.Request) -> web.Response:
            self.received.append(orjson.loads(await request.read()))
            return web.json_response({})

        app = web.Application()
        app.router.add_post("/2015-03-31/functions/{name}/invocations", invoke)
        app.router.add_post("/destination", destination)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True).start()

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    def firsts(self) -> dict[str, list[str]]:
        seen: set[str] = set()
        lanes: dict[str, list[str]] = {}
        for lane, id_ in self.invoked:
            if id_ not in seen:
                seen.add(id_)
                lanes.setdefault(lane, []).append(id_)
        return lanes
