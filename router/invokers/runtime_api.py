"""The ``runtime-api`` invoker: the router hosts the Lambda Runtime API.

Real Lambda does not push events into functions: the runtime in each execution environment
pulls them from the Runtime API (``AWS_LAMBDA_RUNTIME_API``). Serving that API here lets any
unmodified Lambda runtime (``awslambdaric``, an official Lambda base image, a custom
``bootstrap``) run beside the router as its workers::

    functions:
      fn:
        invoker: runtime-api
        listen: 127.0.0.1:9001     # where runtimes connect (AWS_LAMBDA_RUNTIME_API)
        timeout: 10                # seconds, enforced

Endpoints (API version 2018-06-01), with the status codes and error bodies AWS uses:

* ``GET  /runtime/invocation/next`` long-polls until an invocation is available.
* ``POST /runtime/invocation/{id}/response`` -> 202; unknown, finished or timed-out id -> 400
  ``InvalidRequestID``; a body over ``max_payload_bytes`` -> 413 ``RequestEntityTooLarge`` and
  the invocation fails with ``Function.ResponseSizeTooLarge``.
* ``POST /runtime/invocation/{id}/error`` -> 202; the invocation is a function error.
* ``POST /runtime/init/error`` -> 202; the error is reported (the mapping's
  ``last_processing_result``) and the oldest queued invocation fails with it, as the
  invocation that started a failed environment does on AWS.

Concurrency is the number of runtimes waiting on ``/next``. Invocations wait in a bounded
queue while every runtime is busy; when the queue is full ``invoke`` returns THROTTLED at
once. The deadline is enforced: an invocation that is still queued, or whose runtime is slow
or died, is a TIMEOUT when its deadline passes, and a response that arrives later is
rejected. Like AWS (which resets a timed-out environment), ``awslambdaric`` exits when its
late response is rejected: run runtimes under a supervisor that restarts them.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import socket
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

import orjson
from aiohttp import web
from pydantic import ConfigDict, Field, field_validator

from router.abc import Invoker, InvokerContext
from router.errors import ConfigError, Location
from router.invokers.results import (
    decode_payload,
    describe_error,
    error_payload,
    function_error,
    response_too_large,
    success,
    throttled,
    timeout_result,
    transport_error,
)
from router.models import (
    MAX_PAYLOAD_BYTES,
    FunctionConfig,
    Invocation,
    InvokeResult,
    PluginSettings,
    function_arn,
)

logger = logging.getLogger(__name__)

API = "/2018-06-01/runtime"
_CHUNK = 256 * 1024


def parse_listen(value: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` for IPv6) -> (host, port). Port 0 picks a free port."""
    host, sep, port_text = value.strip().rpartition(":")
    if not sep or not host:
        raise ValueError(f"listen {value!r} must be host:port, e.g. 127.0.0.1:9001")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"listen {value!r}: port {port_text!r} is not a number") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"listen {value!r}: port must be between 0 and 65535")
    return host, port


class RuntimeApiInvokerSettings(PluginSettings):
    """YAML keys of ``invoker: runtime-api``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    listen: str = "127.0.0.1:9001"
    """Address the Runtime API binds (exactly this host); runtimes get it as
    ``AWS_LAMBDA_RUNTIME_API``. Port 0 picks a free port."""
    queue_size: int = Field(default=100, ge=0, le=1_000_000)
    """Invocations that may wait for a free runtime; beyond that, invocations are throttled."""
    max_payload_bytes: int = Field(default=MAX_PAYLOAD_BYTES, ge=1, le=1 << 30)
    """Largest response (and request) a runtime may post, as Lambda's 6 MB limit."""

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, value: str) -> str:
        parse_listen(value)
        return value.strip()


@dataclass(slots=True, eq=False)
class _Pending:
    """An invocation from ``invoke`` until its result is known."""

    invocation: Invocation
    body: bytes
    result: asyncio.Future[InvokeResult]
    handed_out: bool = False
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True, eq=False)
class _Waiter:
    """A runtime long-polling ``/next`` (compared by identity)."""

    future: asyncio.Future[_Pending]
    request: web.Request


def _error_response(status: int, error_type: str, message: str) -> web.Response:
    body = orjson.dumps({"errorMessage": message, "errorType": error_type})
    return web.Response(status=status, body=body, content_type="application/json")


_ACCEPTED = orjson.dumps({"status": "OK"})


def _accepted() -> web.Response:
    return web.Response(status=202, body=_ACCEPTED, content_type="application/json")


def _invalid_request_id() -> web.Response:
    return _error_response(400, "InvalidRequestID", "Invalid request ID")


