"""A ``router run`` process with the ingress listener, for the front-end tests."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.fixtures.procs import free_port
from tests.helpers import start_router_process, terminate


@contextmanager
def router_running(
    tmp: Path,
    config: str,
    handler: str,
    *,
    started: str,
    store_url: str | None = None,
    env: dict[str, str] | None = None,
) -> Iterator[str]:
    """Run the router on ``config`` (``{port}`` replaced by the listener's port) with
    ``handler`` as ``app.py``; yields ``http://127.0.0.1:PORT`` once the log says
    ``started``."""
    (tmp / "app.py").write_text(handler)
    port = free_port()
    path = tmp / "router.yaml"
    path.write_text(config.replace("{port}", str(port)))
    log = tmp / "router.log"
    proc = start_router_process(
        path, store_url or f"sqlite:///{tmp / 'router.db'}", tmp, log, env=env
    )
    try:
        wait_for(lambda: started in log.read_text() or proc.poll() is not None, 30, log)
        if proc.poll() is not None:
            raise AssertionError(f"the router stopped:\n{log.read_text()}")
        yield f"http://127.0.0.1:{port}"
    finally:
        assert terminate(proc) == 0, log.read_text()


def wait_for(check: Callable[[], Any], timeout: float, log: Path) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout}s; the router's log:\n{log.read_text()}"
            )
        time.sleep(0.05)


def lines(path: Path) -> list[Any]:
    """The JSON lines of ``path`` (none while it does not exist)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
