"""Invocations waiting for a runtime, runtimes waiting on ``/next``, and where each runtime
stands in the protocol.

A :class:`Call` is one invocation from ``invoke`` until its result is known. It waits in the
:class:`Dispatcher`'s queue until a runtime takes it on ``/next``; the function's timeout
starts then, never while it waits. A :class:`Session` is one runtime's position in the
protocol: a managed execution environment has exactly one; runtimes started outside the
router get one per connection.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from router.invokers.runtime import protocol
from router.invokers.runtime.protocol import State
from router.models import Invocation, InvokeResult

if TYPE_CHECKING:
    from router.invokers.runtime.http import Connection, Response


@dataclass(slots=True, eq=False)
class Call:
    """One invocation from ``invoke`` until its result is known (compared by identity)."""

    invocation: Invocation
    body: bytes
    result: asyncio.Future[InvokeResult]
    queued_at: float
    """Loop time when ``invoke`` was called."""
    queue_deadline: float
    """Loop time by which a runtime must have taken the invocation."""
    expire: Callable[[Call], None] | None = None
    """Called when the invocation runs out of time: it ends it (throttled while queued, a
    timeout once taken)."""
    timer: asyncio.TimerHandle | None = None
    """Runs out at the function's deadline once a runtime took the invocation (the queue
    deadline is watched by the :class:`Dispatcher`)."""
    session: Session | None = None
    taken_at: float = 0.0
    """Loop time when a runtime took the invocation (0: still waiting)."""
    deadline_ms: int = 0
    """Epoch milliseconds of the function's deadline (``Lambda-Runtime-Deadline-Ms``)."""
    finished_at: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    answer: Response | None = None
    """What ``/next`` sends for this invocation (made when a runtime takes it)."""
    init_duration: float | None = None
    """The environment's init duration (seconds) when this invocation was its first after an
    on-demand init: a cold start."""
    platform_error: str = ""
    """The error type when the platform, not the runtime, ended the invocation (the runtime
    exited, its init failed)."""

    @property
    def request_id(self) -> str:
        return self.invocation.request_id

    @property
    def available(self) -> bool:
        """Not answered, timed out or given up yet."""
        return not self.result.done()

    def arm(self, when: float) -> None:
        """(Re)start the timer to run out at loop time ``when``."""
        if self.timer is not None:
            self.timer.cancel()
        if self.expire is not None and not self.result.done():
            # The future's loop: asyncio.get_running_loop() costs a getpid() call.
            self.timer = self.result.get_loop().call_at(when, self.expire, self)

    def finish(self, result: InvokeResult) -> bool:
        """Set the result unless one is already set; True if this one was set."""
        if self.result.done():
            return False
        self.finished_at = self.result.get_loop().time()
        self.result.set_result(result)
        return True


@dataclass(slots=True, eq=False)
class Session:
    """One runtime's state in the protocol (see :mod:`.protocol`)."""

    state: State = State.STARTED
    current: Call | None = None
    """The invocation the runtime took last; its request id stays valid for ``/response``
    and ``/error`` until the runtime asks for the next one."""
    owner: Any = None
    """The managed environment this session belongs to (None for external runtimes)."""


@dataclass(slots=True, eq=False)
class _Taker:
    """A runtime waiting on ``/next``: ``deliver`` sends it an invocation (None: it is
    told to stop waiting)."""

    session: Session
    connection: Connection
    deliver: Callable[[Call | None], None]