class RuntimeApiInvoker(Invoker):
    """Hosts the Lambda Runtime API for one function; runtimes pull invocations from it."""

    Settings: ClassVar[type[PluginSettings]] = RuntimeApiInvokerSettings
    settings: RuntimeApiInvokerSettings

    def __init__(self, function: FunctionConfig, context: InvokerContext) -> None:
        super().__init__(function, context)
        self._arn = function_arn(function.name, function.arn)
        self._queue: collections.deque[_Pending] = collections.deque()
        self._waiters: collections.deque[_Waiter] = collections.deque()
        self._pending: dict[str, _Pending] = {}
        self._idle_changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self._address = ""
        self.rejected_responses = 0
        """Responses and errors refused with 400 (unknown, finished or timed-out request)."""
        self.init_errors = 0

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def address(self) -> str:
        """``host:port`` the API listens on (after :meth:`start`): the runtimes'
        ``AWS_LAMBDA_RUNTIME_API``."""
        if not self._address:
            raise RuntimeError("RuntimeApiInvoker.address is known after start()")
        return self._address

    @property
    def idle_runtimes(self) -> int:
        """Runtimes waiting on ``/next`` right now."""
        return sum(1 for waiter in self._waiters if not waiter.future.done())

    @property
    def queued(self) -> int:
        """Invocations waiting for a runtime."""
        return len(self._queue)

    async def wait_idle(self, count: int = 1) -> None:
        """Wait until at least ``count`` runtimes wait on ``/next`` (readiness checks)."""
        async with self._idle_changed:
            await self._idle_changed.wait_for(lambda: self.idle_runtimes >= count)

    async def start(self) -> None:
        if self._runner is not None:
            return
        host, port = parse_listen(self.settings.listen)
        app = web.Application()
        app.router.add_get(f"{API}/invocation/next", self._next)
        app.router.add_post(f"{API}/invocation/{{request_id}}/response", self._response)
        app.router.add_post(f"{API}/invocation/{{request_id}}/error", self._error)
        app.router.add_post(f"{API}/init/error", self._init_error)
        # handler_cancellation: a runtime that disconnects while long-polling /next stops
        # counting as idle at once.
        runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=0.5,
            handler_cancellation=True,
        )  # fmt: skip
        await runner.setup()
        try:
            sock = self._bind(host, port)
            site = web.SockSite(runner, sock)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        bound_host, bound_port = sock.getsockname()[:2]
        self._address = (
            f"[{bound_host}]:{bound_port}" if ":" in bound_host else f"{bound_host}:{bound_port}"
        )
        self._runner = runner
        logger.info(
            "function %s: Lambda Runtime API listening on %s", self.function.name, self._address
        )

    def _bind(self, host: str, port: int) -> socket.socket:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(128)
            sock.setblocking(False)
        except OSError as e:
            sock.close()
            raise ConfigError(
                f"cannot listen on {host}:{port} for the Lambda Runtime API: {e.strerror or e}",
                Location(path=f"functions.{self.function.name}.listen"),
            ) from e
        return sock

    async def aclose(self) -> None:
        runner, self._runner = self._runner, None
        if runner is None:
            return
        for waiter in self._waiters:
            if not waiter.future.done():
                waiter.future.cancel()
        self._waiters.clear()
        for pending in list(self._pending.values()):
            if not pending.result.done():
                pending.result.set_result(transport_error("the router is shutting down"))
        self._pending.clear()
        self._queue.clear()
        await runner.cleanup()

    # -- invoke ----------------------------------------------------------------------------

    async def invoke(self, invocation: Invocation) -> InvokeResult:
        if self._runner is None:
            raise RuntimeError("RuntimeApiInvoker.invoke() called before start()")
        remaining = invocation.deadline - time.time()
        if remaining <= 0:
            return timeout_result(invocation.request_id, self.function.timeout)
        body = orjson.dumps(invocation.event)
        if len(body) > self.settings.max_payload_bytes:
            return transport_error(
                f"RequestTooLargeException: request payload of {len(body)} bytes exceeds "
                f"{self.settings.max_payload_bytes} bytes",
                status_code=413,
            )
        pending = _Pending(
            invocation=invocation,
            body=body,
            result=asyncio.get_running_loop().create_future(),
            headers=self._next_headers(invocation),
        )
        if not self._hand_to_waiter(pending):
            if len(self._queue) >= self.settings.queue_size:
                return throttled(
                    f"all runtimes of {self.function.name} are busy and "
                    f"{len(self._queue)} invocations are queued",
                )
            self._queue.append(pending)
        self._pending[invocation.request_id] = pending
        timer = asyncio.timeout(remaining)
        try:
            async with timer:
                return await asyncio.shield(pending.result)
        except TimeoutError:
            if not timer.expired():
                raise
            if pending.result.done():  # answered on the very edge of the deadline
                return pending.result.result()
            return timeout_result(invocation.request_id, self.function.timeout)
        finally:
            # Whatever happened (result, timeout, cancellation), the id is no longer valid:
            # a late /response is rejected with InvalidRequestID.
            self._pending.pop(invocation.request_id, None)
            if not pending.handed_out:
                with contextlib.suppress(ValueError):
                    self._queue.remove(pending)

    def _next_headers(self, invocation: Invocation) -> dict[str, str]:
        headers = {
            "Lambda-Runtime-Aws-Request-Id": invocation.request_id,
            "Lambda-Runtime-Deadline-Ms": str(int(invocation.deadline * 1000)),
            "Lambda-Runtime-Invoked-Function-Arn": invocation.invoked_function_arn or self._arn,
        }
        if invocation.trace_id:
            headers["Lambda-Runtime-Trace-Id"] = invocation.trace_id
        return headers

    def _hand_to_waiter(self, pending: _Pending) -> bool:
        while self._waiters:
            waiter = self._waiters.popleft()
            if waiter.future.done():
                continue
            transport = waiter.request.transport
            if transport is None or transport.is_closing():
                waiter.future.cancel()
                continue
            pending.handed_out = True
            waiter.future.set_result(pending)
            return True
        return False

    def _take_queued(self) -> _Pending | None:
        while self._queue:
            pending = self._queue.popleft()
            if not pending.result.done():
                pending.handed_out = True
                return pending
        return None

    def _requeue(self, pending: _Pending) -> None:
        """A runtime vanished before it received ``pending``: give it to another one."""
        if pending.result.done() or pending.invocation.request_id not in self._pending:
            return
        pending.handed_out = False
        if not self._hand_to_waiter(pending):
            self._queue.appendleft(pending)

    # -- Runtime API handlers -------------------------------------------------------------

    async def _next(self, request: web.Request) -> web.StreamResponse:
        pending = self._take_queued()
        if pending is None:
            future: asyncio.Future[_Pending] = asyncio.get_running_loop().create_future()
            waiter = _Waiter(future, request)
            self._waiters.append(waiter)
            await self._notify_idle()
            try:
                pending = await future
            except asyncio.CancelledError:
                # The runtime disconnected (or the router stops). If an invocation was
                # handed over in the same instant, it goes to another runtime.
                if future.done() and not future.cancelled():
                    self._requeue(future.result())
                raise
            finally:
                if not future.done():
                    future.cancel()
                # A runtime that gave up polling must not linger in the deque.
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
                await self._notify_idle()
        response = web.Response(body=pending.body, headers=pending.headers)
        response.content_type = "application/json"
        try:
            await response.prepare(request)
            await response.write_eof()
        except (asyncio.CancelledError, ConnectionError):
            self._requeue(pending)
            raise
        return response

    async def _notify_idle(self) -> None:
        async with self._idle_changed:
            self._idle_changed.notify_all()

    def _running(self, request: web.Request) -> _Pending | None:
        pending = self._pending.get(request.match_info["request_id"])
        if pending is None or not pending.handed_out or pending.result.done():
            self.rejected_responses += 1
            logger.info(
                "function %s: rejected a runtime's answer for unknown, finished or timed-out "
                "request %s",
                self.function.name,
                request.match_info["request_id"],
            )
            return None
        return pending

    async def _read_limited(self, request: web.Request) -> bytes | None:
        """The request body, or None when it exceeds ``max_payload_bytes``."""
        limit = self.settings.max_payload_bytes
        if request.content_length is not None and request.content_length > limit:
            return None
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.content.iter_chunked(_CHUNK):
            size += len(chunk)
            if size > limit:
                return None
            chunks.append(chunk)
        return b"".join(chunks)

    def _too_large(self, pending: _Pending, size: int | None) -> web.Response:
        limit = self.settings.max_payload_bytes
        pending.result.set_result(response_too_large(size or limit + 1, limit))
        return _error_response(
            413, "RequestEntityTooLarge", f"Exceeded maximum allowed payload size ({limit} bytes)."
        )

    async def _response(self, request: web.Request) -> web.Response:
        pending = self._running(request)
        if pending is None:
            return _invalid_request_id()
        body = await self._read_limited(request)
        if pending.result.done():  # timed out while the body was arriving
            self.rejected_responses += 1
            return _invalid_request_id()
        if body is None:
            return self._too_large(pending, request.content_length)
        pending.result.set_result(success(decode_payload(body)))
        return _accepted()

    async def _error(self, request: web.Request) -> web.Response:
        pending = self._running(request)
        if pending is None:
            return _invalid_request_id()
        body = await self._read_limited(request)
        if pending.result.done():
            self.rejected_responses += 1
            return _invalid_request_id()
        if body is None:
            return self._too_large(pending, request.content_length)
        payload = self._error_payload(request, body)
        pending.result.set_result(function_error(payload))
        return _accepted()

    @staticmethod
    def _error_payload(request: web.Request, body: bytes) -> Any:
        payload = decode_payload(body)
        if isinstance(payload, dict):
            return payload
        # Runtimes may post anything (or nothing); keep Lambda's error object shape.
        error_type = request.headers.get("Lambda-Runtime-Function-Error-Type", "Runtime.Unknown")
        return error_payload("" if payload is None else str(payload), error_type)

    async def _init_error(self, request: web.Request) -> web.Response:
        body = await self._read_limited(request) or b""
        payload = self._error_payload(request, body)
        self.init_errors += 1
        message = describe_error(payload)
        logger.warning(
            "function %s: a runtime failed to initialise: %s", self.function.name, message
        )
        self.context.report_init_error(f"function initialisation failed: {message}")
        # On AWS the invocation that started a failed environment fails with the init error.
        pending = self._take_queued()
        if pending is not None:
            pending.result.set_result(function_error(payload))
        return _accepted()
