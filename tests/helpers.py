"""Helpers for end-to-end tests: run a Router in-process on a real store, or the `router`
command as a subprocess."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from router.abc import Store
from router.app import Router
from router.config import apply_config, load_config_text
from router.pipeline import Backoff

FAST_BACKOFF = Backoff(base=0.02, cap=0.2)


@asynccontextmanager
async def run_router(
    yaml_text: str,
    store: Store,
    *,
    backoff: Backoff = FAST_BACKOFF,
    shutdown_timeout: float = 10.0,
    replica_id: str | None = None,
) -> AsyncIterator[Router]:
    """Load ``yaml_text``, apply it to ``store`` and run a Router until the block exits."""
    config = load_config_text(yaml_text, "test.yaml")
    await apply_config(config, store)
    router = Router(
        config, store, backoff=backoff, shutdown_timeout=shutdown_timeout, replica_id=replica_id
    )
    await router.start()
    try:
        yield router
    finally:
        await router.stop()


async def eventually(
    check: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05, what: str = ""
) -> Any:
    """Poll ``check`` (sync or async) until it returns something truthy."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if asyncio.iscoroutine(last):
            last = await last
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or check}: last={last!r}")


def router_command() -> list[str]:
    return [sys.executable, "-m", "router.cli"]


def start_router_process(
    config: Path, store_url: str, cwd: Path, log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """``router run`` as a subprocess in its own process group, logging to ``log``."""
    full_env = dict(os.environ)
    full_env.update(
        {
            "ROUTER_RETRY_BASE_DELAY": "0.05",
            "ROUTER_RETRY_MAX_DELAY": "0.5",
            "PYTHONUNBUFFERED": "1",
        }
    )
    full_env["PYTHONPATH"] = os.pathsep.join(
        [str(cwd), str(Path(__file__).resolve().parent.parent), full_env.get("PYTHONPATH", "")]
    )
    if env:
        full_env.update(env)
    out = open(log, "ab")  # noqa: SIM115 - handed to the child
    try:
        return subprocess.Popen(
            [
                *router_command(),
                "run",
                "--config",
                str(config),
                "--store",
                store_url,
                "--http-listen",
                "127.0.0.1:0",
            ],
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=full_env,
            start_new_session=True,
        )
    finally:
        out.close()


def terminate(proc: subprocess.Popen[bytes], timeout: float = 30.0) -> int:
    """SIGTERM and wait; returns the exit code."""
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout)
