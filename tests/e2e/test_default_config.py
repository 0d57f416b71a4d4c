"""The embedded default (``config/router.yaml``): what ``router run`` reads with no
``--config`` from the repository root, and what the README's first command runs."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

from tests.helpers import router_command, terminate

REPOSITORY = Path(__file__).resolve().parents[2]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROUTER_")}
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = str(REPOSITORY)
    return env


def test_validate_reads_config_from_the_repository_root() -> None:
    done = subprocess.run(
        [*router_command(), "validate"],
        cwd=REPOSITORY,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "config/router.yaml: OK (1 functions, 2 mappings)"


def test_run_without_config_runs_the_embedded_default(tmp_path: Path) -> None:
    shutil.copytree(REPOSITORY / "config", tmp_path / "config")
    log = tmp_path / "router.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [*router_command(), "run", "--http-listen", "127.0.0.1:0"],
            cwd=tmp_path,
            env=_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait(lambda: "running" in log.read_text() or proc.poll() is not None, log, "start")
        assert proc.poll() is None, log.read_text()
        assert (tmp_path / "router.db").exists()
        (tmp_path / "inbox" / "hello.txt").write_text("hi\n")
        _wait(
            lambda: "hello: ObjectCreated:Put s3://inbox/hello.txt (3 bytes)" in log.read_text(),
            log,
            "the bundled handler's line",
        )
    finally:
        code = terminate(proc) if proc.poll() is None else proc.returncode
    assert code == 0, log.read_text()


def _wait(predicate: object, log: Path, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}:\n{log.read_text(errors='replace')}")
