"""RabbitMQ faults with the real broker: the router's connection closed by the broker in
the middle of a batch, ``kill -9`` of `router run` mid-batch then a restart, two replicas
sharing one queue. Nothing is lost: every message is delivered at least once."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from router.store import SQLStore
from router.store.migrate import upgrade
from tests.faults.harness import Deliveries, RouterProcess, seq, until, write_workdir
from tests.fixtures.rabbitmq import URL, Queues, rabbitmqctl
from tests.helpers import run_router
from tests.rabbitmq.helpers import depth, publish

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

HANDLER = """\
import base64, os, time

OUT = os.environ["FAULT_OUT"]


def handle(event, context):
    replica = os.environ.get("ROUTER_REPLICA_ID", "-")
    lines = [
        "rmq %s %s\\n" % (base64.b64decode(m["data"]).decode(), replica)
        for messages in event["rmqMessagesByQueue"].values()
        for m in messages
    ]
    delay = float(os.environ.get("FAULT_DELAY", "0"))
    if delay:
        time.sleep(delay)
    deadline = time.monotonic() + 60
    while os.path.exists(OUT + ".hold") and time.monotonic() < deadline:
        time.sleep(0.02)  # the test holds the batch in flight
    with open(OUT, "a") as f:
        f.write("".join(lines))
    return {}
"""


def config(queue: str, *, ordered: bool = False, batch_size: int = 10) -> str:
    return f"""\
functions:
  sink:
    invoker: python
    handler: fault_handler:handle
    timeout: 30
mappings:
  - name: rmq
    function: sink
    batch_size: {batch_size}
    maximum_batching_window: 0
    source:
      type: rabbitmq
      url: {URL}
      queues: [{queue}]
      ordered: {str(ordered).lower()}
"""


def workdir(tmp_path: Path, text: str) -> None:
    write_workdir(tmp_path, text)
    (tmp_path / "fault_handler.py").write_text(HANDLER)


def close_router_connections(name: str) -> int:
    """Close, from the broker's side, every connection whose client-given name starts with
    ``name`` (the router names its connections ``event-router MAPPING REPLICA``)."""
    closed = 0
    listing = rabbitmqctl("list_connections", "-q", "pid", "client_properties")
    for line in listing.splitlines():
        pid, _, properties = line.partition("\t")
        if f'{{"connection_name","{name}' in properties:
            rabbitmqctl("close_connection", pid, "closed by the test")
            closed += 1
    return closed


async def settled(queue: str) -> bool:
    ready, _ = await depth(queue)
    return ready == 0


@pytest.fixture
def ctl(rabbitmq_url: str) -> None:
    if shutil.which("rabbitmqctl") is None:
        pytest.skip("rabbitmqctl is not installed: cannot close connections from the broker")


async def test_connection_closed_by_the_broker_mid_batch_loses_nothing(
    tmp_path: Path,
    sqlite_store: SQLStore,
    rabbit_queues: Queues,
    ctl: None,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    queue = await rabbit_queues.new("drop")
    ids = seq("m", 300)
    await publish(queue, ids)
    out = tmp_path / "deliveries.txt"
    monkeypatch.setenv("FAULT_OUT", str(out))
    monkeypatch.setenv("FAULT_DELAY", "0.1")
    monkeypatch.setenv("ROUTER_REPLICA_ID", "in-process")
    (tmp_path / "fault_handler.py").write_text(HANDLER)
    monkeypatch.syspath_prepend(str(tmp_path))
    deliveries = Deliveries(out)
    text = config(queue, ordered=True)
    async with run_router(text, sqlite_store, replica_id="in-process"):
        await until(lambda: len(deliveries.ids("rmq")) >= 50, 60, "some deliveries")
        hold = Path(str(out) + ".hold")
        hold.touch()  # the batch in flight now waits until the connection is gone
        try:
            closed = await asyncio.to_thread(close_router_connections, "event-router rmq")
        finally:
            hold.unlink()
        assert closed == 1
        assert len(deliveries.ids("rmq")) < len(ids), "closed too late to test anything"

        await until(lambda: deliveries.has_all("rmq", set(ids)), 90, "every message")
        await until(lambda: settled(queue), 30, "the queue drained")
    assert deliveries.ids("rmq") == set(ids)
    # The outage was reported (the mapping's status shows it while it lasts; with the
    # tests' short backoff it is over before the store is read, so the log is checked).
    outage = [r.getMessage() for r in caplog.records if r.name == "router.supervisor"]
    assert any("connection lost" in m and queue in m for m in outage), outage


async def test_kill_9_mid_batch_then_restart_delivers_everything_in_order(
    tmp_path: Path, rabbit_queues: Queues
) -> None:
    queue = await rabbit_queues.new("kill")
    ids = seq("m", 300)
    workdir(tmp_path, config(queue, ordered=True))
    router = RouterProcess(
        tmp_path, f"sqlite:///{tmp_path / 'router.db'}", env={"FAULT_DELAY": "0.2"}
    )
    deliveries = Deliveries(tmp_path / "deliveries.txt")
    try:
        await asyncio.to_thread(router.start)
        await publish(queue, ids)
        await until(lambda: len(deliveries.ids("rmq")) >= 60, 60, "a fifth")
        await asyncio.to_thread(router.kill)
        assert len(deliveries.ids("rmq")) < len(ids), "the kill came too late"
        await asyncio.to_thread(router.start)
        await until(lambda: deliveries.has_all("rmq", set(ids)), 90, "every message")
        await until(lambda: settled(queue), 30, "the queue drained")
    finally:
        code = await asyncio.to_thread(router.stop)
    assert code == 0, router.log_text()
    assert deliveries.ids("rmq") == set(ids)
    assert deliveries.firsts("rmq") == {"replica-a": ids}


@pytest.mark.postgres
async def test_two_replicas_share_one_queue(
    tmp_path: Path, rabbit_queues: Queues, empty_pg_url: str
) -> None:
    await asyncio.to_thread(upgrade, empty_pg_url)
    queue = await rabbit_queues.new("shared")
    ids = seq("m", 200)
    workdir(tmp_path, config(queue, batch_size=5))
    env = {"FAULT_DELAY": "0.05"}
    a = RouterProcess(tmp_path, empty_pg_url, replica="replica-a", env=env)
    b = RouterProcess(tmp_path, empty_pg_url, replica="replica-b", env=env)
    deliveries = Deliveries(tmp_path / "deliveries.txt")
    try:
        await asyncio.to_thread(a.start)
        await asyncio.to_thread(b.start)

        async def two_consumers() -> bool:
            return (await depth(queue))[1] == 2

        await until(two_consumers, 30, "both replicas consuming")
        await publish(queue, ids)
        await until(lambda: deliveries.has_all("rmq", set(ids)), 90, "every message")
        await until(lambda: settled(queue), 30, "the queue drained")
    finally:
        codes = [await asyncio.to_thread(r.stop) for r in (a, b)]
    assert codes == [0, 0], a.log_text() + b.log_text()
    firsts = deliveries.firsts("rmq")
    assert set(firsts) == {"replica-a", "replica-b"}, "one replica got every message"
    # No message was delivered twice: each went to one replica and was acked there.
    assert sorted(i for _, i, _ in deliveries.lines()) == ids
