"""File watching when the OS has no inotify instance left: a WARNING, then polling."""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from router.fswatch import watch

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="inotify is Linux's")


@contextmanager
def no_inotify_instance_left() -> Iterator[None]:
    """Hold every inotify instance the user may still create (briefly: the limit is the
    user's, shared with every other process)."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    held: list[int] = []
    try:
        while (fd := libc.inotify_init1(os.O_CLOEXEC)) >= 0:
            held.append(fd)
        yield
    finally:
        for fd in held:
            os.close(fd)


async def test_a_watch_the_os_refuses_polls_instead_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "router.fswatch")
    stop = asyncio.Event()
    changes = watch(tmp_path, what="directory source inbox", stop_event=stop)
    with no_inotify_instance_left():
        first = asyncio.ensure_future(anext(changes))
        # The watcher starts (and falls back) while no instance is left.
        for _ in range(100):
            if caplog.records:
                break
            await asyncio.sleep(0.05)
    (tmp_path / "a.txt").write_text("a")
    got = await asyncio.wait_for(first, 10)
    stop.set()
    await changes.aclose()
    assert any(p.endswith("a.txt") for _, p in got)
    [record] = caplog.records
    message = record.getMessage()
    assert "directory source inbox: cannot watch" in message
    assert "fs.inotify.max_user_instances" in message and "polling it every" in message
