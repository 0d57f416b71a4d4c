"""The ``python`` invoker: a ``module:function`` handler, called in the router's process
(``isolation: shared``, the default) or in worker processes of its own (``isolation:
process``, :mod:`router.invokers.isolation`).

Shared: sync handlers run in a thread pool of ``max_threads`` workers (so a slow handler never
blocks the event loop; one that has lately been quick is waited for when more batches wait,
``quick_wait_ms``);
async handlers are awaited on the loop. The deadline is enforced
either way: a sync handler that overruns keeps its thread until it returns, but its result is
discarded and the invocation is a timeout. An async handler that blocks the loop cannot be
interrupted; write async handlers that await. Every function shares the router's interpreter:
module-level state (a library's globals, ``os.environ``) is one for all of them.

The event object is passed as it is, not copied: the pipeline builds a fresh event for every
invocation (a retry builds a new one), so a handler that mutates its event cannot affect what
a retry sees. Callers that reuse an event object must copy it themselves.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import logging
import os
import time
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from router.abc import Invoker, InvokerContext, MetricFamily, SettingsProblem
from router.errors import ConfigError, Location
from router.invokers.context import ClientContext, CognitoIdentity, LambdaContext
from router.invokers.handlers import (
    Handler,
    HandlerError,
    MarshalError,
    encode_response,
    error_payload,
    exception_payload,
    is_coroutine_callable,
    load_handler,
    parse_handler,
)
from router.invokers.results import (
    decode_payload,
    function_error,
    response_too_large,
    success,
    timeout_result,
)
from router.models import (
    MAX_PAYLOAD_BYTES,
    FunctionConfig,
    Invocation,
    InvokeResult,
    PluginSettings,
)
from router.tracing import TRACE_ENV

if TYPE_CHECKING:
    from router.invokers.isolation import ProcessIsolation

__all__ = [
    "HandlerError",
    "Isolation",
    "PythonInvoker",
    "PythonInvokerSettings",
    "load_handler",
    "parse_handler",
]

logger = logging.getLogger(__name__)

DEFAULT_MAX_PROCESSES = 4

Isolation = Literal["shared", "process"]


class PythonInvokerSettings(PluginSettings):
    """YAML keys of ``invoker: python``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    handler: str
    """``module:function`` or ``module.function`` (e.g. ``app.handlers:on_order``)."""
    path: str | None = None
    """A directory put in front of ``sys.path`` before importing; relative to the working
    directory of the router process."""
    isolation: Isolation = "shared"
    """``shared``: the handler runs in the router's process, sharing its interpreter with
    every other function. ``process``: in worker processes of its own."""
    max_threads: int = Field(default=16, ge=1, le=1024)
    """Shared: how many invocations of a sync handler may run at once (worker threads)."""
    quick_wait_ms: float = Field(default=1.0, ge=0, le=100)
    """Shared: how long the event loop waits, blocked, for a sync handler whose recent
    invocations took at most half of it, when the mapping already holds the next full batch
    for the same lane (:attr:`~router.models.Invocation.backlog`; 0: never). Handing a quick
    handler's result back through a busy loop costs more than the handler; waiting while
    records are still arriving would make a source that receives them as they come
    (RabbitMQ, SQS) cut smaller batches, hence the backlog condition. A slow handler is
    waited for at most this long, and no more once one of its invocations has returned
    slow."""
    max_processes: int = Field(default=DEFAULT_MAX_PROCESSES, ge=1, le=1000)
    """Process: most worker processes at once, each running one invocation at a time."""
    memory_size: int = Field(default=128, ge=128, le=10240)
    """Reported as ``context.memory_limit_in_mb``; nothing is enforced."""

    @field_validator("handler")
    @classmethod
    def _check_handler(cls, value: str) -> str:
        parse_handler(value)
        return value.strip()

    @model_validator(mode="after")
    def _check_isolation(self) -> PythonInvokerSettings:
        if self.isolation == "shared" and "max_processes" in self.model_fields_set:
            raise ValueError(
                "max_processes needs isolation: process (shared handlers run on threads of "
                "the router: set max_threads)"
            )
        if self.isolation == "process" and "max_threads" in self.model_fields_set:
            raise ValueError(
                "max_threads is for isolation: shared; with isolation: process each worker "
                "process runs one invocation at a time: set max_processes"
            )
        if self.isolation == "process" and "quick_wait_ms" in self.model_fields_set:
            raise ValueError(
                "quick_wait_ms is for isolation: shared (sync handlers on threads of the "
                "router); worker processes answer over a pipe"
            )
        return self


