"""Asynchronous Invoke calls across ``kill -9``: an event answered 202 is delivered by the
restarted router, and it keeps its retry budget (the attempts it used are in the store, so
the restarted router gives it what is left of Lambda's 2 retries, not a fresh budget)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from tests.fixtures.procs import free_port
from tests.helpers import start_router_process, terminate
from tests.ingress.router_process import lines, wait_for

pytestmark = pytest.mark.slow

# Every attempt fails. The second one waits while "hold" exists: the router is killed then,
# after the first attempt's failure was recorded and before the second one ended.
HANDLER = """\
import json, os, time

def flaky(event, context):
    with open("started.jsonl", "a") as f:
        f.write(json.dumps(context.aws_request_id) + "\\n")
    with open("started.jsonl") as f:
        started = len(f.read().splitlines())
    while started >= 2 and os.path.exists("hold"):
        time.sleep(0.05)
    with open("failed.jsonl", "a") as f:
        f.write(json.dumps(context.aws_request_id) + "\\n")
    raise RuntimeError("always fails")
"""

CONFIG = """\
router:
  ingress:
    listen: 127.0.0.1:{port}
    queue: {{lease_timeout: 5, poll_interval: 0.2}}
    retry_delay_scale: 0.01
functions:
  flaky:
    invoker: python
    handler: app:flaky
    timeout: 120
    event_invoke_config:
      destination_config:
        on_failure: {{destination: "directory:./failed"}}
mappings: []
"""


def lambda_client(port: int) -> Any:
    return boto3.client(
        "lambda",
        endpoint_url=f"http://127.0.0.1:{port}",
        region_name="us-east-1",
        aws_access_key_id="a",
        aws_secret_access_key="b",
        config=Config(retries={"max_attempts": 1}),
    )


def stored_attempts(db: Path) -> list[int]:
    with sqlite3.connect(db) as conn:
        return [row[0] for row in conn.execute("SELECT attempts FROM async_events")]


def test_kill_9_between_attempts_keeps_the_retry_budget(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(HANDLER)
    (tmp_path / "hold").write_text("")
    port = free_port()
    config = tmp_path / "router.yaml"
    config.write_text(CONFIG.format(port=port))
    db = tmp_path / "router.db"
    store = f"sqlite:///{db}"
    log = tmp_path / "router.log"
    proc = start_router_process(config, store, tmp_path, log)
    wait_for(lambda: "ingress listener on" in log.read_text(), 30, log)
    answer = lambda_client(port).invoke(
        FunctionName="flaky", InvocationType="Event", Payload=b'{"n": 1}'
    )
    assert answer["StatusCode"] == 202
    request_id = answer["ResponseMetadata"]["RequestId"]
    # The first attempt failed and is recorded; the second one is running.
    wait_for(lambda: len(lines(tmp_path / "started.jsonl")) == 2, 30, log)
    assert lines(tmp_path / "failed.jsonl") == [request_id]
    assert stored_attempts(db) == [1]
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)
    (tmp_path / "hold").unlink()
    mark = len(log.read_text())
    proc = start_router_process(config, store, tmp_path, log)
    try:
        # Started (its signal handlers set) before anything is checked: the events may all
        # be delivered by the time it runs, and the test then stops it at once.
        wait_for(lambda: " running: " in log.read_text()[mark:], 30, log)
        folder = tmp_path / "failed" / "flaky"
        (path,) = wait_for(lambda: list(folder.glob("*.json")), 60, log)
        record = json.loads(path.read_text())
        # 3 attempts that ended (the one killed is tried again), not 1 + a fresh 3.
        assert lines(tmp_path / "failed.jsonl") == [request_id] * 3
        assert record["requestContext"]["condition"] == "RetriesExhausted"
        assert record["requestContext"]["approximateInvokeCount"] == 3
        assert record["requestContext"]["requestId"] == request_id
        assert record["requestPayload"] == {"n": 1}
        wait_for(lambda: stored_attempts(db) == [], 10, log)
    finally:
        assert terminate(proc) == 0, log.read_text()


RECORDER = """\
import json

def flaky(event, context):
    with open("calls.jsonl", "a") as f:
        f.write(json.dumps({"event": event, "request_id": context.aws_request_id}) + "\\n")
"""


def test_an_event_answered_202_is_delivered_after_kill_9(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(RECORDER)
    port = free_port()
    config = tmp_path / "router.yaml"
    config.write_text(CONFIG.format(port=port))
    store = f"sqlite:///{tmp_path / 'router.db'}"
    log = tmp_path / "router.log"
    proc = start_router_process(config, store, tmp_path, log)
    wait_for(lambda: "ingress listener on" in log.read_text(), 30, log)
    client = lambda_client(port)
    answers = [
        client.invoke(FunctionName="flaky", InvocationType="Event", Payload=json.dumps({"n": n}))
        for n in range(5)
    ]
    # Killed the moment the last 202 arrived: whatever was not delivered yet is in the store.
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)
    assert {a["StatusCode"] for a in answers} == {202}
    mark = len(log.read_text())
    proc = start_router_process(config, store, tmp_path, log)
    try:
        # Started (its signal handlers set) before anything is checked: the events may all
        # be delivered by the time it runs, and the test then stops it at once.
        wait_for(lambda: " running: " in log.read_text()[mark:], 30, log)
        expected = {a["ResponseMetadata"]["RequestId"]: {"n": n} for n, a in enumerate(answers)}
        calls = wait_for(
            lambda: (
                {c["request_id"] for c in lines(tmp_path / "calls.jsonl")} >= set(expected)
                and lines(tmp_path / "calls.jsonl")
            ),
            40,
            log,
        )
        # At least once: each accepted event delivered under its request id.
        assert {c["request_id"]: c["event"] for c in calls} == expected
    finally:
        assert terminate(proc) == 0, log.read_text()
