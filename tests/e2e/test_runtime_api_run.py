"""Issue: unmodified Lambda runtimes as workers. `router run` hosts the Runtime API for `fn`,
a real awslambdaric process pulls the invocations; a directory mapping feeds it."""

from __future__ import annotations

import json
import time
from pathlib import Path

from tests.fixtures.lambda_runtime import RuntimeStarter
from tests.fixtures.procs import free_port
from tests.helpers import start_router_process, terminate

HANDLER = """\
import json

def handler(event, context):
    key = event["Records"][0]["s3"]["object"]["key"]
    with open("calls.jsonl", "a") as f:  # the runtime's working directory
        f.write(json.dumps({"key": key, "request_id": context.aws_request_id,
                            "function": context.function_name,
                            "remaining": context.get_remaining_time_in_millis()}) + "\\n")
    if key.startswith("bad"):
        raise RuntimeError("refusing " + key)
    return {"ok": key}
"""


def _config(port: int, inbox: Path, failures: Path) -> str:
    return f"""\
functions:
  fn:
    invoker: runtime-api
    listen: 127.0.0.1:{port}     # where runtimes connect (AWS_LAMBDA_RUNTIME_API)
    timeout: 10                # seconds, enforced
mappings:
  - name: inbox
    function: fn
    source:
      type: directory
      path: {inbox}
    destination_config:
      on_failure:
        destination: file://{failures}
"""


def _calls(out: Path) -> list[dict[str, object]]:
    path = out / "calls.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _wait(check: object, timeout: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}\n{log.read_text()}")
        time.sleep(0.05)


def test_awslambdaric_runs_the_handler_for_each_file(
    tmp_path: Path, lambda_runtimes: RuntimeStarter
) -> None:
    port = free_port()
    inbox, failures, handlers = tmp_path / "inbox", tmp_path / "failures", tmp_path / "fn"
    inbox.mkdir()
    handlers.mkdir()
    (handlers / "app.py").write_text(HANDLER)
    config = tmp_path / "router.yaml"
    config.write_text(_config(port, inbox, failures))
    log = tmp_path / "router.log"
    proc = start_router_process(config, f"sqlite:///{tmp_path / 'router.db'}", tmp_path, log)
    try:
        _wait(lambda: "router 0.1.0 running" in log.read_text(), 30, "router start", log)
        lambda_runtimes(f"127.0.0.1:{port}", "app.handler", handler_dir=handlers)
        (inbox / "one.txt").write_text("1")
        (inbox / "two.txt").write_text("2")
        _wait(lambda: len(_calls(handlers)) >= 2, 20, "two invocations", log)
        (inbox / "bad.txt").write_text("x")
        _wait(lambda: failures.exists() and any(failures.rglob("*.json")), 30, "failure", log)
    finally:
        code = terminate(proc)
    assert code == 0, log.read_text()

    calls = _calls(handlers)
    good = [c for c in calls if c["key"] in ("one.txt", "two.txt")]
    assert sorted(str(c["key"]) for c in good) == ["one.txt", "two.txt"]
    for call in good:
        assert call["function"] == "fn"
        assert 0 < int(str(call["remaining"])) <= 10_000
    # One invocation and two retries: tried 3 times in all, then the on-failure destination.
    assert [c["key"] for c in calls].count("bad.txt") == 3
    record = json.loads(next(failures.rglob("*.json")).read_text())
    assert record["requestContext"]["condition"] == "RetriesExhausted"
    assert record["responsePayload"]["errorType"] == "RuntimeError"
    assert record["requestPayload"]["Records"][0]["s3"]["object"]["key"] == "bad.txt"
