"""Issue: execution environments. `router run` with the function exactly as the issue writes
it (``app.py`` beside the configuration) starts, scales, times out and recycles awslambdaric
runtimes itself; a directory mapping feeds it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

from tests.fixtures.procs import free_port
from tests.helpers import router_command, terminate

FUNCTION = """\
functions:
  slow:
    invoker: runtime-api
    timeout: 2
    reserved_concurrency: 2
    provisioned_concurrency: 1
    runtime:
      command: ["python", "-m", "awslambdaric", "app.handler"]
      idle_timeout: 300
"""

APP = """\
import json
import os
import time


def handler(event, context):
    key = event["Records"][0]["s3"]["object"]["key"]
    print("handling", key)
    with open("calls.jsonl", "a") as f:
        f.write(json.dumps({"key": key, "pid": os.getpid(), "request_id": context.aws_request_id,
                            "init": os.environ["AWS_LAMBDA_INITIALIZATION_TYPE"]}) + "\\n")
    if key.startswith("sleep") and not os.path.exists(key + ".slept"):
        open(key + ".slept", "w").close()
        time.sleep(30)  # past the 2 s timeout: the environment is killed
    if key.startswith("hold"):
        give_up = time.monotonic() + 1.8
        while not os.path.exists("release") and time.monotonic() < give_up:
            time.sleep(0.01)
    return {"ok": key}
"""


def _calls(folder: Path) -> list[dict[str, object]]:
    path = folder / "calls.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _wait(check: object, what: str, log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}\n{log.read_text()}")
        time.sleep(0.05)


def _metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text: str = response.read().decode()
        return text


def _value(metrics: str, prefix: str) -> float:
    for line in metrics.splitlines():
        if line.startswith(prefix):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie has exited
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def test_router_runs_the_issues_function(tmp_path: Path) -> None:
    inbox, failures = tmp_path / "inbox", tmp_path / "failures"
    inbox.mkdir()
    (tmp_path / "app.py").write_text(APP)
    config = tmp_path / "router.yaml"
    config.write_text(
        FUNCTION
        + f"""\
mappings:
  - name: inbox
    function: slow
    source: {{type: directory, path: {inbox}}}
    destination_config: {{on_failure: {{destination: "file://{failures}"}}}}
"""
    )
    port = free_port()
    log = tmp_path / "router.log"
    env = dict(os.environ, ROUTER_RETRY_BASE_DELAY="0.05", ROUTER_RETRY_MAX_DELAY="0.5")
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [*router_command(), "run", "--config", str(config), "--store",
             f"sqlite:///{tmp_path / 'router.db'}", "--http-listen", f"127.0.0.1:{port}"],
            cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )  # fmt: skip
    try:
        _wait(lambda: "router 0.1.0 running" in log.read_text(), "router start", log)
        text = log.read_text()
        # The provisioned environment was initialised before the router took traffic.
        assert text.index("slow: INIT_REPORT Init Duration:") < text.index("router 0.1.0 running")

        (inbox / "one.txt").write_text("1")
        _wait(lambda: len(_calls(tmp_path)) == 1, "the first invocation", log)
        [first] = _calls(tmp_path)
        assert first["init"] == "provisioned-concurrency"

        # A handler that runs past its timeout: killed, and the retry runs on a fresh one.
        (inbox / "sleep.txt").write_text("z")
        _wait(lambda: len(_calls(tmp_path)) == 3, "the timed-out call and its retry", log)
        timed_out, retried = _calls(tmp_path)[1:]
        assert timed_out["key"] == retried["key"] == "sleep.txt"
        assert retried["pid"] != timed_out["pid"]
        _wait(lambda: not _alive(int(str(timed_out["pid"]))), "the killed environment", log)

        # Four at once, two environments at most: the rest are throttled and retried.
        staging = tmp_path / "staging"
        staging.mkdir()
        for n in range(4):
            (staging / f"hold-{n}.txt").write_text(str(n))
        for n in range(4):
            os.rename(staging / f"hold-{n}.txt", inbox / f"hold-{n}.txt")
        _wait(
            lambda: _value(_metrics(port), 'router_throttles_total{mapping="inbox"}') > 0,
            "a throttle",
            log,
        )
        (tmp_path / "release").write_text("")
        _wait(lambda: len(_calls(tmp_path)) >= 7, "the four held files", log)
        held = [c for c in _calls(tmp_path) if str(c["key"]).startswith("hold")]
        assert sorted(str(c["key"]) for c in held) == [f"hold-{n}.txt" for n in range(4)]
        metrics = _metrics(port)
        assert _value(metrics, 'router_function_throttles_total{function="slow"}') > 0
        assert (
            _value(
                metrics,
                'router_function_environments_stopped_total{function="slow",reason="timeout"}',
            )
            == 1
        )
        assert 'router_function_cold_starts_total{function="slow"}' in metrics
        environments = {int(str(c["pid"])) for c in _calls(tmp_path)}
    finally:
        code = terminate(proc)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert code == 0, log.read_text()
    text = log.read_text()
    assert f"slow {first['request_id']}: handling one.txt" in text
    assert f"slow: START RequestId: {first['request_id']} Version: $LATEST" in text
    assert "\tStatus: timeout" in text
    assert not failures.exists() or not any(failures.rglob("*.json"))
    # Stopping the router stops every environment.
    for pid in environments:
        assert not _alive(pid), pid
