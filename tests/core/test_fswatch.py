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


async def test_watches_beyond_anyios_thread_limit_each_get_a_thread(tmp_path: Path) -> None:
    # Each watch holds a worker thread while it waits; anyio lends 40 by default in all.
    from anyio.to_thread import current_default_thread_limiter

    limiter = current_default_thread_limiter()
    total = limiter.total_tokens
    count = int(total) + 5
    folders = [tmp_path / f"d{i}" for i in range(count)]
    stop = asyncio.Event()
    watches = []
    for folder in folders:
        folder.mkdir()
        watches.append(watch(folder, what=f"directory {folder.name}", stop_event=stop))
    waiting = [asyncio.ensure_future(anext(w)) for w in watches]
    try:
        for _ in range(200):
            if limiter.borrowed_tokens >= count:
                break
            await asyncio.sleep(0.05)
        # Every watch is waiting on its own thread, none for a thread.
        assert limiter.borrowed_tokens >= count
        assert limiter.statistics().tasks_waiting == 0
        (folders[-1] / "a.txt").write_text("a")
        got = await asyncio.wait_for(waiting[-1], 10)
        assert any(p.endswith("a.txt") for _, p in got)
    finally:
        stop.set()
        for task in waiting:
            task.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)
        for w in watches:
            await w.aclose()
    assert limiter.total_tokens == total
