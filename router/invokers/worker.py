"""A worker process of a ``python`` function with ``isolation: process``: the router's own
minimal Lambda runtime.

It is to such a function what awslambdaric is to a managed environment of the
``runtime-api`` invoker, and runs in one (:mod:`router.invokers.isolation`): the handler is
imported once, exactly as the in-process invoker imports it, then invocations are pulled one
at a time from the Runtime API the router serves for this process
(``AWS_LAMBDA_RUNTIME_API``). The router enforces the timeout (it kills the process) and
replaces a worker that died; all this loop does is call the handler and answer.

* Sync handlers are called on the main thread; async handlers (and awaitables a sync handler
  returns) run on one event loop kept for the life of the process, so clients a handler
  caches between invocations stay bound to a live loop.
* Errors, ``stackTrace`` and the JSON encoding of return values are those of the
  in-process invoker (:mod:`router.invokers.handlers`). ``sys.exit()`` ends the process,
  which the router reports as ``Runtime.ExitError`` (as Lambda does) and replaces.
* Log records go to stderr as one line each, marked with their level and logger
  (:data:`router.invokers.runtime.logs.RECORD_MARK`), so the router logs them at their own
  level, prefixed with the function's name and the request id; anything else written to
  stdout or stderr is logged at INFO.

``python -m router.invokers.worker [--path DIR] [--log-level N] HANDLER``; with ``--check``
the handler is only imported and what is wrong with it is written to stdout as JSON
(``{"key": "handler", "message": "..."}``; nothing when it imports).

Only the standard library, orjson and the router's light modules are imported: everything
imported here is part of every cold start.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import io
import logging
import os
import socket
import sys
from typing import Any, NoReturn
from urllib.parse import quote

import orjson

from router.invokers.context import ClientContext, CognitoIdentity, LambdaContext
from router.invokers.handlers import (
    Handler,
    HandlerError,
    MarshalError,
    encode_response,
    error_payload,
    exception_payload,
    load_handler,
)
from router.invokers.runtime.logs import RECORD_MARK

_RUNTIME = "/2018-06-01/runtime"
_JSON = "Content-Type: application/json\r\n"


class RecordFormatter(logging.Formatter):
    """One line per record: the mark, the level number, the logger, the message (its
    newlines, a traceback's included, written as ``\\r`` so that the record stays one line)."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record).replace("\r\n", "\r").replace("\n", "\r")
        return f"{RECORD_MARK}{record.levelno}{RECORD_MARK}{record.name}{RECORD_MARK}{text}"


def setup_logging(level: int) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(RecordFormatter("%(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False


class Reply:
    """A Runtime API answer: status, headers (names in lower case), body."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body


class ProtocolError(Exception):
    """The Runtime API closed the connection or answered something that is not HTTP."""


class Runtime:
    """The Runtime API client: ``/next``, ``/response``, ``/error``, ``/init/error`` over one
    kept-alive connection. HTTP/1.1 written by hand: the router's own server always answers
    with ``Content-Length``, and this loop is every invocation's overhead."""

    def __init__(self, address: str) -> None:
        host, _, port = address.rpartition(":")
        self._socket = socket.create_connection((host.strip("[]"), int(port)))
        self._socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._reader = self._socket.makefile("rb")

    def request(self, method: str, path: str, body: bytes = b"", headers: str = "") -> Reply:
        head = f"{method} {_RUNTIME}{path} HTTP/1.1\r\nHost: runtime\r\n{headers}"
        if method != "GET":
            head += f"Content-Length: {len(body)}\r\n"
        self._socket.sendall(head.encode("latin-1") + b"\r\n" + body)
        return self._reply()

    def _reply(self) -> Reply:
        reader = self._reader
        status_line = reader.readline()
        parts = status_line.split(None, 2)
        if len(parts) < 2 or not parts[1].isdigit():
            raise ProtocolError(f"unexpected answer {status_line[:100]!r}")
        headers: dict[str, str] = {}
        while True:
            line = reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        body = reader.read(length) if length else b""
        if len(body) < length:
            raise ProtocolError("the Runtime API closed the connection")
        return Reply(int(parts[1]), headers, body)

    def next(self) -> Reply:
        return self.request("GET", "/invocation/next")

    def respond(self, request_id: str, body: bytes) -> None:
        path = f"/invocation/{quote(request_id, safe='')}/response"
        self.request("POST", path, body, _JSON)

    def fail(self, request_id: str, payload: Any) -> None:
        path = f"/invocation/{quote(request_id, safe='')}/error"
        headers = f"{_JSON}Lambda-Runtime-Function-Error-Type: Unhandled\r\n"
        self.request("POST", path, orjson.dumps(payload), headers)

    def init_error(self, payload: Any) -> None:
        headers = f"{_JSON}Lambda-Runtime-Function-Error-Type: {payload['errorType']}\r\n"
        self.request("POST", "/init/error", orjson.dumps(payload), headers)


def _context(reply: Reply, request_id: str) -> LambdaContext:
    header = reply.headers.get
    identity = CognitoIdentity()
    cognito = header("lambda-runtime-cognito-identity")
    if cognito:
        fields = orjson.loads(cognito)
        identity = CognitoIdentity(
            fields.get("cognitoIdentityId"), fields.get("cognitoIdentityPoolId")
        )
    return LambdaContext(
        function_name=os.environ.get("AWS_LAMBDA_FUNCTION_NAME", ""),
        invoked_function_arn=header("lambda-runtime-invoked-function-arn") or "",
        aws_request_id=request_id,
        deadline=int(header("lambda-runtime-deadline-ms") or 0) / 1000,
        memory_limit_in_mb=int(os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")),
        log_group_name=os.environ.get("AWS_LAMBDA_LOG_GROUP_NAME", ""),
        log_stream_name=os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME", ""),
        client_context=ClientContext.parse(header("lambda-runtime-client-context") or ""),
        identity=identity,
    )


class Worker:
    def __init__(self, runtime: Runtime, handler: Handler) -> None:
        self.runtime = runtime
        self.handler = handler
        self._loop: asyncio.AbstractEventLoop | None = None

    def _await(self, awaitable: Any) -> Any:
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self._loop)
        return self._loop.run_until_complete(awaitable)

    def serve(self) -> NoReturn:
        while True:
            reply = self.runtime.next()
            if reply.status != 200:
                # The router is stopping this worker (or it is not in a state to take work).
                raise SystemExit(0)
            request_id = reply.headers.get("lambda-runtime-aws-request-id", "")
            trace_id = reply.headers.get("lambda-runtime-trace-id")
            if trace_id:
                os.environ["_X_AMZN_TRACE_ID"] = trace_id
            else:
                os.environ.pop("_X_AMZN_TRACE_ID", None)
            self.invoke(request_id, orjson.loads(reply.body), _context(reply, request_id))

    def invoke(self, request_id: str, event: Any, context: LambdaContext) -> None:
        try:
            result = self.handler(event, context)
            if inspect.isawaitable(result):
                result = self._await(result)
            answer = b"null" if result is None else encode_response(result)
        except MarshalError as e:
            _flush()
            self.runtime.fail(request_id, error_payload(str(e), "Runtime.MarshalError"))
            return
        except Exception as e:  # noqa: BLE001 - any handler failure is the function's error
            _flush()
            self.runtime.fail(request_id, exception_payload(e))
            return
        # What the handler wrote is in the pipe before its answer: the router logs it first.
        _flush()
        self.runtime.respond(request_id, answer)


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass


def _check(spec: str, path: str | None) -> int:
    """Import the handler with stdout pointed at stderr (a module may print while it is
    imported); write the problem, if any, to the real stdout."""
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        load_handler(spec, path)
        problem = None
    except HandlerError as e:
        problem = {"key": e.key, "message": e.message}
    finally:
        _flush()
        os.dup2(saved, 1)
        os.close(saved)
    if problem is None:
        return 0
    os.write(1, orjson.dumps(problem) + b"\n")
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m router.invokers.worker")
    parser.add_argument("handler")
    parser.add_argument("--path")
    parser.add_argument("--log-level", type=int, default=logging.INFO)
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    if args.check:
        return _check(args.handler, args.path)
    # Lines reach the router as they are written, and in the order they were written.
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(line_buffering=True)
    runtime = Runtime(os.environ["AWS_LAMBDA_RUNTIME_API"])
    try:
        handler = load_handler(args.handler, args.path)
    except HandlerError as e:
        _flush()
        runtime.init_error({"errorType": "Runtime.ImportModuleError", "errorMessage": e.message})
        return 1
    try:
        Worker(runtime, handler).serve()
    except (OSError, ProtocolError):
        return 0  # the router went away
    return 0


if __name__ == "__main__":
    sys.exit(main())
