"""The asynchronous queue across faults, with real ``router run`` processes and boto3's
``lambda`` client: an event answered 202 survives ``kill -9`` of the router right after the
answer; two replicas on one PostgreSQL share the queue and deliver each success once."""

from __future__ import annotations

import asyncio
import json
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from router.store.migrate import upgrade
from tests.faults.harness import RouterProcess

APP = """\
import json, os, time

OUT = os.environ["INVOKE_OUT"]


def record(event, context):
    time.sleep(float(os.environ.get("HANDLER_DELAY", "0")))
    with open(OUT, "a") as f:
        f.write(json.dumps({"id": event["id"], "request_id": context.aws_request_id}) + "\\n")
"""

CONFIG = """\
router:
  ingress:
    listen: 127.0.0.1:0
    queue: {lease_timeout: 5, poll_interval: 0.2}
functions:
  record: {invoker: python, handler: app:record}
mappings: []
"""


def listener_url(process: RouterProcess) -> str:
    found = re.findall(r"ingress listener on (http://127\.0\.0\.1:\d+)", process.log_text())
    assert found, process.log_text()
    return str(found[-1])


def client(url: str) -> Any:
    return boto3.client(
        "lambda",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="x",
        config=Config(retries={"max_attempts": 1}, max_pool_connections=20),
    )


def delivered(out: Path) -> list[dict[str, str]]:
    if not out.exists():
        return []
    lines = out.read_text().splitlines()
    return [json.loads(line) for line in lines if line.endswith("}")]


def wait_for(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(0.1)


def workdir(tmp_path: Path) -> Path:
    (tmp_path / "router.yaml").write_text(CONFIG)
    (tmp_path / "app.py").write_text(APP)
    return tmp_path


def test_an_event_answered_202_survives_kill_9(tmp_path: Path) -> None:
    work = workdir(tmp_path)
    out = work / "out.jsonl"
    # The handler is slow: the event is claimed (or still waiting) when the router dies.
    router = RouterProcess(
        work,
        f"sqlite:///{work / 'router.db'}",
        env={"INVOKE_OUT": str(out), "HANDLER_DELAY": "3"},
    )
    router.start()
    answer = client(listener_url(router)).invoke(
        FunctionName="record", InvocationType="Event", Payload=json.dumps({"id": "k1"})
    )
    router.kill()
    assert answer["StatusCode"] == 202
    assert delivered(out) == []
    router.env["HANDLER_DELAY"] = "0"
    router.start()
    try:
        wait_for(lambda: delivered(out), 20, "the delivery after the restart")
    finally:
        assert router.stop() == 0, router.log_text()
    assert delivered(out) == [{"id": "k1", "request_id": answer["ResponseMetadata"]["RequestId"]}]


@pytest.mark.postgres
async def test_two_replicas_share_the_queue_and_deliver_each_success_once(
    tmp_path: Path, empty_pg_url: str
) -> None:
    await asyncio.to_thread(upgrade, empty_pg_url)
    await asyncio.to_thread(_two_replicas, tmp_path, empty_pg_url)


def _two_replicas(tmp_path: Path, url: str) -> None:
    work = workdir(tmp_path)
    out = work / "out.jsonl"
    env = {"INVOKE_OUT": str(out), "HANDLER_DELAY": "0.01"}
    replicas = [
        RouterProcess(work, url, replica=name, env=env) for name in ("replica-a", "replica-b")
    ]
    for replica in replicas:
        replica.start()
    try:
        clients = [client(listener_url(r)) for r in replicas]
        ids = [f"e{n:04d}" for n in range(300)]

        def send(event_id: str) -> int:
            which = clients[int(event_id[1:]) % 2]
            answer = which.invoke(
                FunctionName="record", InvocationType="Event", Payload=json.dumps({"id": event_id})
            )
            return int(answer["StatusCode"])

        with ThreadPoolExecutor(16) as pool:
            assert set(pool.map(send, ids)) == {202}
        wait_for(lambda: len(delivered(out)) >= len(ids), 120, "every delivery")
        time.sleep(1.0)  # a double delivery would show up by now
    finally:
        for replica in replicas:
            assert replica.stop() == 0, replica.log_text()
    lines = delivered(out)
    assert sorted(line["id"] for line in lines) == ids
    logs = [r.log_text() for r in replicas]
    assert all("Traceback" not in log for log in logs), logs
