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
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from router.invokers.runtime import protocol
from router.invokers.runtime.protocol import State
from router.models import Invocation, InvokeResult


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
    timer: asyncio.Timeout | None = None
    """The ``invoke`` task's timer: the queue deadline first, the function's deadline once a
    runtime took the invocation."""
    session: Session | None = None
    taken_at: float = 0.0
    """Loop time when a runtime took the invocation (0: still waiting)."""
    deadline_ms: int = 0
    """Epoch milliseconds of the function's deadline (``Lambda-Runtime-Deadline-Ms``)."""
    finished_at: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
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
        """Still waiting for a runtime: not answered, not given up by ``invoke``."""
        if self.result.done():
            return False
        return self.timer is None or not self.timer.expired()

    def finish(self, result: InvokeResult) -> bool:
        """Set the result unless one is already set; True if this one was set."""
        if self.result.done():
            return False
        self.finished_at = asyncio.get_running_loop().time()
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
    future: asyncio.Future[Call | None]
    session: Session
    request: web.BaseRequest


class Dispatcher:
    """Hands invocations to runtimes waiting on ``/next``, or queues them.

    ``lifo``: the runtime that became free last gets the next invocation (managed
    environments: the others stay idle and can be stopped); otherwise first come, first
    served.
    """

    def __init__(self, *, lifo: bool) -> None:
        self.queue: collections.deque[Call] = collections.deque()
        self._takers: collections.deque[_Taker] = collections.deque()
        self._lifo = lifo
        self._changed = asyncio.Condition()

    @property
    def idle(self) -> int:
        """Runtimes waiting on ``/next`` right now."""
        return sum(1 for taker in self._takers if not taker.future.done())

    def idle_sessions(self) -> list[Session]:
        return [taker.session for taker in self._takers if not taker.future.done()]

    async def wait_idle(self, count: int) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: self.idle >= count)

    def offer(self, call: Call) -> bool:
        """Give ``call`` to a waiting runtime; False when none waits."""
        while self._takers:
            taker = self._takers.pop() if self._lifo else self._takers.popleft()
            if taker.future.done():
                continue
            transport = taker.request.transport
            if transport is None or transport.is_closing():
                taker.future.cancel()
                continue
            taker.future.set_result(call)
            return True
        return False

    def enqueue(self, call: Call) -> None:
        self.queue.append(call)

    def give_back(self, call: Call) -> None:
        """A runtime vanished before it received ``call``: another one gets it first."""
        if call.available and not self.offer(call):
            self.queue.appendleft(call)

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

    def retract(self, session: Session) -> bool:
        """Stop ``session`` waiting on ``/next`` (its ``take`` returns None). False when it
        was not waiting, e.g. an invocation was handed to it in this very moment."""
        for taker in self._takers:
            if taker.session is session and not taker.future.done():
                taker.future.set_result(None)
                return True
        return False

    async def take(self, session: Session, request: web.BaseRequest) -> Call | None:
        """The next invocation for ``session``: a queued one at once, or the next one
        offered. None when the session was retracted."""
        call = self.pop_queued()
        if call is not None:
            return call
        future: asyncio.Future[Call | None] = asyncio.get_running_loop().create_future()
        taker = _Taker(future, session, request)
        self._takers.append(taker)
        await self._notify()
        try:
            return await future
        except asyncio.CancelledError:
            # The runtime disconnected (or the router stops). An invocation handed over in
            # the same instant goes to another runtime.
            if future.done() and not future.cancelled():
                handed = future.result()
                if handed is not None:
                    self.give_back(handed)
            raise
        finally:
            if not future.done():
                future.cancel()
            with contextlib.suppress(ValueError):
                self._takers.remove(taker)
            await self._notify()

    def cancel_all(self) -> None:
        for taker in self._takers:
            if not taker.future.done():
                taker.future.cancel()
        self._takers.clear()

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()


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
