"""The handlers of one Runtime API listener.

The same handlers serve a managed execution environment (one listener per environment, one
:class:`~.dispatch.Session`) and runtimes started outside the router (one shared listener,
a session per connection). What differs is behind :class:`Host`: which session a request
belongs to, and what happens when a runtime initialises, takes, answers or fails.

Handlers run synchronously on complete requests (:mod:`.http`); ``/next`` without work
waits as a :class:`~.dispatch.Dispatcher` taker and is answered when an invocation is
offered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
import weakref
from typing import Any
from urllib.parse import unquote

from router.errors import ConfigError, Location
from router.invokers.results import decode_payload, describe_error, function_error, success
from router.invokers.runtime import protocol
from router.invokers.runtime.dispatch import Call, Dispatcher, Session, next_headers
from router.invokers.runtime.http import Connection, Request, Response
from router.invokers.runtime.protocol import API_VERSION, RUNTIME, State
from router.models import InvokeResult

logger = logging.getLogger(__name__)

_NEXT = f"{RUNTIME}/invocation/next"
_INVOCATION = f"{RUNTIME}/invocation/"
_INIT_ERROR = f"{RUNTIME}/init/error"
_PING = f"{API_VERSION}/ping"
_LOGS = "/2020-08-15/logs"
_TELEMETRY = "/2022-07-01/telemetry"


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

    def session_for(self, connection: Connection) -> Session:
        """The session of the runtime on ``connection`` (``/next``, ``/init/error``)."""
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
    """One Runtime API listener answering for ``host``."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self._server: asyncio.Server | None = None
        self._connections: weakref.WeakSet[Connection] = weakref.WeakSet()
        self.address = ""

    async def start(self, sock: socket.socket) -> None:
        try:
            server = await asyncio.get_running_loop().create_server(
                self._connection, sock=sock, start_serving=False
            )
        except BaseException:
            sock.close()
            raise
        # Kept before serving starts: a start cancelled while the loop registers the socket
        # (an environment stopped as it spawns) is undone by aclose(), which unregisters the
        # socket before closing it. Closing a socket the loop still watches would leave a
        # stale registration behind, and the next socket given that descriptor would never
        # be accepted on.
        self._server = server
        self.address = format_address(sock)
        await server.start_serving()

    def _connection(self) -> Connection:
        connection = Connection(self.handle, lambda: self.host.max_payload)
        self._connections.add(connection)
        return connection

    async def aclose(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for connection in list(self._connections):
            if connection.transport is not None:
                connection.transport.abort()
        with contextlib.suppress(Exception):
            await server.wait_closed()

    # -- routing ---------------------------------------------------------------------------

    def handle(self, connection: Connection, request: Request) -> Response | None:
        path = request.path
        method = request.method
        if path == _NEXT:
            return self._next(connection) if method == "GET" else protocol.method_not_allowed()
        if path.startswith(_INVOCATION):
            request_id, _, action = path[len(_INVOCATION) :].partition("/")
            if request_id and action in ("response", "error") and "/" not in request_id:
                if method != "POST":
                    return protocol.method_not_allowed()
                request_id = unquote(request_id)
                if action == "response":
                    return self._response(request, request_id)
                return self._error(request, request_id)
            return protocol.not_found()
        if path == _INIT_ERROR:
            if method != "POST":
                return protocol.method_not_allowed()
            return self._init_error(connection, request)
        if path == _PING:
            return protocol.ping() if method == "GET" else protocol.method_not_allowed()
        if path == _LOGS:
            return protocol.logs_not_supported() if method == "PUT" else protocol.not_found()
        if path == _TELEMETRY:
            return protocol.telemetry_not_supported() if method == "PUT" else protocol.not_found()
        return protocol.not_found()

    # -- /next -----------------------------------------------------------------------------

    def _next(self, connection: Connection) -> Response | None:
        host = self.host
        session = host.session_for(connection)
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
        call = host.dispatcher.pop_queued()
        if call is not None:
            return self._hand(call, session)

        def deliver(call: Call | None) -> None:
            host.on_busy(session)
            if call is None:  # the environment is being stopped
                connection.respond(protocol.internal_error())
            else:
                connection.respond(self._hand(call, session))

        def lost() -> None:
            host.dispatcher.remove(session)
            host.on_busy(session)

        connection.on_close = lost
        host.on_idle(session)
        host.dispatcher.wait(session, connection, deliver)
        return None

    def _hand(self, call: Call, session: Session) -> Response:
        host = self.host
        now = call.result.get_loop().time()
        call.taken_at = now
        call.session = session
        call.deadline_ms = int((time.time() + host.timeout) * 1000)
        call.headers = next_headers(call, host.function_arn)
        call.answer = Response(200, call.body, "application/json", call.headers)
        call.arm(now + host.timeout)
        session.current = call
        session.state = State.RUNNING
        host.on_hand(call)
        return self._event(call)

    @staticmethod
    def _event(call: Call) -> Response:
        assert call.answer is not None
        return call.answer

    # -- /response and /error --------------------------------------------------------------

    def _running(self, request_id: str, target: State) -> tuple[Call | None, Response]:
        """The invocation a ``/response`` or ``/error`` is for, or the answer refusing it."""
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
        return call, protocol.accepted()

    def _answer(self, call: Call, result: InvokeResult) -> None:
        if call.session is not None:
            call.session.state = State.RESPONSE_SENT
        if call.finish(result):
            self.host.on_answer(call)

    def _oversized(self, call: Call, size: int) -> Response:
        limit = self.host.max_payload
        self._answer(call, function_error(protocol.oversized_response(size, limit)))
        return protocol.request_too_large(limit)

    def _response(self, request: Request, request_id: str) -> Response:
        call, answer = self._running(request_id, State.INVOCATION_RESPONSE)
        if call is None:
            return answer
        mode = request.headers.get("lambda-runtime-function-response-mode")
        if mode and mode != protocol.STREAMING:
            detail = f"Runtime.InvalidResponseModeHeader: {mode!r} is not a response mode"
            self._answer(call, function_error(None, detail=detail))
            return protocol.invalid_response_mode()
        if request.body is None:
            return self._oversized(call, request.size)
        self._answer(call, success(decode_payload(request.body)))
        return answer

    def _error(self, request: Request, request_id: str) -> Response:
        call, answer = self._running(request_id, State.INVOCATION_ERROR_RESPONSE)
        if call is None:
            return answer
        headers = request.headers
        error_type = protocol.scrub_error_type(headers.get("lambda-runtime-function-error-type"))
        if request.body is None:
            return self._oversized(call, request.size)
        payload = protocol.error_body(request.body, headers.get("content-type"))
        self._answer(call, function_error(payload, detail=describe(payload, error_type)))
        return answer

    # -- /init/error -----------------------------------------------------------------------

    def _init_error(self, connection: Connection, request: Request) -> Response:
        session = self.host.session_for(connection)
        if session.state is not State.STARTED:
            return protocol.invalid_state_transition(session.state, State.INIT_ERROR)
        error_type = protocol.scrub_error_type(
            request.headers.get("lambda-runtime-function-error-type")
        )
        session.state = State.INIT_ERROR
        body = request.body
        payload = decode_payload(body) if body is not None else f"<{request.size} bytes>"
        self.host.on_init_error(session, payload, error_type)
        return protocol.accepted()


def describe(payload: Any, error_type: str) -> str:
    """``ErrorType: message`` of a posted error: the body's own ``errorType`` when it has
    one, else the ``Lambda-Runtime-Function-Error-Type`` the runtime sent."""
    if isinstance(payload, dict) and payload.get("errorType"):
        return describe_error(payload)
    text = describe_error(payload) if payload not in (None, "") else ""
    return f"{error_type}: {text}" if text else error_type
