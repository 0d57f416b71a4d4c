"""An event PutEvents accepted is delivered even when the router is killed (``kill -9``)
right after answering, while the function is still running: the restarted router delivers
it from the store."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import boto3
import pytest

from tests.fixtures.procs import free_port
from tests.helpers import start_router_process, terminate
from tests.ingress.router_process import lines, wait_for

pytestmark = pytest.mark.slow

HANDLER = """\
import json, os, time

def orders(event, context):
    with open("started.jsonl", "a") as f:
        f.write(json.dumps(event["id"]) + "\\n")
    while os.path.exists("hold"):
        time.sleep(0.05)
    with open("calls.jsonl", "a") as f:
        f.write(json.dumps(event) + "\\n")
"""

CONFIG = """\
router:
  ingress:
    listen: 127.0.0.1:{port}
    queue: {{lease_timeout: 5, poll_interval: 0.2}}
functions:
  orders: {{invoker: python, handler: app:orders, timeout: 60}}
mappings:
  - name: order-events
    function: orders
    source: {{type: eventbridge}}
"""


def test_an_accepted_event_survives_kill_9(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(HANDLER)
    (tmp_path / "hold").write_text("")
    port = free_port()
    config = tmp_path / "router.yaml"
    config.write_text(CONFIG.format(port=port))
    store = f"sqlite:///{tmp_path / 'router.db'}"
    log = tmp_path / "router.log"
    proc = start_router_process(config, store, tmp_path, log)
    wait_for(lambda: "mapping order-events started" in log.read_text(), 30, log)
    client = boto3.client(
        "events",
        endpoint_url=f"http://127.0.0.1:{port}",
        region_name="us-east-1",
        aws_access_key_id="a",
        aws_secret_access_key="b",
    )
    answer = client.put_events(
        Entries=[{"Source": "shop", "DetailType": "OrderPlaced", "Detail": json.dumps({"n": 1})}]
    )
    event_id = answer["Entries"][0]["EventId"]
    wait_for(lambda: event_id in lines(tmp_path / "started.jsonl"), 20, log)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)
    assert lines(tmp_path / "calls.jsonl") == []
    (tmp_path / "hold").unlink()
    proc = start_router_process(config, store, tmp_path, log)
    try:
        (event,) = wait_for(lambda: lines(tmp_path / "calls.jsonl"), 40, log)
        assert event["id"] == event_id
        assert event["detail"] == {"n": 1}
    finally:
        assert terminate(proc) == 0, log.read_text()
