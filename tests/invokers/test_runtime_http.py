"""The Runtime API's HTTP layer spoken to byte by byte: what runtime clients send (keep-alive,
chunked bodies, ``Expect: 100-continue``, HTTP/1.0) and what they must never break."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import cast

import orjson
import pytest

from router.invokers.runtime_api import RuntimeApiInvoker, RuntimeApiInvokerSettings
from router.models import Invocation, Outcome
from tests.invokers.helpers import InitErrors, function, invocation


@pytest.fixture
async def invoker() -> AsyncIterator[RuntimeApiInvoker]:
    settings = RuntimeApiInvokerSettings(listen="127.0.0.1:0", queue_timeout=30)
    made = RuntimeApiInvoker(function("fn", "runtime-api", settings), InitErrors().context())
    await made.start()
    yield made
    await made.aclose()


class Raw:
    """One TCP connection, requests written by hand."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def response(self) -> tuple[int, dict[str, str], bytes]:
        head = await self.reader.readuntil(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").rstrip("\r\n").split("\r\n")
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.lower()] = value.strip()
        body = await self.reader.readexactly(int(headers.get("content-length", "0")))
        return int(status_line.split(" ")[1]), headers, body

    async def closed(self) -> bool:
        return await self.reader.read(1) == b""

    def close(self) -> None:
        self.writer.close()


@pytest.fixture
async def raw(invoker: RuntimeApiInvoker) -> AsyncIterator[Raw]:
    host, port = invoker.address.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    connection = Raw(reader, writer)
    yield connection
    connection.close()


NEXT = b"GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\nHost: x\r\n\r\n"


async def test_keep_alive_chunked_and_expect_continue(invoker: RuntimeApiInvoker, raw: Raw) -> None:
    task = asyncio.create_task(invoker.invoke(invocation({"n": 1})))
    await raw.send(NEXT)
    status, headers, body = await raw.response()
    assert (status, body) == (200, b'{"n":1}')
    request_id = headers["lambda-runtime-aws-request-id"]
    # A chunked body with an extension and a trailer, announced with Expect: 100-continue.
    await raw.send(
        f"POST /2018-06-01/runtime/invocation/{request_id}/response HTTP/1.1\r\n"
        "Host: x\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n".encode()
    )
    assert await raw.reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
    await raw.send(b'4;ext=1\r\n{"ok\r\n6\r\n": 1}\n\r\n0\r\nX-Trailer: y\r\n\r\n')
    status, _, body = await raw.response()
    assert (status, body) == (202, b'{"status":"OK"}\n')
    assert (await task).payload == {"ok": 1}


async def test_pipelined_requests_are_answered_in_order(
    invoker: RuntimeApiInvoker, raw: Raw
) -> None:
    await raw.send(
        b"GET /2018-06-01/ping HTTP/1.1\r\n\r\n"
        b"PUT /2020-08-15/logs HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}"
        b"GET /2018-06-01/ping HTTP/1.1\r\n\r\n"
    )
    assert (await raw.response())[2] == b"pong"
    assert (await raw.response())[0] == 202
    assert (await raw.response())[2] == b"pong"


async def test_url_encoded_request_id(invoker: RuntimeApiInvoker, raw: Raw) -> None:
    call = Invocation(function="fn", event={}, request_id="id with/slash", deadline=0)
    task = asyncio.create_task(invoker.invoke(call))
    await raw.send(NEXT)
    _, headers, _ = await raw.response()
    assert headers["lambda-runtime-aws-request-id"] == "id with/slash"
    await raw.send(
        b"POST /2018-06-01/runtime/invocation/id%20with%2Fslash/response HTTP/1.1\r\n"
        b"Content-Length: 1\r\n\r\n7"
    )
    assert (await raw.response())[0] == 202
    assert (await task).payload == 7


