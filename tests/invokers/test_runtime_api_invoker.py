"""The ``runtime-api`` invoker with real ``awslambdaric`` runtimes pulling invocations, and
the protocol details checked with a hand-written HTTP client."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from router.errors import ConfigError
from router.invokers.runtime_api import (
    RuntimeApiInvoker,
    RuntimeApiInvokerSettings,
    parse_listen,
)
from router.models import Invocation, Outcome
from tests.fixtures.lambda_runtime import RuntimeStarter
from tests.invokers.helpers import HANDLERS, InitErrors, function, invocation

READY = 30.0
"""Seconds a runtime process gets to start and connect (slow shared CI machines)."""

Factory = Callable[..., Coroutine[Any, Any, RuntimeApiInvoker]]


@pytest.fixture
def init_errors() -> InitErrors:
    return InitErrors()


@pytest.fixture
async def make(init_errors: InitErrors) -> AsyncIterator[Factory]:
    made: list[RuntimeApiInvoker] = []

    async def factory(name: str = "fn", timeout: float = 3.0, **settings: Any) -> RuntimeApiInvoker:
        settings.setdefault("listen", "127.0.0.1:0")
        config = RuntimeApiInvokerSettings(**settings)
        invoker = RuntimeApiInvoker(
            function(name, "runtime-api", config, timeout), init_errors.context()
        )
        await invoker.start()
        made.append(invoker)
        return invoker

    yield factory
    for invoker in made:
        await invoker.aclose()


async def ready(invoker: RuntimeApiInvoker, count: int = 1) -> None:
    async with asyncio.timeout(READY):
        await invoker.wait_idle(count)


async def wait_for_exit(proc: subprocess.Popen[bytes]) -> int:
    return await asyncio.to_thread(proc.wait, READY)


# -- with awslambdaric ------------------------------------------------------------------------


async def test_delivery_with_context(make: Factory, lambda_runtimes: RuntimeStarter) -> None:
    invoker = await make(timeout=5.0)
    lambda_runtimes(invoker.address, "invoker_handlers.context_info")
    await ready(invoker)
    for n in range(2):  # the same runtime serves one invocation after the other
        call = invocation({"n": n}, timeout=5.0)
        result = await invoker.invoke(call)
        assert result.outcome is Outcome.SUCCESS, result
        out = result.payload
        assert out["event"] == {"n": n}
        assert out["aws_request_id"] == call.request_id
        assert out["function_name"] == "fn"
        assert out["invoked_function_arn"].endswith(":function:fn")
        assert 0 < out["remaining_ms"] <= 5000


async def test_handler_error_is_a_function_error(
    make: Factory, lambda_runtimes: RuntimeStarter
) -> None:
    invoker = await make()
    lambda_runtimes(invoker.address, "invoker_handlers.fail")
    await ready(invoker)
    result = await invoker.invoke(invocation({"message": "no such order"}))
    assert result.outcome is Outcome.FUNCTION_ERROR
    assert result.function_error == "Unhandled"
    assert result.payload["errorType"] == "ValueError"
    assert result.payload["errorMessage"] == "no such order"
    assert any("_inner" in line for line in result.payload["stackTrace"])


async def test_partial_batch_response_arrives_as_payload(
    make: Factory, lambda_runtimes: RuntimeStarter
) -> None:
    invoker = await make()
    lambda_runtimes(invoker.address, "sqs_batch.handler", handler_dir=HANDLERS)
    await ready(invoker)
    event = {"Records": [{"messageId": "m1", "body": "ok"}, {"messageId": "m2", "body": "fail"}]}
    result = await invoker.invoke(invocation(event))
    assert result.outcome is Outcome.SUCCESS
    assert result.payload == {"batchItemFailures": [{"itemIdentifier": "m2"}]}


async def test_slow_handler_times_out_and_its_late_response_is_rejected(
    make: Factory, lambda_runtimes: RuntimeStarter
) -> None:
    invoker = await make(timeout=0.5)
    proc = lambda_runtimes(invoker.address, "invoker_handlers.sleep")
    await ready(invoker)
    call = invocation({"seconds": 1.5}, timeout=0.5)
    result = await invoker.invoke(call)
    assert result.outcome is Outcome.TIMEOUT
    assert result.payload["errorType"] == "Sandbox.Timedout"
    # The late response gets 400 InvalidRequestID; awslambdaric then exits, as a timed-out
    # environment is torn down on AWS.
    assert await wait_for_exit(proc) != 0
    assert invoker.rejected_responses == 1


async def test_two_runtimes_run_two_invocations_at_once(
    make: Factory, lambda_runtimes: RuntimeStarter, tmp_path: Path
) -> None:
    invoker = await make(timeout=25.0)
    lambda_runtimes(invoker.address, "invoker_handlers.overlap")
    lambda_runtimes(invoker.address, "invoker_handlers.overlap")
    await ready(invoker, 2)
    # Each handler waits for the other's start marker: both see it only if they overlap.
    first, second = await asyncio.gather(
        invoker.invoke(invocation({"dir": str(tmp_path), "me": "a", "other": "b"}, timeout=25)),
        invoker.invoke(invocation({"dir": str(tmp_path), "me": "b", "other": "a"}, timeout=25)),
    )
    assert first.payload == {"me": "a", "saw_other": True}
    assert second.payload == {"me": "b", "saw_other": True}


async def test_runtime_killed_mid_invocation_times_out(
    make: Factory, lambda_runtimes: RuntimeStarter, tmp_path: Path
) -> None:
    invoker = await make(timeout=3.0)
    proc = lambda_runtimes(invoker.address, "invoker_handlers.mark_and_sleep")
    await ready(invoker)
    marker = tmp_path / "started"
    task = asyncio.create_task(
        invoker.invoke(invocation({"marker": str(marker), "seconds": 60}, timeout=3.0))
    )
    give_up = time.monotonic() + READY
    while not marker.exists():
        assert time.monotonic() < give_up, "the handler never started"
        await asyncio.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    result = await task
    assert result.outcome is Outcome.TIMEOUT


async def test_init_error_is_reported_and_fails_the_waiting_invocation(
    make: Factory, lambda_runtimes: RuntimeStarter, init_errors: InitErrors
) -> None:
    invoker = await make(timeout=READY)
    task = asyncio.create_task(invoker.invoke(invocation({}, timeout=READY)))
    await asyncio.sleep(0)  # queued before any runtime exists
    proc = lambda_runtimes(invoker.address, "broken_module.handler")
    result = await task
    assert result.outcome is Outcome.FUNCTION_ERROR
    assert "import-time failure" in result.payload["errorMessage"]
    assert len(init_errors) == 1
    assert "import-time failure" in init_errors[0]
    assert await wait_for_exit(proc) != 0


async def test_each_function_has_its_own_address(
    make: Factory, lambda_runtimes: RuntimeStarter
) -> None:
    one = await make("one")
    two = await make("two")
    assert one.address != two.address
    lambda_runtimes(one.address, "invoker_handlers.context_info", function_name="one")
    lambda_runtimes(two.address, "invoker_handlers.context_info", function_name="two")
    await ready(one)
    await ready(two)
    r1, r2 = await asyncio.gather(one.invoke(invocation({})), two.invoke(invocation({})))
    assert r1.payload["function_name"] == "one"
    assert r2.payload["function_name"] == "two"


# -- protocol details with a hand-written runtime ---------------------------------------------


class Runtime:
    """A minimal Runtime API client."""

    def __init__(self, session: aiohttp.ClientSession, address: str) -> None:
        self.session = session
        self.base = f"http://{address}/2018-06-01/runtime"

    async def next(self) -> tuple[dict[str, str], bytes]:
        async with self.session.get(f"{self.base}/invocation/next") as response:
            assert response.status == 200
            return dict(response.headers), await response.read()

    async def post(
        self, path: str, body: bytes, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        async with self.session.post(f"{self.base}/{path}", data=body, headers=headers) as response:
            return response.status, await response.json()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


async def test_next_headers_and_response_codes(
    make: Factory, session: aiohttp.ClientSession
) -> None:
    invoker = await make()
    runtime = Runtime(session, invoker.address)
    call = Invocation(
        function="fn",
        event={"a": 1},
        request_id="req-1",
        deadline=time.time() + 3,
        invoked_function_arn="arn:aws:lambda:eu-west-1:123456789012:function:fn",
        trace_id="Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1",
    )
    task = asyncio.create_task(invoker.invoke(call))
    asked = time.time()
    headers, body = await runtime.next()
    assert body == b'{"a":1}'
    assert headers["Lambda-Runtime-Aws-Request-Id"] == "req-1"
    # The function's 3 s count from the moment the runtime took the invocation.
    assert int(headers["Lambda-Runtime-Deadline-Ms"]) >= int(asked * 1000) + 3000
    assert headers["Lambda-Runtime-Invoked-Function-Arn"] == call.invoked_function_arn
    assert headers["Lambda-Runtime-Trace-Id"] == call.trace_id
    assert headers["Content-Type"].startswith("application/json")

    assert await runtime.post("invocation/req-1/response", b'{"ok": true}') == (
        202,
        {"status": "OK"},
    )
    assert (await task).payload == {"ok": True}
    # As the RIE: the answered invocation is still the runtime's current one (403), an
    # unknown one is an invalid request id (400).
    status, answer = await runtime.post("invocation/req-1/response", b"{}")
    assert (status, answer["errorType"]) == (403, "InvalidStateTransition")
    invalid = {"errorMessage": "Invalid request ID", "errorType": "InvalidRequestID"}
    assert await runtime.post("invocation/nope/error", b"{}") == (400, invalid)


async def test_error_endpoint(make: Factory, session: aiohttp.ClientSession) -> None:
    invoker = await make()
    runtime = Runtime(session, invoker.address)
    task = asyncio.create_task(invoker.invoke(invocation({})))
    headers, _ = await runtime.next()
    request_id = headers["Lambda-Runtime-Aws-Request-Id"]
    error = b'{"errorMessage": "x", "errorType": "Custom", "stackTrace": ["a"]}'
    status, _ = await runtime.post(
        f"invocation/{request_id}/error", error, {"Lambda-Runtime-Function-Error-Type": "Custom"}
    )
    assert status == 202
    result = await task
    assert result.outcome is Outcome.FUNCTION_ERROR
    assert result.payload == {"errorMessage": "x", "errorType": "Custom", "stackTrace": ["a"]}

    # A body that is not an error object is passed on as the RIE passes it (here: nothing);
    # the error type header names the error.
    task = asyncio.create_task(invoker.invoke(invocation({})))
    headers, _ = await runtime.next()
    request_id = headers["Lambda-Runtime-Aws-Request-Id"]
    header = {"Lambda-Runtime-Function-Error-Type": "Runtime.ExitError"}
    await runtime.post(f"invocation/{request_id}/error", b"", header)
    result = await task
    assert result.outcome is Outcome.FUNCTION_ERROR
    assert result.payload is None
    assert result.detail == "Runtime.ExitError"


async def test_oversize_response_is_413_and_a_function_error(
    make: Factory, session: aiohttp.ClientSession
) -> None:
    invoker = await make(max_payload_bytes=1000)
    runtime = Runtime(session, invoker.address)
    task = asyncio.create_task(invoker.invoke(invocation({})))
    headers, _ = await runtime.next()
    request_id = headers["Lambda-Runtime-Aws-Request-Id"]
    status, body = await runtime.post(
        f"invocation/{request_id}/response", b'"' + b"x" * 1000 + b'"'
    )
    assert status == 413
    assert body == {
        "errorMessage": "Exceeded maximum allowed payload size (1000 bytes).",
        "errorType": "RequestEntityTooLarge",
    }
    result = await task
    assert result.outcome is Outcome.FUNCTION_ERROR
    assert result.payload["errorType"] == "Function.ResponseSizeTooLarge"


async def test_full_queue_throttles_and_queued_invocations_are_throttled_in_time(
    make: Factory,
) -> None:
    invoker = await make(queue_size=1, queue_timeout=0.3)
    queued = asyncio.create_task(invoker.invoke(invocation({})))
    await asyncio.sleep(0)
    assert invoker.queued == 1
    throttled = await invoker.invoke(invocation({}))
    assert throttled.outcome is Outcome.THROTTLED
    # No runtime took it: it never ran, so it is a throttle (retried without spending
    # retries), not a timeout of the function.
    result = await queued
    assert result.outcome is Outcome.THROTTLED
    assert "queue_timeout" in result.detail
    assert invoker.queued == 0


async def test_queue_size_zero_throttles_when_no_runtime_waits(make: Factory) -> None:
    invoker = await make(queue_size=0)
    assert (await invoker.invoke(invocation({}))).outcome is Outcome.THROTTLED


async def test_a_runtime_that_disconnects_from_next_gets_nothing(
    make: Factory, session: aiohttp.ClientSession
) -> None:
    invoker = await make()
    runtime = Runtime(session, invoker.address)
    polling = asyncio.create_task(runtime.next())
    async with asyncio.timeout(READY):
        await invoker.wait_idle(1)
    polling.cancel()
    with pytest.raises(asyncio.CancelledError):
        await polling
    give_up = time.monotonic() + READY
    while invoker.idle_runtimes:
        assert time.monotonic() < give_up
        await asyncio.sleep(0.01)
    assert not invoker.dispatcher._takers  # nothing left behind by the abandoned poll
    # The invocation waits for the next runtime instead of vanishing into a dead connection.
    task = asyncio.create_task(invoker.invoke(invocation({"x": 1})))
    headers, body = await runtime.next()
    assert body == b'{"x":1}'
    await runtime.post(f"invocation/{headers['Lambda-Runtime-Aws-Request-Id']}/response", b"1")
    assert (await task).payload == 1


@pytest.mark.parametrize(
    ("listen", "expected"),
    [
        ("127.0.0.1:9001", ("127.0.0.1", 9001)),
        ("[::1]:0", ("::1", 0)),
        ("0.0.0.0:80", ("0.0.0.0", 80)),
    ],
)
def test_listen_forms(listen: str, expected: tuple[str, int]) -> None:
    assert parse_listen(listen) == expected


@pytest.mark.parametrize("listen", ["9001", "host:", "host:x", "host:70000", ":9001"])
def test_bad_listen(listen: str) -> None:
    with pytest.raises(ValueError, match="listen"):
        RuntimeApiInvokerSettings(listen=listen)


async def test_address_in_use_is_a_config_error(make: Factory) -> None:
    first = await make()
    with pytest.raises(ConfigError, match=r"functions\.fn\.listen: cannot listen"):
        await make(listen=first.address)


async def test_time_spent_queued_does_not_count_against_the_timeout(
    make: Factory, session: aiohttp.ClientSession
) -> None:
    invoker = await make(timeout=0.5, queue_timeout=60)
    call = invocation({"queued": True}, timeout=0.5)
    task = asyncio.create_task(invoker.invoke(call))
    # Queued for longer than the function's whole timeout: no runtime has taken it yet.
    await asyncio.sleep(1.0)
    assert not task.done()
    assert invoker.queued == 1
    runtime = Runtime(session, invoker.address)
    asked = time.time()
    headers, _ = await runtime.next()
    # The runtime gets the function's full 0.5 s from the moment it took the invocation.
    assert int(headers["Lambda-Runtime-Deadline-Ms"]) >= int(asked * 1000) + 500
    status, _ = await runtime.post(f"invocation/{call.request_id}/response", b'{"ran": true}')
    assert status == 202
    result = await task
    assert (result.outcome, result.payload) == (Outcome.SUCCESS, {"ran": True})
    # The wait is reported apart from the duration.
    [wait] = [
        value
        for family in invoker.metrics()
        for name, _, value in family.samples
        if name == "router_function_queue_wait_seconds_sum"
    ]
    assert wait >= 0.9  # asyncio may wake a timer up to its clock resolution early
