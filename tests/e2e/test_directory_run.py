"""The embedded default end to end, through the `router run` process: a folder of files feeds
a Python handler; restarts, SIGTERM and kill -9 lose nothing and deliver nothing twice."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers import router_command, start_router_process, terminate

CONFIG = """\
functions:
  echo:
    invoker: python
    handler: bar_handler:handle
mappings:
  - name: inbox
    function: echo
    source:
      type: directory
      path: ./inbox
    batch_size: 1
"""

HANDLER = """\
import json, os, time

def handle(event, context):
    delay = float(os.environ.get("HANDLER_DELAY", "0"))
    if delay:
        with open("started.txt", "a") as f:
            f.write(event["Records"][0]["s3"]["object"]["key"] + "\\n")
        time.sleep(delay)
    with open("events.jsonl", "a") as f:
        f.write(json.dumps(event) + "\\n")
    return {"ok": True}
"""


def _events(cwd: Path) -> list[dict[str, object]]:
    path = cwd / "events.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _keys(cwd: Path) -> list[str]:
    return [e["Records"][0]["s3"]["object"]["key"] for e in _events(cwd)]  # type: ignore[index]


def _wait(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "router.yaml").write_text(CONFIG)
    (tmp_path / "bar_handler.py").write_text(HANDLER)
    (tmp_path / "inbox").mkdir()
    return tmp_path


def _start(workdir: Path, **env: str) -> subprocess.Popen[bytes]:
    store = f"sqlite:///{workdir / 'router.db'}"
    # The log is appended to across restarts: wait for this process's own "running" line,
    # not an earlier run's.
    runs_before = _log(workdir).count("router 0.1.0 running")
    proc = start_router_process(
        workdir / "router.yaml", store, workdir, workdir / "router.log", env
    )
    _wait(
        lambda: (
            _log(workdir).count("router 0.1.0 running") > runs_before or proc.poll() is not None
        ),
        30,
        "start",
    )
    assert proc.poll() is None, _log(workdir)
    return proc


def _log(workdir: Path) -> str:
    log = workdir / "router.log"
    return log.read_text(errors="replace") if log.exists() else ""


def test_files_delivered_once_across_restart_and_sigterm_exits_0(workdir: Path) -> None:
    proc = _start(workdir)
    try:
        started = time.monotonic()
        (workdir / "inbox" / "a.txt").write_text("hello")
        _wait(lambda: len(_events(workdir)) >= 1, 10, "first event")
        latency = time.monotonic() - started
        (workdir / "inbox" / "sub").mkdir()
        (workdir / "inbox" / "sub" / "b c.txt").write_text("world!")
        _wait(lambda: len(_events(workdir)) >= 2, 10, "second event")
    finally:
        code = terminate(proc)
    assert code == 0, _log(workdir)
    print(f"first delivery after {latency:.2f}s")

    event = _events(workdir)[0]
    record = event["Records"][0]  # type: ignore[index]
    assert record["eventSource"] == "aws:s3"
    assert record["eventName"] == "ObjectCreated:Put"
    assert record["s3"]["object"]["key"] == "a.txt"
    assert record["s3"]["object"]["size"] == 5
    assert record["s3"]["object"]["eTag"] == "5d41402abc4b2a76b9719d911017c592"
    assert sorted(_keys(workdir)) == ["a.txt", "sub/b+c.txt"]

    # While the router is down a file arrives; after the restart it is delivered, the two
    # files already processed are not.
    (workdir / "inbox" / "late.txt").write_text("late")
    proc = _start(workdir)
    try:
        _wait(lambda: len(_events(workdir)) >= 3, 10, "file that arrived while down")
        (workdir / "inbox" / "d.txt").write_text("d")
        _wait(lambda: len(_events(workdir)) >= 4, 10, "file after restart")
        time.sleep(1.0)  # give a wrong duplicate delivery the chance to show up
    finally:
        assert terminate(proc) == 0, _log(workdir)
    assert sorted(_keys(workdir)) == ["a.txt", "d.txt", "late.txt", "sub/b+c.txt"]


def test_kill_9_during_a_batch_then_the_file_is_delivered_after_restart(workdir: Path) -> None:
    proc = _start(workdir, HANDLER_DELAY="30")
    try:
        (workdir / "inbox" / "slow.txt").write_text("x")
        _wait(lambda: (workdir / "started.txt").exists(), 10, "handler start")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert _events(workdir) == []
    proc = _start(workdir)
    try:
        _wait(lambda: len(_events(workdir)) >= 1, 10, "redelivery after kill -9")
    finally:
        assert terminate(proc) == 0
    assert _keys(workdir) == ["slow.txt"]


def test_validate_reports_file_line_for_an_unknown_key(workdir: Path) -> None:
    config = workdir / "router.yaml"
    config.write_text(CONFIG + "    batch_sise: 5\n")
    ok = subprocess.run(
        [*router_command(), "validate", "--config", str(config)],
        capture_output=True,
        text=True,
        cwd=workdir,
    )
    assert ok.returncode == 2
    assert f"{config}:12: mappings[0].batch_sise" in ok.stderr, ok.stderr

    config.write_text(CONFIG)
    good = subprocess.run(
        [*router_command(), "validate", "--config", str(config)],
        capture_output=True,
        text=True,
        cwd=workdir,
    )
    assert good.returncode == 0, good.stderr