async def test_http_1_0_closes_after_the_answer(raw: Raw) -> None:
    await raw.send(b"GET /2018-06-01/ping HTTP/1.0\r\n\r\n")
    status, headers, body = await raw.response()
    assert (status, body, headers["connection"]) == (200, b"pong", "close")
    assert await raw.closed()


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"NONSENSE\r\n\r\n", 400),
        (b"GET / HTTP/2.0\r\n\r\n", 400),
        (b"GET /2018-06-01/ping HTTP/1.1\r\nbad header\r\n\r\n", 400),
        (b"POST /2018-06-01/runtime/init/error HTTP/1.1\r\nContent-Length: x\r\n\r\n", 400),
        (b"POST /2018-06-01/runtime/init/error HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
        (b"GET /2018-06-01/ping HTTP/1.1\r\nX: " + b"a" * 70_000, 431),
    ],
)
async def test_malformed_requests_are_refused_and_the_connection_closed(
    raw: Raw, request_bytes: bytes, status: int
) -> None:
    await raw.send(request_bytes)
    assert (await raw.response())[0] == status
    assert await raw.closed()


async def test_unknown_routes_and_methods(raw: Raw) -> None:
    await raw.send(b"GET /2018-06-01/runtime/elsewhere HTTP/1.1\r\n\r\n")
    assert (await raw.response())[:3:2] == (404, b"404 page not found\n")
    await raw.send(b"POST /2018-06-01/runtime/invocation/next HTTP/1.1\r\n\r\n")
    assert (await raw.response())[0] == 405
    await raw.send(b"GET /2018-06-01/runtime/invocation/x/response HTTP/1.1\r\n\r\n")
    assert (await raw.response())[0] == 405
    await raw.send(b"GET /2018-06-01/runtime/init/error HTTP/1.1\r\n\r\n")
    assert (await raw.response())[0] == 405


async def test_a_runtime_that_hangs_up_while_waiting_is_forgotten(
    invoker: RuntimeApiInvoker, raw: Raw
) -> None:
    await raw.send(NEXT)
    async with asyncio.timeout(10):
        await invoker.wait_idle(1)
    raw.close()
    async with asyncio.timeout(10):
        while invoker.idle_runtimes:
            await asyncio.sleep(0.01)
    host, port = invoker.address.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    other = Raw(reader, writer)
    try:
        task = asyncio.create_task(invoker.invoke(invocation({"to": "the next one"})))
        await other.send(NEXT)
        _, headers, body = await other.response()
        assert orjson.loads(body) == {"to": "the next one"}
        request_id = headers["lambda-runtime-aws-request-id"]
        await other.send(
            f"POST /2018-06-01/runtime/invocation/{request_id}/error HTTP/1.1\r\n"
            "Content-Length: 0\r\n\r\n".encode()
        )
        assert (await other.response())[0] == 202
        assert (await task).outcome is Outcome.FUNCTION_ERROR
    finally:
        other.close()


async def test_a_listener_whose_start_is_cancelled_leaves_the_next_one_working() -> None:
    """An environment stopped as it spawns cancels its listener's start; the descriptor the
    next listener gets (the same number, freed a moment ago) must still accept."""
    from router.invokers.runtime.server import Host, RuntimeServer, bind

    first = RuntimeServer(cast(Host, None))  # nothing is served: only the start matters
    starting = asyncio.create_task(first.start(bind("127.0.0.1", 0, "listen")))
    await asyncio.sleep(0)  # the loop is registering the socket
    starting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await starting
    await first.aclose()

    settings = RuntimeApiInvokerSettings(listen="127.0.0.1:0")
    second = RuntimeApiInvoker(function("b", "runtime-api", settings), InitErrors().context())
    await second.start()
    try:
        host, port = second.address.rsplit(":", 1)
        async with asyncio.timeout(10):  # a listener that never accepts hangs here
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(b"GET /2018-06-01/ping HTTP/1.1\r\nHost: x\r\n\r\n")
            status = await reader.readline()
        writer.close()
        assert status.startswith(b"HTTP/1.1 200")
    finally:
        await second.aclose()
