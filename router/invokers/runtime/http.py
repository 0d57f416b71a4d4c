"""A small HTTP/1.1 server protocol for the Runtime API.

Why not aiohttp here: every invocation is two requests on a runtime's keep-alive connection
(the ``/next`` answer and the ``/response``), and aiohttp's per-request machinery (a task,
request and response objects, routing, header multidicts) cost more than the rest of the
invocation. The Runtime API is small and fixed, so this protocol parses a request in place
and hands it, complete with its body, to one synchronous handler; an answer that has to wait
(``/next`` before there is work) is sent later with :meth:`Connection.respond`.

What it supports is what runtime clients send: HTTP/1.1 with keep-alive (HTTP/1.0 closes),
``Content-Length`` and chunked bodies, ``Expect: 100-continue``. A request body larger than
the handler's limit is read to its end and counted, not kept.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, cast

logger = logging.getLogger(__name__)

MAX_HEAD = 64 * 1024
"""Largest request line and headers."""

_REASONS = {
    100: "Continue",
    200: "OK",
    202: "Accepted",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Request Entity Too Large",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
}


class Request:
    """One request, body included (``body`` is None when it exceeded the limit)."""

    __slots__ = ("body", "headers", "method", "size", "target", "version")

    def __init__(self, method: str, target: str, version: str, headers: dict[str, str]) -> None:
        self.method = method
        self.target = target
        self.version = version
        self.headers = headers
        """Lower-case names."""
        self.body: bytes | None = b""
        self.size = 0

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]


class Response:
    """An answer. Its keep-alive encoding is kept once made: the same answer (``202``, an
    invocation rendered again) is sent as it was."""

    __slots__ = ("_wire", "body", "content_type", "headers", "status")

    def __init__(
        self,
        status: int,
        body: bytes = b"",
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
    ) -> None:
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers = headers
        self._wire: bytes | None = None

    def encode(self, close: bool) -> bytes:
        if not close and self._wire is not None:
            return self._wire
        head = f"HTTP/1.1 {self.status} {_REASONS.get(self.status, 'Unknown')}\r\n"
        if self.headers:
            head += "".join(f"{name}: {value}\r\n" for name, value in self.headers.items())
        if self.content_type:
            head += f"Content-Type: {self.content_type}\r\n"
        head += f"Content-Length: {len(self.body)}\r\n"
        if close:
            head += "Connection: close\r\n"
        wire = head.encode("latin-1", errors="replace") + b"\r\n" + self.body
        if not close:
            self._wire = wire
        return wire


Handler = Callable[["Connection", Request], "Response | None"]
"""Answers a request now (a Response) or later (None, then :meth:`Connection.respond`)."""


class _BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Connection(asyncio.Protocol):
    """One client connection. Requests on it are answered in order, one at a time."""

    def __init__(self, handler: Handler, limit: Callable[[], int]) -> None:
        self._handler = handler
        self._limit = limit
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.on_close: Callable[[], None] | None = None
        """Called once when the connection ends while a request waits for its answer."""
        self._buffer = bytearray()
        self._request: Request | None = None
        self._waiting = False
        self._close_after = False
        # Body state of the request being read.
        self._remaining = 0
        self._chunked = False
        self._chunk_left = -1
        self._trailers = False
        self._chunks: list[bytes] = []

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's are not asyncio.Transport subclasses).
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        callback, self.on_close = self.on_close, None
        if callback is not None and self._waiting:
            callback()

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        try:
            self._process()
        except _BadRequest as e:
            self._fail(e.status, str(e))

    # -- answering -------------------------------------------------------------------------

    @property
    def waiting(self) -> bool:
        """A request waits for its answer."""
        return self._waiting

    def respond(self, response: Response) -> None:
        """Send the answer to the request in progress, then go on with the next one."""
        if not self._waiting:
            raise RuntimeError("no request waits for an answer on this connection")
        self._waiting = False
        self.on_close = None
        if self.closed or self.transport is None:
            return
        self.transport.write(response.encode(self._close_after))
        if self._close_after:
            self.transport.close()
            self.closed = True
            return
        if self._buffer:
            try:
                self._process()
            except _BadRequest as e:
                self._fail(e.status, str(e))

    def _fail(self, status: int, message: str) -> None:
        if self.transport is not None and not self.closed:
            body = f"{message}\n".encode()
            self.transport.write(Response(status, body, "text/plain; charset=utf-8").encode(True))
            self.transport.close()
        self.closed = True
        self._buffer.clear()

    # -- parsing ---------------------------------------------------------------------------

    def _process(self) -> None:
        while not self._waiting and not self.closed:
            if self._request is None and (not self._buffer or not self._read_head()):
                return
            if not self._read_body():
                return
            request, self._request = self._request, None
            assert request is not None
            self._waiting = True
            response = self._handler(self, request)
            if response is not None:
                self.respond(response)

    def _read_head(self) -> bool:
        buffer = self._buffer
        # Tolerate blank lines between requests (RFC 9112 2.2).
        while buffer[:2] == b"\r\n":
            del buffer[:2]
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(buffer) > MAX_HEAD:
                raise _BadRequest(431, "request headers too large")
            return False
        lines = buffer[:end].decode("latin-1").split("\r\n")
        del buffer[: end + 4]
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise _BadRequest(400, "malformed request line")
        method, target, version = parts
        headers: dict[str, str] = {}
        for i in range(1, len(lines)):
            line = lines[i]
            colon = line.find(":")
            if colon <= 0 or line[colon - 1] in " \t":
                raise _BadRequest(400, "malformed header")
            headers[line[:colon].lower()] = line[colon + 1 :].strip()
        request = Request(method, target, version, headers)
        get = headers.get
        connection = get("connection")
        if version == "HTTP/1.1":
            self._close_after = connection is not None and "close" in connection.lower()
        else:
            self._close_after = connection is None or "keep-alive" not in connection.lower()
        encoding = get("transfer-encoding")
        self._chunked = bool(encoding)
        if encoding and encoding.lower() != "chunked":
            raise _BadRequest(501, f"transfer encoding {encoding!r} is not supported")
        self._remaining = 0
        if not self._chunked:
            length = get("content-length") or "0"
            if not length.isdigit():
                raise _BadRequest(400, "malformed Content-Length")
            self._remaining = int(length)
        self._chunk_left = -1
        self._trailers = False
        self._chunks = []
        expect = get("expect")
        if (
            expect is not None
            and expect.lower() == "100-continue"
            and (self._chunked or self._remaining)
        ):
            assert self.transport is not None
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        self._request = request
        return True

    def _take(self, data: bytes | bytearray) -> None:
        request = self._request
        assert request is not None
        request.size += len(data)
        if request.body is None:
            return
        if request.size > self._limit():
            request.body = None
            self._chunks = []
            return
        self._chunks.append(bytes(data))

    def _finish_body(self) -> bool:
        request = self._request
        assert request is not None
        if request.body is not None:
            request.body = b"".join(self._chunks)
        self._chunks = []
        return True

    def _read_body(self) -> bool:
        buffer = self._buffer
        if not self._chunked:
            if self._remaining:
                n = min(self._remaining, len(buffer))
                if n:
                    self._take(buffer[:n])
                    del buffer[:n]
                    self._remaining -= n
                if self._remaining:
                    return False
            return self._finish_body()
        while True:
            if self._trailers:
                end = buffer.find(b"\r\n")
                if end < 0:
                    return False
                line = buffer[:end]
                del buffer[: end + 2]
                if not line:
                    return self._finish_body()
                continue
            if self._chunk_left < 0:
                end = buffer.find(b"\r\n")
                if end < 0:
                    if len(buffer) > MAX_HEAD:
                        raise _BadRequest(400, "malformed chunk size")
                    return False
                size_text = bytes(buffer[:end]).split(b";", 1)[0].strip()
                del buffer[: end + 2]
                try:
                    self._chunk_left = int(size_text, 16)
                except ValueError:
                    raise _BadRequest(400, "malformed chunk size") from None
                if self._chunk_left == 0:
                    self._trailers = True
                    continue
            if self._chunk_left > 0:
                n = min(self._chunk_left, len(buffer))
                if n:
                    self._take(buffer[:n])
                    del buffer[:n]
                    self._chunk_left -= n
                if self._chunk_left:
                    return False
            if len(buffer) < 2:
                return False
            if buffer[:2] != b"\r\n":
                raise _BadRequest(400, "malformed chunk")
            del buffer[:2]
            self._chunk_left = -1


async def serve(sock: Any, handler: Handler, limit: Callable[[], int]) -> asyncio.Server:
    """Serve ``handler`` on the listening socket ``sock``."""
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: Connection(handler, limit), sock=sock)