def _exception_result(exc: BaseException, request_id: str) -> InvokeResult:
    if isinstance(exc, SystemExit):
        # The Lambda runtime process would exit; the sandbox reports it like this.
        message = (
            f"RequestId: {request_id} Error: Runtime exited with error: exit status {exc.code}"
        )
        return function_error(error_payload(message, "Runtime.ExitError"))
    return function_error(exception_payload(exc))


def _call_sync(handler: Handler, event: Any, context: LambdaContext) -> Any:
    try:
        return handler(event, context)
    except SystemExit as e:
        # Raised in a worker thread, SystemExit would otherwise surface in the event loop.
        raise _HandlerExit(e) from None


class _HandlerExit(Exception):
    def __init__(self, exc: SystemExit) -> None:
        super().__init__(exc.code)
        self.exit = exc


class PythonInvoker(Invoker):
    """Calls a Python handler with a Lambda-like context, in-process or in worker
    processes of its own (``isolation: process``)."""

    Settings: ClassVar[type[PluginSettings]] = PythonInvokerSettings
    settings: PythonInvokerSettings

    def __init__(self, function: FunctionConfig, context: InvokerContext) -> None:
        super().__init__(function, context)
        self._handler: Handler | None = None
        self._is_async = False
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._quick_wait = self.settings.quick_wait_ms / 1000
        self._typical = 0.0
        """Seconds a sync invocation took lately, weighted to the latest (see _on_thread)."""
        self._arn = function.invoked_arn
        self._log_stream = ""
        self._isolated: ProcessIsolation | None = None
        if self.settings.isolation == "process":
            from router.invokers.isolation import ProcessIsolation

            self._isolated = ProcessIsolation(function, self.settings, context)

    @property
    def handler(self) -> Handler | None:
        """The imported handler (after :meth:`start`; never with ``isolation: process``,
        where only the worker processes import it)."""
        return self._handler

    @property
    def isolation(self) -> ProcessIsolation | None:
        """The worker processes (``isolation: process``)."""
        return self._isolated

    async def start(self) -> None:
        if self._isolated is not None:
            await self._isolated.start()
            return
        if self._handler is not None:
            return
        self._handler = self._import()
        self._is_async = is_coroutine_callable(self._handler)
        if not self._is_async:
            self._executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=self.settings.max_threads,
                thread_name_prefix=f"fn-{self.function.name}",
            )
        today = datetime.now(UTC).strftime("%Y/%m/%d")
        self._log_stream = f"{today}/[$LATEST]{uuid.uuid4().hex}"

    @classmethod
    def check(cls, function: FunctionConfig) -> list[SettingsProblem]:
        """Imports the handler exactly as :meth:`start` does (same ``path``, same
        ``sys.path``), so that ``router validate`` fails where ``router run`` would. With
        ``isolation: process`` the import happens in a process of its own, as a worker's."""
        settings = function.settings
        assert isinstance(settings, PythonInvokerSettings)
        if settings.isolation == "process":
            from router.invokers import isolation

            return isolation.check(function)
        try:
            load_handler(settings.handler, settings.path)
        except HandlerError as e:
            return [SettingsProblem((e.key,), e.message)]
        return []

    def _import(self) -> Handler:
        try:
            return load_handler(self.settings.handler, self.settings.path)
        except HandlerError as e:
            where = Location(path=f"functions.{self.function.name}.{e.key}")
            raise ConfigError(e.message, where) from e.__cause__

    async def invoke(self, invocation: Invocation) -> InvokeResult:
        if self._isolated is not None:
            return await self._isolated.invoke(invocation)
        handler = self._handler
        if handler is None:
            raise RuntimeError("PythonInvoker.invoke() called before start()")
        remaining = invocation.deadline - time.time()
        request_id = invocation.request_id
        if remaining <= 0:
            return timeout_result(request_id, self.function.timeout)
        context = LambdaContext(
            function_name=self.function.name,
            invoked_function_arn=invocation.invoked_function_arn or self._arn,
            aws_request_id=request_id,
            deadline=invocation.deadline,
            memory_limit_in_mb=self.settings.memory_size,
            log_stream_name=self._log_stream,
            client_context=ClientContext.parse(invocation.client_context),
            identity=CognitoIdentity(
                invocation.cognito_identity_id or None, invocation.cognito_identity_pool_id or None
            ),
        )
        # As Lambda's runtime does: the trace header of the invocation in the environment
        # (the X-Ray SDK and Powertools' Tracer read it). One process-wide variable: with
        # invocations running concurrently in this interpreter a handler may read another's.
        if invocation.trace_id:
            os.environ[TRACE_ENV] = invocation.trace_id
        else:
            os.environ.pop(TRACE_ENV, None)
        timer = asyncio.timeout(remaining)
        try:
            async with timer:
                if self._is_async:
                    result = await handler(invocation.event, context)
                else:
                    result = await self._on_thread(
                        handler, invocation.event, context, remaining, invocation.backlog
                    )
                    if inspect.isawaitable(result):
                        # A sync wrapper around an async handler (some frameworks do this).
                        result = await result
        except TimeoutError as e:
            if timer.expired():
                return timeout_result(request_id, self.function.timeout)
            return _exception_result(e, request_id)
        except _HandlerExit as e:
            return _exception_result(e.exit, request_id)
        except (Exception, SystemExit) as e:  # noqa: BLE001 - any handler failure is a result
            return _exception_result(e, request_id)
        return self._encode(result)

    async def _on_thread(
        self,
        handler: Handler,
        event: Any,
        context: LambdaContext,
        remaining: float,
        backlog: bool,
    ) -> Any:
        """Run a sync handler on one of the worker threads. A handler that has lately been
        quick (:attr:`PythonInvokerSettings.quick_wait_ms`) is waited for with the loop
        blocked when the next batch is already waiting (``backlog``): the thread then takes
        the interpreter lock at once, and its result needs no trip through the loop (on a
        2-CPU machine that trip cost about 0.3-1 us of CPU time for every record of a batch
        of 1,000, see docs/performance.md)."""
        executor = self._executor
        if executor is None:
            raise RuntimeError("PythonInvoker.invoke() called before start()")
        budget = self._quick_wait
        if not budget:
            return await asyncio.wrap_future(executor.submit(_call_sync, handler, event, context))
        future = executor.submit(self._timed, handler, event, context)
        if backlog and self._typical <= budget / 2:
            concurrent.futures.wait((future,), timeout=min(budget, remaining))
        if future.done():
            return future.result()
        return await asyncio.wrap_future(future)

    def _timed(self, handler: Handler, event: Any, context: LambdaContext) -> Any:
        """The module's :func:`_call_sync` on a worker thread, keeping an average of the
        latest durations (1/8 the newest) to tell a quick handler from a slow one."""
        started = time.monotonic()
        try:
            return _call_sync(handler, event, context)
        finally:
            self._typical += (time.monotonic() - started - self._typical) / 8

    def _encode(self, result: Any) -> InvokeResult:
        if result is None:
            return success(None)
        try:
            body = encode_response(result)
        except MarshalError as e:
            return function_error(error_payload(str(e), "Runtime.MarshalError"))
        if len(body) > MAX_PAYLOAD_BYTES:
            return response_too_large(len(body))
        # Decoding what was encoded hands the pipeline exactly what Lambda would return
        # (tuples become lists, Decimals numbers) and no alias of the handler's own objects.
        return success(decode_payload(body))

    def metrics(self) -> list[MetricFamily]:
        """With ``isolation: process``, the worker processes' (as a managed ``runtime-api``
        function's: invocations, durations, cold starts, processes by state)."""
        return [] if self._isolated is None else self._isolated.metrics()

    async def aclose(self) -> None:
        if self._isolated is not None:
            await self._isolated.aclose()
        executor, self._executor = self._executor, None
        if executor is not None:
            # Overrunning handlers cannot be stopped; do not wait for them.
            executor.shutdown(wait=False, cancel_futures=True)
