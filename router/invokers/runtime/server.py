"""The handlers of one Runtime API listener.

The same handlers serve a managed execution environment (one listener per environment, one
:class:`~.dispatch.Session`) and runtimes started outside the router (one shared listener,
a session per connection). What differs is behind :class:`Host`: which session a request
belongs to, and what happens when a runtime initialises, takes, answers or fails.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from typing import Any

from aiohttp import web

from router.errors import ConfigError, Location
from router.invokers.results import decode_payload, describe_error, function_error, success
from router.invokers.runtime import protocol
from router.invokers.runtime.dispatch import Call, Dispatcher, Session, next_headers
from router.invokers.runtime.protocol import RUNTIME, State
from router.models import InvokeResult

logger = logging.getLogger(__name__)


class Host:
    """What a listener needs from its owner. The hooks do nothing by default."""

    @property
    def dispatcher(self) -> Dispatcher:
        raise NotImplementedError

    @property
    def timeout(self) -> float:
        """The function's timeout in seconds: counted from the moment a runtime takes an
        invocation."""
        raise NotImplementedError

    @property
    def max_payload(self) -> int:
        raise NotImplementedError

    @property
    def function_arn(self) -> str:
        """The ARN sent when an invocation names none."""
        raise NotImplementedError

    def session_for(self, request: web.BaseRequest) -> Session:
        """The session of the runtime that sent ``request`` (``/next``, ``/init/error``)."""
        raise NotImplementedError

    def session_of(self, request_id: str) -> Session | None:
        """The session whose current invocation has this request id, if any."""
        raise NotImplementedError

    def on_ready(self, session: Session) -> None:
        """The runtime asked for its first invocation: its init is done."""

    def on_idle(self, session: Session) -> None:
        """The runtime waits on ``/next``."""

    def on_busy(self, session: Session) -> None:
        """The runtime stopped waiting on ``/next`` (it got an invocation or went away)."""

    def on_hand(self, call: Call) -> None:
        """``call`` is being sent to its runtime; its clock runs."""

    def on_answer(self, call: Call) -> None:
        """The runtime posted a response or an error for ``call``."""

    def on_release(self, session: Session, call: Call) -> None:
        """The runtime moved past ``call``: its request id is no longer valid."""

    def on_rejected(self, request_id: str) -> None:
        """A ``/response`` or ``/error`` named an invocation the runtime does not hold."""

    def on_init_error(self, session: Session, payload: Any, error_type: str) -> None:
        """The runtime posted ``/init/error``."""


def bind(host: str, port: int, key_path: str) -> socket.socket:
    """A listening socket on exactly ``host:port``; a failure is a ConfigError at
    ``key_path``."""
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
            Location(path=key_path),
        ) from e
    return sock


def format_address(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class RuntimeServer:
    """One Runtime API listener (aiohttp) answering for ``host``."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self._runner: web.AppRunner | None = None
        self.address = ""

    async def start(self, sock: socket.socket) -> None:
        app = web.Application()
        app.router.add_get(f"{RUNTIME}/invocation/next", self._next)
        app.router.add_post(f"{RUNTIME}/invocation/{{request_id}}/response", self._response)
        app.router.add_post(f"{RUNTIME}/invocation/{{request_id}}/error", self._error)
        app.router.add_post(f"{RUNTIME}/init/error", self._init_error)
        app.router.add_get(f"{protocol.API_VERSION}/ping", self._ping)
        app.router.add_put("/2020-08-15/logs", self._logs)
        app.router.add_put("/2022-07-01/telemetry", self._telemetry)
        # handler_cancellation: a runtime that disconnects while long-polling /next stops
        # counting as idle at once.
        runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=0.5,
            handler_cancellation=True,
        )  # fmt: skip
        await runner.setup()
        try:
            await web.SockSite(runner, sock).start()
        except BaseException:
            sock.close()
            await runner.cleanup()
            raise
        self.address = format_address(sock)
        self._runner = runner

    async def aclose(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    # -- /next -----------------------------------------------------------------------------

    async def _next(self, request: web.Request) -> web.StreamResponse:
        host = self.host
        session = host.session_for(request)
        current = session.current
        if session.state is State.INIT_ERROR:
            return protocol.invalid_state_transition(session.state, State.READY)
        if session.state is State.RUNNING and current is not None and current.available:
            # The RIE renders the invocation in progress again.
            return self._event(current)
        if session.state is State.STARTED:
            host.on_ready(session)
        if current is not None:
            session.current = None
            host.on_release(session, current)
        session.state = State.READY
        while True:
            host.on_idle(session)
            try:
                call = await host.dispatcher.take(session, request)
            finally:
                host.on_busy(session)
            if call is None:  # the environment is being stopped
                return protocol.error(500, "InternalServerError", "Internal Server Error")
            if call.available:
                break
        self._hand(call, session)
        response = self._event(call)
        try:
            await response.prepare(request)
            await response.write_eof()
        except (asyncio.CancelledError, ConnectionError):
            self._undo(call, session)
            raise
        return response

    def _hand(self, call: Call, session: Session) -> None:
        host = self.host
        now = asyncio.get_running_loop().time()
        call.taken_at = now
        call.session = session
        call.deadline_ms = int((time.time() + host.timeout) * 1000)
        call.headers = next_headers(call, host.function_arn)
        if call.timer is not None:
            call.timer.reschedule(now + host.timeout)
        session.current = call
        session.state = State.RUNNING
        host.on_hand(call)

    def _undo(self, call: Call, session: Session) -> None:
        """The runtime vanished before it received ``call``."""
        call.taken_at = 0.0
        call.session = None
        if call.timer is not None and call.available:
            call.timer.reschedule(max(call.queue_deadline, asyncio.get_running_loop().time()))
        if session.current is call:
            session.current = None
            session.state = State.READY
        self.host.dispatcher.give_back(call)

    @staticmethod
    def _event(call: Call) -> web.Response:
        response = web.Response(body=call.body, headers=call.headers)
        response.content_type = "application/json"
        return response

    # -- /response and /error --------------------------------------------------------------

    def _running(self, request: web.Request, target: State) -> tuple[Call | None, web.Response]:
        """The invocation a ``/response`` or ``/error`` is for, or the answer refusing it."""
        request_id = request.match_info["request_id"]
        session = self.host.session_of(request_id)
        call = session.current if session is not None else None
        if session is None or call is None or call.request_id != request_id:
            self.host.on_rejected(request_id)
            return None, protocol.invalid_request_id()
        if session.state is State.RUNNING and not call.available:
            # Timed out: AWS has reset the environment, the id is gone.
            self.host.on_rejected(request_id)
            return None, protocol.invalid_request_id()
        if session.state is not State.RUNNING:
            return None, protocol.invalid_state_transition(session.state, target)
        session.state = target
        return call, protocol.accepted()

    async def _read(self, request: web.Request, call: Call) -> tuple[bytes | None, int]:
        session = call.session
        try:
            return await protocol.read_body(request, self.host.max_payload)
        except BaseException:
            if session is not None and session.current is call:
                session.state = State.RUNNING
            raise

    def _answer(self, call: Call, result: InvokeResult) -> None:
        if call.session is not None:
            call.session.state = State.RESPONSE_SENT
        if call.finish(result):
            self.host.on_answer(call)

    def _oversized(self, call: Call, size: int) -> web.Response:
        limit = self.host.max_payload
        payload = protocol.oversized_response(size, limit)
        self._answer(call, function_error(payload))
        return protocol.request_too_large(limit)

    async def _response(self, request: web.Request) -> web.Response:
        call, answer = self._running(request, State.INVOCATION_RESPONSE)
        if call is None:
            return answer
        mode = request.headers.get(protocol.RESPONSE_MODE)
        if mode and mode != protocol.STREAMING:
            self._answer(
                call,
                function_error(
                    None,
                    detail=f"Runtime.InvalidResponseModeHeader: {mode!r} is not a response mode",
                ),
            )
            return protocol.invalid_response_mode()
        body, size = await self._read(request, call)
        if not call.available:  # timed out while the body arrived
            self.host.on_rejected(call.request_id)
            return protocol.invalid_request_id()
        if body is None:
            return self._oversized(call, size)
        self._answer(call, success(decode_payload(body)))
        return answer

    async def _error(self, request: web.Request) -> web.Response:
        call, answer = self._running(request, State.INVOCATION_ERROR_RESPONSE)
        if call is None:
            return answer
        error_type = protocol.scrub_error_type(request.headers.get(protocol.ERROR_TYPE))
        body, size = await self._read(request, call)
        if not call.available:
            self.host.on_rejected(call.request_id)
            return protocol.invalid_request_id()
        if body is None:
            return self._oversized(call, size)
        payload = protocol.error_body(body, request.headers.get("Content-Type"))
        self._answer(call, function_error(payload, detail=describe(payload, error_type)))
        return answer

    # -- /init/error and the rest ----------------------------------------------------------

    async def _init_error(self, request: web.Request) -> web.Response:
        session = self.host.session_for(request)
        if session.state is not State.STARTED:
            return protocol.invalid_state_transition(session.state, State.INIT_ERROR)
        error_type = protocol.scrub_error_type(request.headers.get(protocol.ERROR_TYPE))
        body, size = await protocol.read_body(request, self.host.max_payload)
        if session.state is not State.STARTED:  # changed while the body arrived
            return protocol.invalid_state_transition(session.state, State.INIT_ERROR)
        session.state = State.INIT_ERROR
        payload = decode_payload(body) if body is not None else f"<{size} bytes>"
        self.host.on_init_error(session, payload, error_type)
        return protocol.accepted()

    async def _ping(self, request: web.Request) -> web.Response:
        return protocol.ping()

    async def _logs(self, request: web.Request) -> web.Response:
        return protocol.logs_not_supported()

    async def _telemetry(self, request: web.Request) -> web.Response:
        return protocol.telemetry_not_supported()


def describe(payload: Any, error_type: str) -> str:
    """``ErrorType: message`` of a posted error: the body's own ``errorType`` when it has
    one, else the ``Lambda-Runtime-Function-Error-Type`` the runtime sent."""
    if isinstance(payload, dict) and payload.get("errorType"):
        return describe_error(payload)
    text = describe_error(payload) if payload not in (None, "") else ""
    return f"{error_type}: {text}" if text else error_type