class Dispatcher:
    """Hands invocations to runtimes waiting on ``/next``, or queues them.

    Everything here is synchronous: an invocation offered to a waiting runtime is written to
    its connection before ``offer`` returns. ``lifo``: the runtime that became free last
    gets the next invocation (managed environments: the others stay idle and can be
    stopped); otherwise first come, first served.
    """

    def __init__(self, *, lifo: bool) -> None:
        self.queue: collections.deque[Call] = collections.deque()
        self._takers: collections.deque[_Taker] = collections.deque()
        self._lifo = lifo
        self._idle_waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._sweep: asyncio.TimerHandle | None = None
        """One timer for the queue: it runs out at the queue deadline of the oldest queued
        invocation or later (deadlines grow along the queue: every invocation of a function
        gets the same ``queue_timeout``), so queueing and taking an invocation touch no
        timer."""

    @property
    def idle(self) -> int:
        """Runtimes waiting on ``/next`` right now."""
        return len(self._takers)

    def idle_sessions(self) -> list[Session]:
        return [taker.session for taker in self._takers]

    async def wait_idle(self, count: int) -> None:
        if self.idle >= count:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._idle_waiters.append((count, future))
        try:
            await future
        finally:
            with contextlib.suppress(ValueError):
                self._idle_waiters.remove((count, future))

    def offer(self, call: Call) -> bool:
        """Give ``call`` to a waiting runtime; False when none waits."""
        while self._takers:
            taker = self._takers.pop() if self._lifo else self._takers.popleft()
            if taker.connection.closed:
                continue
            taker.deliver(call)
            return True
        return False

    def enqueue(self, call: Call) -> None:
        """Queue ``call`` until a runtime takes it; at its ``queue_deadline`` it expires."""
        self.queue.append(call)
        if self._sweep is None:
            loop = asyncio.get_running_loop()
            self._sweep = loop.call_at(call.queue_deadline, self._expire_queued)

    def _expire_queued(self) -> None:
        self._sweep = None
        queue = self.queue
        loop = asyncio.get_running_loop()
        now = loop.time()
        while queue and (not queue[0].available or queue[0].queue_deadline <= now):
            call = queue.popleft()
            if call.available and call.expire is not None:
                call.expire(call)
        if queue:
            self._sweep = loop.call_at(queue[0].queue_deadline, self._expire_queued)

    def withdraw(self, call: Call) -> None:
        with contextlib.suppress(ValueError):
            self.queue.remove(call)

    def pop_queued(self) -> Call | None:
        """The oldest queued invocation still waiting, removed from the queue."""
        while self.queue:
            call = self.queue.popleft()
            if call.available:
                return call
        return None

    def wait(
        self, session: Session, connection: Connection, deliver: Callable[[Call | None], None]
    ) -> None:
        """``session`` waits on ``/next`` over ``connection``."""
        self._takers.append(_Taker(session, connection, deliver))
        if self._idle_waiters:
            idle = self.idle
            for count, future in self._idle_waiters:
                if idle >= count and not future.done():
                    future.set_result(None)

    def remove(self, session: Session) -> bool:
        """``session`` stopped waiting (its connection closed). False if it was not."""
        for taker in self._takers:
            if taker.session is session:
                self._takers.remove(taker)
                return True
        return False

    def retract(self, session: Session) -> bool:
        """Tell ``session`` to stop waiting on ``/next``. False when it was not waiting, e.g.
        an invocation was handed to it in this very moment."""
        for taker in self._takers:
            if taker.session is session:
                self._takers.remove(taker)
                taker.deliver(None)
                return True
        return False

    def cancel_all(self) -> None:
        self._takers.clear()
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None


def next_headers(call: Call, default_arn: str) -> dict[str, str]:
    """The headers ``/next`` sends with an invocation (those with a value, as the RIE)."""
    invocation = call.invocation
    headers = {
        protocol.REQUEST_ID: invocation.request_id,
        protocol.DEADLINE_MS: str(call.deadline_ms),
        protocol.FUNCTION_ARN: invocation.invoked_function_arn or default_arn,
    }
    if invocation.trace_id:
        headers[protocol.TRACE_ID] = invocation.trace_id
    if invocation.client_context:
        headers[protocol.CLIENT_CONTEXT] = invocation.client_context
    if invocation.cognito_identity_id or invocation.cognito_identity_pool_id:
        headers[protocol.COGNITO_IDENTITY] = protocol.cognito_identity(
            invocation.cognito_identity_id, invocation.cognito_identity_pool_id
        )
    return headers
