"""One managed execution environment: the function's runtime in its own process group,
with its own Runtime API listener, so the router knows which process took which invocation.

The environment answers the protocol through its :class:`~.dispatch.Session`; everything
that concerns the function as a whole (scaling, init errors, reports) goes to its
:class:`~.pool.EnvironmentPool`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import signal
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from router.invokers.runtime import logs
from router.invokers.runtime.dispatch import Call, Dispatcher, Session
from router.invokers.runtime.http import Connection
from router.invokers.runtime.protocol import State
from router.invokers.runtime.server import Host, RuntimeServer, bind

if TYPE_CHECKING:
    from router.invokers.runtime.pool import EnvironmentPool

logger = logging.getLogger(__name__)

STOP_GRACE = 2.0
"""Seconds a stopped environment gets between SIGTERM and SIGKILL (Lambda's shutdown phase
allows 2 s)."""
_MIB = 1024 * 1024


class ProcessMemory:
    """Peak resident memory of a process and its descendants, from ``/proc`` (Linux).

    ``VmHWM`` is each process's own high-water mark; their sum bounds the tree's peak. Each
    process's ``status`` file stays open and is re-read in place; the list of descendants is
    refreshed at most once a second.

    Reading ``status`` is the dearest system call of a short invocation (the kernel renders
    the whole file), so :meth:`sample` re-reads it only after an invocation that ran for
    :data:`FRESH_AFTER` or more, or when the last reading is :data:`MAX_AGE` old: an
    invocation shorter than that cannot have faulted in much memory, and the next reading
    (at most ``MAX_AGE`` later) counts whatever it did."""

    FRESH_AFTER = 0.01
    """Seconds an invocation runs before its end always takes a fresh reading."""
    MAX_AGE = 0.1
    """Seconds a reading is reused for shorter invocations."""

    __slots__ = ("_files", "_read", "_refreshed", "peak", "root")

    def __init__(self, root: int) -> None:
        self.root = root
        self._files: dict[int, int] = {}
        self._refreshed = 0.0
        self._read = -math.inf
        self.peak = 0

    def sample(self, ran: float = math.inf) -> int:
        """Peak bytes so far (never lower than an earlier sample), after an invocation that
        ran for ``ran`` seconds."""
        now = time.monotonic()
        if ran < self.FRESH_AFTER and now - self._read < self.MAX_AGE:
            return self.peak
        self._read = now
        if now - self._refreshed >= 1.0:
            self._refresh()
            self._refreshed = now
        total = 0
        for pid, fd in list(self._files.items()):
            try:
                status = os.pread(fd, 4096, 0)
            except OSError:  # the process has exited
                self._close(pid)
                continue
            at = status.find(b"VmHWM:")
            if at >= 0:
                digits = status[at + 6 : status.find(b"kB", at)]
                with contextlib.suppress(ValueError):
                    total += int(digits) * 1024
        self.peak = max(self.peak, total)
        return self.peak

    def _refresh(self) -> None:
        alive = {self.root, *_descendants(self.root)}
        for pid in set(self._files) - alive:
            self._close(pid)
        for pid in alive - set(self._files):
            with contextlib.suppress(OSError):
                self._files[pid] = os.open(f"/proc/{pid}/status", os.O_RDONLY)

    def _close(self, pid: int) -> None:
        fd = self._files.pop(pid, None)
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    def close(self) -> None:
        for pid in list(self._files):
            self._close(pid)


def _descendants(pid: int) -> list[int]:
    found: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{parent}/task/{task}/children", "rb") as f:
                    children = [int(c) for c in f.read().split()]
            except (OSError, ValueError):
                continue
            found.extend(children)
            todo.extend(children)
    return found


class Environment(Host):
    """A process group running the runtime, its listener and its session."""

    def __init__(self, pool: EnvironmentPool, number: int, *, provisioned: bool) -> None:
        self.pool = pool
        self.number = number
        self.provisioned = provisioned
        self.name = f"{pool.function}#{number}"
        self.session = Session(owner=self)
        self.server = RuntimeServer(self)
        self.process: asyncio.subprocess.Process | None = None
        self.output: logs.Output | None = None
        self.memory: ProcessMemory | None = None
        self.loop = loop = asyncio.get_running_loop()
        self.created = loop.time()
        self.init_duration: float | None = None
        """Seconds from start to the first ``/next``, once known."""
        self.cold = not provisioned
        """The next invocation is this environment's first, after an on-demand init."""
        self.retired = ""
        """Why the pool gave up this environment (empty while it serves)."""
        self.idle_timer: asyncio.TimerHandle | None = None
        """Runs out ``idle_timeout`` after the environment began to wait, or later: it is not
        moved for every invocation, but checks when it runs out (and is set again for the
        rest of the time) whether the environment is still waiting since long enough."""
        self.idle_since: float | None = None
        """Loop time since which the runtime waits on ``/next`` (None: busy)."""
        self.init_timer = loop.call_later(pool.runtime.init_timeout, pool.init_timed_out, self)
        day = datetime.now(UTC).strftime("%Y/%m/%d")
        self.log_stream = f"{day}/[$LATEST]{uuid.uuid4().hex}"
        self.ready = asyncio.Event()
        """Set when the init ended (the first ``/next``, or the init failed)."""
        self.task = asyncio.create_task(self._run(), name=f"environment {self.name}")

    def __repr__(self) -> str:
        return f"<Environment {self.name} {self.session.state}>"

    # -- Host ------------------------------------------------------------------------------

    @property
    def dispatcher(self) -> Dispatcher:
        return self.pool.dispatcher

    @property
    def timeout(self) -> float:
        return self.pool.timeout

    @property
    def max_payload(self) -> int:
        return self.pool.settings.max_payload_bytes

    @property
    def function_arn(self) -> str:
        return self.pool.arn

    def session_for(self, connection: Connection) -> Session:
        return self.session

    def session_of(self, request_id: str) -> Session | None:
        return self.session

    def on_ready(self, session: Session) -> None:
        self.pool.environment_ready(self)

    def on_idle(self, session: Session) -> None:
        if self.provisioned or self.retired:
            return
        loop = self.loop
        self.idle_since = now = loop.time()
        if self.idle_timer is None:
            self.idle_timer = loop.call_at(now + self.pool.runtime.idle_timeout, self._idle_check)

    def on_busy(self, session: Session) -> None:
        self.idle_since = None

    def _idle_check(self) -> None:
        self.idle_timer = None
        if self.idle_since is None or self.retired:
            return  # busy: the next wait sets the timer again
        loop = self.loop
        due = self.idle_since + self.pool.runtime.idle_timeout
        if due > loop.time():
            self.idle_timer = loop.call_at(due, self._idle_check)
            return
        self.pool.idle_expired(self)

    def stop_idle_timer(self) -> None:
        self.idle_since = None
        if self.idle_timer is not None:
            self.idle_timer.cancel()
            self.idle_timer = None

    def on_hand(self, call: Call) -> None:
        self.pool.handed(self, call)

    def on_answer(self, call: Call) -> None:
        # What the handler wrote before its answer belongs to this invocation.
        self.drain_output()

    def on_rejected(self, request_id: str) -> None:
        self.pool.rejected(self, request_id)

    def on_init_error(self, session: Session, payload: Any, error_type: str) -> None:
        self.pool.init_failed(self, payload, error_type)

    # -- process ---------------------------------------------------------------------------

    def label(self) -> str:
        """Log prefix: the function, and the request id of the invocation in progress."""
        current = self.session.current
        if current is not None and self.session.state is not State.READY:
            return f"{self.pool.function} {current.request_id}"
        return self.pool.function

    def sample_memory(self, ran: float = math.inf) -> int:
        """Max Memory Used so far, in MB (rounded up), after an invocation that ran for
        ``ran`` seconds."""
        if self.memory is None:
            return 0
        return math.ceil(self.memory.sample(ran) / _MIB)

    async def _run(self) -> None:
        pool = self.pool
        code: int | None = None
        failure = ""
        try:
            await self.server.start(bind("127.0.0.1", 0, pool.key_path))
            read_end, write_end = os.pipe()
            self.output = logs.Output(read_end, self.label)
            try:
                self.process = await asyncio.create_subprocess_exec(
                    *pool.runtime.command,
                    env=pool.variables(self),
                    cwd=pool.cwd,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=write_end,
                    stderr=write_end,
                    start_new_session=True,
                )
            finally:
                os.close(write_end)
            self.memory = ProcessMemory(self.process.pid)
            code = await self.process.wait()
        except OSError as e:
            failure = f"cannot start {pool.runtime.command[0]!r}: {e.strerror or e}"
        except Exception as e:  # noqa: BLE001 - any failure to start is an init failure
            failure = f"{type(e).__name__}: {e}"
        finally:
            self.kill()
            if self.output is not None:
                # Another process of the group may still hold the pipe: give the output a
                # moment to end, then stop reading.
                with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                    async with asyncio.timeout(0.5):
                        await self.output.closed.wait()
                self.output.close()
            self.init_timer.cancel()
            self.stop_idle_timer()
            if self.memory is not None:
                self.memory.close()
            await self.server.aclose()
            self.ready.set()
            pool.exited(self, code, failure)

    def drain_output(self) -> None:
        """Log what the runtime has written so far (before an END line, a crash report)."""
        if self.output is not None:
            self.output.drain()

    def signal(self, number: int) -> None:
        """Signal the whole process group (children of the runtime included)."""
        process = self.process
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, number)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)

    async def stop(self, grace: float = STOP_GRACE) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds; returns once the environment's
        process has exited and its listener is closed."""
        if self.process is None and not self.task.done():
            # Not spawned yet: nothing to signal before the spawn, so cancel it.
            self.task.cancel()
        self.signal(signal.SIGTERM if grace > 0 else signal.SIGKILL)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                await asyncio.shield(self.task)
        self.kill()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


def task_root(cwd: str | None) -> Path:
    return Path(cwd).expanduser().resolve() if cwd else Path.cwd()
