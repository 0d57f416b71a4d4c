"""The Runtime API answers as AWS's Runtime Interface Emulator does: every route, status
code, header and body, checked with a hand-written runtime.

Each test runs twice: against the shared listener that runtimes started outside the router
connect to, and against a managed execution environment (a real process the router starts;
it writes down its ``AWS_LAMBDA_RUNTIME_API`` and the test speaks for it)."""

from __future__ import annotations

import asyncio
import io
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from router.invokers.runtime.protocol import MAX_RESPONSE_BYTES
from router.invokers.runtime_api import RuntimeApiInvoker, RuntimeApiInvokerSettings
from router.models import Invocation, InvokeResult, Outcome
from tests.invokers.helpers import InitErrors, function, invocation

READY = 30.0

# A managed environment that leaves the protocol to the test: it writes its Runtime API
# address and pid, then sleeps until it is stopped.
SLEEPER = (
    "import os, sys, time\n"
    "open(sys.argv[1] + '.tmp', 'w').write(os.environ['AWS_LAMBDA_RUNTIME_API'] + ' '"
    " + str(os.getpid()))\n"
    "os.rename(sys.argv[1] + '.tmp', sys.argv[1])\n"
    "time.sleep(3600)\n"
)


class Runtime:
    """A runtime speaking the protocol by hand, over one keep-alive connection."""

    def __init__(self, session: aiohttp.ClientSession, address: Callable[[], Awaitable[str]]):
        self.session = session
        self._address = address

    async def base(self) -> str:
        return f"http://{await self._address()}"

    async def next(self) -> tuple[dict[str, str], bytes]:
        async with self.session.get(f"{await self.base()}/2018-06-01/runtime/invocation/next") as r:
            assert r.status == 200, await r.text()
            return dict(r.headers), await r.read()

    async def raw(
        self, method: str, path: str, body: Any = b"", headers: dict[str, str] | None = None
    ) -> tuple[int, bytes, dict[str, str]]:
        async with self.session.request(
            method, f"{await self.base()}{path}", data=body, headers=headers
        ) as r:
            return r.status, await r.read(), dict(r.headers)

    async def post(
        self, path: str, body: Any = b"", headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        status, raw, _ = await self.raw("POST", f"/2018-06-01/runtime/{path}", body, headers)
        return status, orjson.loads(raw)


class Harness:
    def __init__(self, invoker: RuntimeApiInvoker, runtime: Runtime, managed: bool) -> None:
        self.invoker = invoker
        self.runtime = runtime
        self.managed = managed
        self.tasks: list[asyncio.Task[InvokeResult]] = []

    def invoke(self, call: Invocation) -> asyncio.Task[InvokeResult]:
        task = asyncio.create_task(self.invoker.invoke(call))
        self.tasks.append(task)
        return task

    async def take(self, event: Any = None) -> tuple[asyncio.Task[InvokeResult], str]:
        """Invoke, and take the invocation as the runtime; returns its task and request id."""
        call = invocation({} if event is None else event)
        task = self.invoke(call)
        headers, _ = await self.runtime.next()
        assert headers["Lambda-Runtime-Aws-Request-Id"] == call.request_id
        return task, call.request_id


@pytest.fixture
def function_timeout() -> float:
    return 5.0


@pytest.fixture(params=["external", "managed"])
async def harness(
    request: pytest.FixtureRequest, tmp_path: Path, function_timeout: float
) -> AsyncIterator[Harness]:
    managed = request.param == "managed"
    marker = tmp_path / "runtime-api"
    settings: dict[str, Any] = {"queue_timeout": READY}
    if managed:
        settings["runtime"] = {"command": [sys.executable, "-c", SLEEPER, str(marker)]}
        settings["queue_size"] = 10
    else:
        settings["listen"] = "127.0.0.1:0"
    invoker = RuntimeApiInvoker(
        function(
            "fn", "runtime-api", RuntimeApiInvokerSettings(**settings), timeout=function_timeout
        ),
        InitErrors().context(),
    )
    await invoker.start()

    async def address() -> str:
        if not managed:
            return invoker.address
        give_up = time.monotonic() + READY
        while not marker.exists():
            assert time.monotonic() < give_up, "the environment never started"
            await asyncio.sleep(0.01)
        return marker.read_text().split()[0]

    connector = aiohttp.TCPConnector(limit=1)  # one runtime, one connection
    async with aiohttp.ClientSession(connector=connector) as session:
        h = Harness(invoker, Runtime(session, address), managed)
        try:
            yield h
        finally:
            await invoker.aclose()
            for task in h.tasks:
                task.cancel()
            await asyncio.gather(*h.tasks, return_exceptions=True)


def pid_of(harness: Harness, tmp_path: Path) -> int:
    return int((tmp_path / "runtime-api").read_text().split()[1])


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def gone(pid: int) -> None:
    async with asyncio.timeout(READY):
        while alive(pid):
            await asyncio.sleep(0.01)


# -- /next -------------------------------------------------------------------------------------


async def test_next_sends_the_invocation_and_its_headers(harness: Harness) -> None:
    call = Invocation(
        function="fn",
        event={"a": 1},
        request_id="req-1",
        deadline=0,  # not used: the function's clock starts at /next
        invoked_function_arn="arn:aws:lambda:eu-west-1:123456789012:function:fn",
        trace_id="Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1",
        client_context='{"custom":{"k":"v"},"env":{},"client":{}}',
        cognito_identity_id="us-east-1:1234",
        cognito_identity_pool_id="us-east-1:pool",
    )
    task = harness.invoke(call)
    await asyncio.sleep(0.2)  # queued a while: this does not count against the timeout
    asked = time.time()
    headers, body = await harness.runtime.next()
    assert body == b'{"a":1}'
    assert headers["Content-Type"] == "application/json"
    assert headers["Lambda-Runtime-Aws-Request-Id"] == "req-1"
    assert int(headers["Lambda-Runtime-Deadline-Ms"]) >= int(asked * 1000) + 5000
    assert headers["Lambda-Runtime-Invoked-Function-Arn"] == call.invoked_function_arn
    assert headers["Lambda-Runtime-Trace-Id"] == call.trace_id
    assert headers["Lambda-Runtime-Client-Context"] == call.client_context
    assert orjson.loads(headers["Lambda-Runtime-Cognito-Identity"]) == {
        "cognitoIdentityId": "us-east-1:1234",
        "cognitoIdentityPoolId": "us-east-1:pool",
    }
    status, raw, answer_headers = await harness.runtime.raw(
        "POST", "/2018-06-01/runtime/invocation/req-1/response", b'{"ok": true}'
    )
    assert (status, raw) == (202, b'{"status":"OK"}\n')
    assert answer_headers["Content-Type"] == "application/json"
    assert (await task).payload == {"ok": True}


async def test_next_leaves_out_headers_the_invocation_does_not_carry(harness: Harness) -> None:
    task = harness.invoke(invocation({}))
    headers, _ = await harness.runtime.next()
    for absent in (
        "Lambda-Runtime-Trace-Id",
        "Lambda-Runtime-Client-Context",
        "Lambda-Runtime-Cognito-Identity",
    ):
        assert absent not in headers
    assert headers["Lambda-Runtime-Invoked-Function-Arn"].endswith(":function:fn")
    await harness.runtime.post(
        f"invocation/{headers['Lambda-Runtime-Aws-Request-Id']}/response", b"null"
    )
    assert (await task).outcome is Outcome.SUCCESS


# -- /response and /error ----------------------------------------------------------------------


def invalid_state(current: str, target: str) -> dict[str, str]:
    return {
        "errorMessage": (
            f"State transition from {current} to {target} failed for runtime. "
            "Error: State transition is not allowed"
        ),
        "errorType": "InvalidStateTransition",
    }


INVALID_REQUEST_ID = {"errorMessage": "Invalid request ID", "errorType": "InvalidRequestID"}


async def test_a_second_answer_is_an_invalid_state_transition(harness: Harness) -> None:
    task, request_id = await harness.take()
    runtime = harness.runtime
    assert await runtime.post(f"invocation/{request_id}/response", b"1") == (202, {"status": "OK"})
    assert (await task).payload == 1
    assert await runtime.post(f"invocation/{request_id}/response", b"2") == (
        403,
        invalid_state("RuntimeResponseSentState", "InvocationResponse"),
    )
    assert await runtime.post(f"invocation/{request_id}/error", b"{}") == (
        403,
        invalid_state("RuntimeResponseSentState", "InvocationErrorResponse"),
    )
    assert await runtime.post("invocation/someone-else/response", b"1") == (
        400,
        INVALID_REQUEST_ID,
    )
    # Once the runtime asks for the next invocation, the old id is gone.
    second, second_id = await harness.take()
    assert await runtime.post(f"invocation/{request_id}/response", b"3") == (
        400,
        INVALID_REQUEST_ID,
    )
    await runtime.post(f"invocation/{second_id}/response", b"4")
    assert (await second).payload == 4


async def test_error_after_error_is_an_invalid_state_transition(harness: Harness) -> None:
    task, request_id = await harness.take()
    runtime = harness.runtime
    body = b'{"errorMessage": "x", "errorType": "Custom", "stackTrace": ["a"]}'
    assert await runtime.post(f"invocation/{request_id}/error", body) == (202, {"status": "OK"})
    result = await task
    assert result.outcome is Outcome.FUNCTION_ERROR
    assert result.function_error == "Unhandled"
    assert result.payload == {"errorMessage": "x", "errorType": "Custom", "stackTrace": ["a"]}
    assert await runtime.post(f"invocation/{request_id}/error", body) == (
        403,
        invalid_state("RuntimeResponseSentState", "InvocationErrorResponse"),
    )


@pytest.mark.parametrize(
    ("body", "headers", "payload", "detail"),
    [
        # Not JSON: passed on as it is, named by the error type header (scrubbed as the RIE).
        (b"it broke", {"Lambda-Runtime-Function-Error-Type": "Runtime.Crashed"}, "it broke",
         "Runtime.Crashed: it broke"),
        (b"it broke", {"Lambda-Runtime-Function-Error-Type": "ValueError"}, "it broke",
         "Runtime.Unknown: it broke"),
        (b"", {"Lambda-Runtime-Function-Error-Type": "Function.bad"}, None, "Function.Unknown"),
        (b"[1, 2]", {}, [1, 2], "Runtime.Unknown: [1, 2]"),
        # The error-cause content type keeps the error and drops the X-Ray cause.
        (
            b'{"errorMessage": "m", "errorType": "T", "stackTrace": [], "errorCause": {"a": 1}}',
            {"Content-Type": "application/vnd.aws.lambda.error.cause+json"},
            {"errorMessage": "m", "errorType": "T"},
            "T: m",
        ),
        (
            b"not json",
            {"Content-Type": "application/vnd.aws.lambda.error.cause+json"},
            "Invalid error body",
            "Runtime.Unknown: Invalid error body",
        ),
    ],
)  # fmt: skip
async def test_error_bodies_are_passed_on(
    harness: Harness, body: bytes, headers: dict[str, str], payload: Any, detail: str
) -> None:
    task, request_id = await harness.take()
    status, _ = await harness.runtime.post(f"invocation/{request_id}/error", body, headers)
    assert status == 202
    result = await task
    assert result.outcome is Outcome.FUNCTION_ERROR
    assert result.payload == payload
    assert result.detail == detail


async def test_response_limit_is_6_mib_and_100_bytes(harness: Harness) -> None:
    runtime = harness.runtime
    task, request_id = await harness.take()
    largest = b'"' + b"x" * (MAX_RESPONSE_BYTES - 2) + b'"'
    assert await runtime.post(f"invocation/{request_id}/response", io.BytesIO(largest)) == (
        202,
        {"status": "OK"},
    )
    assert len((await task).payload) == MAX_RESPONSE_BYTES - 2

    task, request_id = await harness.take()
    status, answer = await runtime.post(
        f"invocation/{request_id}/response", io.BytesIO(largest + b" ")
    )
    assert (status, answer) == (
        413,
        {
            "errorMessage": "Exceeded maximum allowed payload size (6291556 bytes).",
            "errorType": "RequestEntityTooLarge",
        },
    )
    result = await task
    assert result.outcome is Outcome.FUNCTION_ERROR
    assert result.payload == {
        "errorType": "Function.ResponseSizeTooLarge",
        "errorMessage": (
            "Response payload size (6291557 bytes) exceeded maximum allowed payload size "
            "(6291556 bytes)."
        ),
    }
    # The response counts as sent: another one is refused.
    status, answer = await runtime.post(f"invocation/{request_id}/response", b"1")
    assert status == 403


async def test_oversized_body_without_content_length_reports_its_real_size(
    harness: Harness,
) -> None:
    async def chunked() -> AsyncIterator[bytes]:
        for _ in range(7):
            yield b"y" * (1024 * 1024)

    task, request_id = await harness.take()
    status, _ = await harness.runtime.post(f"invocation/{request_id}/response", chunked())
    assert status == 413
    result = await task
    assert result.payload["errorMessage"].startswith(
        f"Response payload size ({7 * 1024 * 1024} bytes) exceeded"
    )
    assert "stackTrace" not in result.payload


async def test_invalid_response_mode_is_refused(harness: Harness) -> None:
    task, request_id = await harness.take()
    status, answer = await harness.runtime.post(
        f"invocation/{request_id}/response",
        b"1",
        {"Lambda-Runtime-Function-Response-Mode": "sideways"},
    )
    assert (status, answer) == (
        400,
        {
            "errorMessage": "Invalid function response mode",
            "errorType": "InvalidFunctionResponseMode",
        },
    )
    result = await task
    assert result.outcome is Outcome.FUNCTION_ERROR
    assert result.detail.startswith("Runtime.InvalidResponseModeHeader")


async def test_streamed_response_is_accepted(harness: Harness) -> None:
    task, request_id = await harness.take()

    async def stream() -> AsyncIterator[bytes]:
        yield b'{"part": '
        yield b"1}"

    status, _ = await harness.runtime.post(
        f"invocation/{request_id}/response",
        stream(),
        {"Lambda-Runtime-Function-Response-Mode": "streaming"},
    )
    assert status == 202
    assert (await task).payload == {"part": 1}


# -- /init/error -------------------------------------------------------------------------------


async def test_init_error_before_the_first_next_fails_the_waiting_invocation(
    harness: Harness,
) -> None:
    task = harness.invoke(invocation({}, timeout=5))
    await asyncio.sleep(0)
    error = {
        "errorMessage": "Unable to import module 'app'",
        "errorType": "Runtime.ImportModuleError",
    }
    status, answer = await harness.runtime.post(
        "init/error",
        orjson.dumps(error),
        {"Lambda-Runtime-Function-Error-Type": "Runtime.ImportModuleError"},
    )
    assert (status, answer) == (202, {"status": "OK"})
    result = await task
    assert result.outcome is Outcome.FUNCTION_ERROR
    assert result.payload == error


async def test_init_error_after_init_is_refused_and_fails_nothing(harness: Harness) -> None:
    runtime = harness.runtime
    task, request_id = await harness.take()
    assert await runtime.post("init/error", b"{}") == (403, invalid_state("Running", "InitError"))
    await runtime.post(f"invocation/{request_id}/response", b"1")
    assert await runtime.post("init/error", b"{}") == (
        403,
        invalid_state("RuntimeResponseSentState", "InitError"),
    )
    assert (await task).payload == 1
    queued = harness.invoke(invocation({"second": True}))
    assert await runtime.post("init/error", b"{}") == (
        403,
        invalid_state("RuntimeResponseSentState", "InitError"),
    )
    headers, body = await runtime.next()
    assert body == b'{"second":true}'
    await runtime.post(f"invocation/{headers['Lambda-Runtime-Aws-Request-Id']}/response", b"2")
    assert (await queued).payload == 2


# -- the other routes --------------------------------------------------------------------------


async def test_ping_and_the_stubbed_apis(harness: Harness) -> None:
    runtime = harness.runtime
    harness.invoke(invocation({}))  # a managed environment starts for it
    status, body, headers = await runtime.raw("GET", "/2018-06-01/ping")
    assert (status, body) == (200, b"pong")
    assert headers["Content-Type"].startswith("text/plain")
    assert (await runtime.raw("PUT", "/2020-08-15/logs", b"{}"))[:2] == (
        202,
        b'{"errorMessage":"Logs API is not supported","errorType":"Logs.NotSupported"}\n',
    )
    assert (await runtime.raw("PUT", "/2022-07-01/telemetry", b"{}"))[:2] == (
        202,
        b'{"errorMessage":"Telemetry API is not supported","errorType":"Telemetry.NotSupported"}\n',
    )
    assert (await runtime.raw("GET", "/2018-06-01/runtime/nope"))[0] == 404


# -- timeouts ----------------------------------------------------------------------------------


@pytest.mark.parametrize("function_timeout", [1.0])
async def test_late_answer_after_a_timeout(harness: Harness, tmp_path: Path) -> None:
    invoker = harness.invoker
    call = invocation({})
    task = harness.invoke(call)
    await harness.runtime.next()
    result = await task
    assert result.outcome is Outcome.TIMEOUT
    assert result.payload["errorType"] == "Sandbox.Timedout"
    if harness.managed:
        # The environment is killed with its process group: no late answer can come.
        await gone(pid_of(harness, tmp_path))
        assert invoker.pool is not None and not invoker.pool.environments
    else:
        status, answer = await harness.runtime.post(f"invocation/{call.request_id}/response", b"1")
        assert (status, answer) == (400, INVALID_REQUEST_ID)
        assert invoker.rejected_responses == 1
