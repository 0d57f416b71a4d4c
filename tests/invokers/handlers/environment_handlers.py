"""Handlers run in managed execution environments (under awslambdaric) by the tests."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def env_info(event: Any, context: Any) -> dict[str, Any]:
    client_context = context.client_context
    identity = context.identity
    return {
        "pid": os.getpid(),
        "env": dict(os.environ),
        "cwd": os.getcwd(),
        "function_name": context.function_name,
        "memory_limit_in_mb": context.memory_limit_in_mb,
        "log_group_name": context.log_group_name,
        "log_stream_name": context.log_stream_name,
        "remaining_ms": context.get_remaining_time_in_millis(),
        "custom": getattr(client_context, "custom", None),
        "cognito_identity_id": getattr(identity, "cognito_identity_id", None),
        "cognito_identity_pool_id": getattr(identity, "cognito_identity_pool_id", None),
    }


def say_hello(event: Any, context: Any) -> str:
    print(f"hello from {context.aws_request_id}", flush=True)
    return "ok"


def spawn_and_sleep(event: Any, context: Any) -> None:
    """Starts a child process, notes both pids, and never returns in time."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    marker = Path(event["marker"])
    marker.with_suffix(".tmp").write_text(f"{os.getpid()} {child.pid}")
    marker.with_suffix(".tmp").rename(marker)
    time.sleep(600)


def exit_now(event: Any, context: Any) -> None:
    os._exit(3)


def overlap(event: Any, context: Any) -> dict[str, Any]:
    """Marks its start, then waits (bounded) for the other invocation's start marker."""
    folder = Path(event["dir"])
    (folder / f"{event['me']}.start").write_text(str(os.getpid()))
    other = folder / f"{event['other']}.start"
    give_up = time.monotonic() + float(event.get("wait", 20))
    while not other.exists() and time.monotonic() < give_up:
        time.sleep(0.01)
    return {"me": event["me"], "saw_other": other.exists(), "pid": os.getpid()}
