"""``isolation: process`` through the `router run` process: two functions on one Powertools
handler module, each fed by a folder; each function's log lines keep their own cold start and
keys, and stopping the router leaves no worker behind."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from tests.helpers import start_router_process, terminate

CONFIG = """\
functions:
  a:
    invoker: python
    handler: tenant_handler:handle
    path: .
    isolation: process
  b:
    invoker: python
    handler: tenant_handler:handle
    path: .
    isolation: process
mappings:
  - name: inbox-a
    function: a
    source: {type: directory, path: ./inbox-a}
  - name: inbox-b
    function: b
    source: {type: directory, path: ./inbox-b}
"""

HANDLER = """\
from aws_lambda_powertools import Logger

logger = Logger(service="shop")


@logger.inject_lambda_context
def handle(event, context):
    key = event["Records"][0]["s3"]["object"]["key"]
    if key.startswith("tenant-"):
        logger.append_keys(tenant=key.removesuffix(".txt"))
    logger.info("handled %s", key)
    return {"ok": True}
"""


def _wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _lines(log: Path, function: str) -> list[dict[str, Any]]:
    """Powertools' JSON lines the router logged for ``function``."""
    found = []
    for line in log.read_text().splitlines():
        _, marker, rest = line.partition("router.invokers.runtime.logs: ")
        if marker and rest.startswith(f"{function} ") and ": {" in rest:
            found.append(json.loads(rest.split(": ", 1)[1]))
    return found


def _workers(workdir: Path) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if b"router.invokers.worker" in cmdline and cwd == str(workdir):
            pids.append(int(entry.name))
    return pids


def test_two_isolated_functions_keep_their_own_powertools_state(tmp_path: Path) -> None:
    (tmp_path / "router.yaml").write_text(CONFIG)
    (tmp_path / "tenant_handler.py").write_text(HANDLER)
    for name in ("inbox-a", "inbox-b"):
        (tmp_path / name).mkdir()
    log = tmp_path / "router.log"
    proc = start_router_process(
        tmp_path / "router.yaml", f"sqlite:///{tmp_path / 'router.db'}", tmp_path, log
    )
    try:
        _wait(lambda: "mappings running" in log.read_text() or proc.poll() is not None, 60, "start")
        assert proc.poll() is None, log.read_text()
        assert len(_workers(tmp_path)) == 2  # one warm worker per function
        (tmp_path / "inbox-a" / "tenant-t1.txt").write_text("x")
        _wait(lambda: _lines(log, "a"), 30, "function a's line")
        (tmp_path / "inbox-b" / "plain.txt").write_text("x")
        _wait(lambda: _lines(log, "b"), 30, "function b's line")
    finally:
        code = terminate(proc)
    assert code == 0, log.read_text()
    (a_line,) = _lines(log, "a")
    (b_line,) = _lines(log, "b")
    assert (a_line["cold_start"], a_line["tenant"], a_line["function_name"]) == (
        True,
        "tenant-t1",
        "a",
    )
    assert (b_line["cold_start"], b_line["function_name"]) == (True, "b")
    assert "tenant" not in b_line
    assert _workers(tmp_path) == []
