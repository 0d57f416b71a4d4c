"""The ``runtime-api`` invoker: the router hosts the Lambda Runtime API.

Real Lambda does not push events into functions: the runtime in each execution environment
pulls them from the Runtime API (``AWS_LAMBDA_RUNTIME_API``). Serving that API here lets any
unmodified Lambda runtime (``awslambdaric``, the Node.js runtime interface client, an
official Lambda base image, a custom ``bootstrap``) run the function. Two ways::

    functions:
      managed:                     # the router runs the execution environments
        invoker: runtime-api
        timeout: 2
        reserved_concurrency: 2
        provisioned_concurrency: 1
        runtime:
          command: ["python", "-m", "awslambdaric", "app.handler"]
          idle_timeout: 300
      external:                    # runtimes you start yourself connect here
        invoker: runtime-api
        listen: 127.0.0.1:9001

Managed environments are described in :mod:`router.invokers.runtime.pool`; the protocol
(routes, status codes, headers, bodies, as AWS's Runtime Interface Emulator answers them)
in :mod:`router.invokers.runtime.protocol`.

Either way an invocation waits until a runtime takes it on ``/next`` (at most
``queue_timeout`` seconds, then it is throttled: it never ran), and the function's timeout
counts from that moment. A timed-out invocation is a TIMEOUT; a managed environment is then
killed, an external runtime gets ``400 InvalidRequestID`` for its late answer.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import weakref
from collections.abc import Mapping
from typing import Any, ClassVar

import orjson

from router.abc import Invoker, InvokerContext, MetricFamily, SettingsProblem
from router.invokers.results import (
    function_error,
    throttled,
    timeout_result,
    transport_error,
)
from router.invokers.runtime.dispatch import Call, Dispatcher, Session
from router.invokers.runtime.http import Connection
from router.invokers.runtime.metrics import FunctionMetrics
from router.invokers.runtime.pool import EnvironmentPool, runtime_problems
from router.invokers.runtime.server import Host, RuntimeServer, bind, describe
from router.invokers.runtime.settings import (
    RuntimeApiInvokerSettings,
    RuntimeSettings,
    parse_listen,
)
from router.models import FunctionConfig, Invocation, InvokeResult, Outcome, PluginSettings
from router.models import function_arn as local_arn

__all__ = [
    "RuntimeApiInvoker",
    "RuntimeApiInvokerSettings",
    "RuntimeSettings",
    "parse_listen",
]

logger = logging.getLogger(__name__)

_ANSWERED_KEPT = 1024
"""Answered request ids remembered per function for runtimes started outside the router, so
that a second answer gets 403 (as the RIE) rather than 400."""


class _External(Host):
    """Runtimes started outside the router share one listener. Each connection is taken to
    be one runtime: runtime clients keep theirs open (awslambdaric, the Node.js client)."""

    def __init__(self, invoker: RuntimeApiInvoker) -> None:
        self.invoker = invoker
        self._dispatcher = Dispatcher(lifo=False)
        self._sessions: weakref.WeakKeyDictionary[Connection, Session] = weakref.WeakKeyDictionary()
        self._answered: collections.OrderedDict[str, Call] = collections.OrderedDict()

    @property
    def dispatcher(self) -> Dispatcher:
        return self._dispatcher

    @property
    def timeout(self) -> float:
        return self.invoker.function.timeout

    @property
    def max_payload(self) -> int:
        return self.invoker.settings.max_payload_bytes

    @property
    def function_arn(self) -> str:
        return self.invoker.arn

    def session_for(self, connection: Connection) -> Session:
        session = self._sessions.get(connection)
        if session is None:
            session = self._sessions[connection] = Session()
        return session

    def session_of(self, request_id: str) -> Session | None:
        call = self.invoker.inflight.get(request_id) or self._answered.get(request_id)
        return call.session if call is not None else None

    def on_hand(self, call: Call) -> None:
        self.invoker.metrics_.queue_wait.observe(call.taken_at - call.queued_at)

    def on_answer(self, call: Call) -> None:
        self._answered[call.request_id] = call
        while len(self._answered) > _ANSWERED_KEPT:
            self._answered.popitem(last=False)

    def on_release(self, session: Session, call: Call) -> None:
        self._answered.pop(call.request_id, None)

    def on_rejected(self, request_id: str) -> None:
        self.invoker.rejected_responses += 1
        logger.info(
            "function %s: rejected a runtime's answer for unknown, finished or timed-out "
            "request %s",
            self.invoker.function.name,
            request_id,
        )

    def on_init_error(self, session: Session, payload: Any, error_type: str) -> None:
        invoker = self.invoker
        invoker.init_errors += 1
        invoker.metrics_.init_errors += 1
        message = describe(payload, error_type)
        logger.warning(
            "function %s: a runtime failed to initialise: %s", invoker.function.name, message
        )
        invoker.context.report_init_error(f"function initialisation failed: {message}")
        # On AWS the invocation that started a failed environment fails with the init error.
        call = self._dispatcher.pop_queued()
        if call is not None:
            call.finish(function_error(payload, detail=message))

    def admit(self, call: Call) -> InvokeResult | None:
        if self._dispatcher.offer(call):
            return None
        queued = len(self._dispatcher.queue)
        if queued < self.invoker.settings.queue_limit():
            self._dispatcher.enqueue(call)
            return None
        self.invoker.metrics_.throttles += 1
        return throttled(
            f"all runtimes of {self.invoker.function.name} are busy and {queued} "
            "invocations are queued"
        )


class RuntimeApiInvoker(Invoker):
    """Hosts the Lambda Runtime API for one function; runtimes pull invocations from it."""

    Settings: ClassVar[type[PluginSettings]] = RuntimeApiInvokerSettings
    settings: RuntimeApiInvokerSettings

    def __init__(
        self,
        function: FunctionConfig,
        context: InvokerContext,
        *,
        inherited_environment: Mapping[str, str] | None = None,
        initialization_type: str | None = None,
    ) -> None:
        """For the ``python`` invoker's worker processes (:mod:`router.invokers.isolation`):
        ``inherited_environment``, variables managed environments start from (none by
        default, as on Lambda); ``initialization_type``, the
        ``AWS_LAMBDA_INITIALIZATION_TYPE`` of all of them."""
        super().__init__(function, context)
        self.arn = local_arn(function.name, function.arn)
        self.metrics_ = FunctionMetrics(function.name)
        self.inflight: dict[str, Call] = {}
        """Invocations from ``invoke`` until it returns, by request id."""
        runtime = self.settings.runtime
        if self.settings.queue_timeout is not None:
            self._queue_timeout = self.settings.queue_timeout
        elif runtime is not None:
            # Long enough for an environment's init: its own limit ends a slow one.
            self._queue_timeout = runtime.init_timeout + function.timeout
        else:
            self._queue_timeout = function.timeout
        self.pool: EnvironmentPool | None = None
        self._external: _External | None = None
        if runtime is not None:
            self.pool = EnvironmentPool(
                function,
                self.settings,
                context,
                self.metrics_,
                inherited=inherited_environment,
                initialization_type=initialization_type,
            )
        else:
            self._external = _External(self)
        self._server: RuntimeServer | None = None
        self._started = False
        self.rejected_responses = 0
        """Responses and errors refused with 400 (unknown, finished or timed-out request)."""
        self.init_errors = 0

    # -- lifecycle -------------------------------------------------------------------------

    @classmethod
    def check(cls, function: FunctionConfig) -> list[SettingsProblem]:
        """A managed function's working directory and command, checked as :meth:`start`
        checks them."""
        settings = function.settings
        assert isinstance(settings, RuntimeApiInvokerSettings)
        if settings.runtime is None:
            return []
        return [
            SettingsProblem(("runtime", key), message)
            for key, message in runtime_problems(settings.runtime)
        ]

    @property
    def dispatcher(self) -> Dispatcher:
        if self.pool is not None:
            return self.pool.dispatcher
        assert self._external is not None
        return self._external.dispatcher

    @property
    def address(self) -> str:
        """``host:port`` the shared API listens on (runtimes started outside the router;
        after :meth:`start`): their ``AWS_LAMBDA_RUNTIME_API``."""
        if self._server is None or not self._server.address:
            raise RuntimeError("RuntimeApiInvoker.address is known after start(), without runtime")
        return self._server.address

    @property
    def idle_runtimes(self) -> int:
        """Runtimes waiting on ``/next`` right now."""
        return self.dispatcher.idle

    @property
    def queued(self) -> int:
        """Invocations waiting for a runtime."""
        return len(self.dispatcher.queue)

    async def wait_idle(self, count: int = 1) -> None:
        """Wait until at least ``count`` runtimes wait on ``/next`` (readiness checks)."""
        await self.dispatcher.wait_idle(count)

    async def start(self) -> None:
        if self._started:
            return
        if self.pool is not None:
            await self.pool.start()
            self._started = True
            return
        assert self._external is not None
        host, port = parse_listen(self.settings.listen_address)
        sock = bind(host, port, f"functions.{self.function.name}.listen")
        server = RuntimeServer(self._external)
        await server.start(sock)
        self._server = server
        self._started = True
        logger.info(
            "function %s: Lambda Runtime API listening on %s", self.function.name, server.address
        )

    async def aclose(self) -> None:
        if not self._started:
            return
        self._started = False
        for call in list(self.inflight.values()):
            call.finish(transport_error("the router is shutting down"))
        self.dispatcher.cancel_all()
        if self.pool is not None:
            await self.pool.aclose()
        server, self._server = self._server, None
        if server is not None:
            await server.aclose()

    def metrics(self) -> list[MetricFamily]:
        counts = self.pool.counts() if self.pool is not None else None
        return self.metrics_.families(counts)

    # -- invoke ----------------------------------------------------------------------------

    async def invoke(self, invocation: Invocation) -> InvokeResult:
        if not self._started:
            raise RuntimeError("RuntimeApiInvoker.invoke() called before start()")
        body = orjson.dumps(invocation.event)
        limit = self.settings.max_payload_bytes
        if len(body) > limit:
            return transport_error(
                f"RequestTooLargeException: request payload of {len(body)} bytes exceeds "
                f"{limit} bytes",
                status_code=413,
            )
        loop = asyncio.get_running_loop()
        now = loop.time()
        call = Call(
            invocation=invocation,
            body=body,
            result=loop.create_future(),
            queued_at=now,
            queue_deadline=now + self._queue_timeout,
            expire=self._expired,
        )
        request_id = invocation.request_id
        self.inflight[request_id] = call
        try:
            refused = self._admit(call)
            if refused is not None:
                return refused
            # Running out of time (queued: the dispatcher's queue deadline; taken: the
            # function's timeout) ends the call by setting its result.
            result = await call.result
        finally:
            # Whatever happened (result, timeout, cancellation), the id is no longer valid
            # for an answer: a late /response is rejected with InvalidRequestID.
            if call.timer is not None:
                call.timer.cancel()
            self.inflight.pop(request_id, None)
            if not call.taken_at:
                self.dispatcher.withdraw(call)
        if call.taken_at:
            self._finished(call, result)
        return result

    def _admit(self, call: Call) -> InvokeResult | None:
        if self.pool is not None:
            return self.pool.admit(call)
        assert self._external is not None
        return self._external.admit(call)

    def _expired(self, call: Call) -> None:
        """The call's timer ran out (a loop callback)."""
        if call.result.done():
            return
        if not call.taken_at:
            self.metrics_.throttles += 1
            self.metrics_.queue_wait.observe(self._queue_timeout)
            self.dispatcher.withdraw(call)
            call.finish(
                throttled(
                    f"no runtime of {self.function.name} took the invocation within "
                    f"queue_timeout ({self._queue_timeout:g} s)"
                )
            )
            return
        call.finish(timeout_result(call.request_id, self.function.timeout))
        if self.pool is not None:
            self.pool.timed_out(call)

    def _finished(self, call: Call, result: InvokeResult) -> None:
        if result.outcome is Outcome.TIMEOUT:
            duration = self.function.timeout
        else:
            end = call.finished_at or call.result.get_loop().time()
            duration = max(0.0, end - call.taken_at)
        self.metrics_.invocations[result.outcome.value] += 1
        self.metrics_.duration.observe(duration)
        if self.pool is not None:
            self.pool.report(call, result, duration)
