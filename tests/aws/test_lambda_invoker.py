"""The lambda invoker against a small Invoke API endpoint (moto's Lambda runs no handlers)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiohttp import web

from connectors.aws.lambda_invoker import LambdaInvoker, LambdaInvokerSettings
from router.abc import InvokerContext
from router.models import FunctionConfig, Invocation, Outcome
from tests.fixtures.procs import free_port

pytestmark = pytest.mark.aws

CALLS = web.AppKey("calls", list)


async def _invocations(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    event = orjson.loads(await request.read())
    request.app[CALLS].append((name, dict(request.query), event))
    if name == "echo":
        return web.json_response({"got": event}, headers={"X-Amz-Executed-Version": "7"})
    if name == "fail":
        error = {"errorMessage": "boom", "errorType": "ValueError", "stackTrace": ["line"]}
        return web.json_response(error, headers={"X-Amz-Function-Error": "Unhandled"})
    if name == "lambda-timeout":
        error = {
            "errorType": "Sandbox.Timedout",
            "errorMessage": "Task timed out after 3.00 seconds",
        }
        return web.json_response(error, headers={"X-Amz-Function-Error": "Unhandled"})
    if name == "throttle":
        return web.json_response(
            {
                "Type": "User",
                "message": "Rate Exceeded.",
                "Reason": "ReservedFunctionConcurrentInvocationLimitExceeded",
            },
            status=429,
            headers={"x-amzn-ErrorType": "TooManyRequestsException", "Retry-After": "2"},
        )
    if name == "slow":
        await asyncio.sleep(3)
        return web.json_response(None)
    if name == "broken":
        return web.json_response(
            {"Type": "Service", "message": "internal"},
            status=500,
            headers={"x-amzn-ErrorType": "ServiceException"},
        )
    return web.json_response(
        {"Type": "User", "message": f"Function not found: {name}"},
        status=404,
        headers={"x-amzn-ErrorType": "ResourceNotFoundException"},
    )


@pytest.fixture
async def endpoint(aws_credentials: None) -> AsyncIterator[tuple[str, list[Any]]]:
    app = web.Application()
    app[CALLS] = []
    app.router.add_post("/2015-03-31/functions/{name}/invocations", _invocations)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield f"http://127.0.0.1:{port}", app[CALLS]
    finally:
        await runner.cleanup()


def _invoker(endpoint: str, name: str, **settings: Any) -> LambdaInvoker:
    validated = LambdaInvokerSettings(endpoint_url=endpoint, region="us-east-1", **settings)
    function = FunctionConfig(name=name, invoker="lambda", timeout=0.5, settings=validated)
    store: Any = None
    return LambdaInvoker(function, InvokerContext(store=store, report_init_error=lambda _: None))


def _invocation(event: Any, timeout: float = 10) -> Invocation:
    # Long enough for a first call on a loaded machine; the timeout tests pass their own.
    return Invocation(
        function="f", event=event, request_id=str(uuid.uuid4()), deadline=time.time() + timeout
    )


async def test_outcomes(endpoint: tuple[str, list[Any]]) -> None:
    url, calls = endpoint
    results = {}
    for name in ("echo", "fail", "lambda-timeout", "throttle", "slow", "broken", "missing"):
        invoker = _invoker(url, name)
        await invoker.start()
        try:
            timeout = 0.5 if name == "slow" else 10
            results[name] = await invoker.invoke(_invocation({"n": name}, timeout=timeout))
        finally:
            await invoker.aclose()
            await invoker.aclose()
    ok = results["echo"]
    assert ok.outcome is Outcome.SUCCESS and ok.payload == {"got": {"n": "echo"}}
    assert ok.executed_version == "7"
    fail = results["fail"]
    assert fail.outcome is Outcome.FUNCTION_ERROR and fail.function_error == "Unhandled"
    assert fail.payload == {
        "errorMessage": "boom",
        "errorType": "ValueError",
        "stackTrace": ["line"],
    }
    assert results["lambda-timeout"].outcome is Outcome.TIMEOUT
    throttle = results["throttle"]
    assert throttle.outcome is Outcome.THROTTLED and throttle.retry_after == 2.0
    assert throttle.status_code == 429
    assert results["slow"].outcome is Outcome.TIMEOUT
    broken = results["broken"]
    assert broken.outcome is Outcome.TRANSPORT_ERROR and broken.status_code == 500
    assert results["missing"].outcome is Outcome.TRANSPORT_ERROR
    assert "ResourceNotFoundException" in results["missing"].detail
    # One request per invoke: botocore does not retry behind the router's back.
    assert [c[0] for c in calls].count("throttle") == 1
    assert [c[0] for c in calls].count("broken") == 1


async def test_function_name_and_qualifier(endpoint: tuple[str, list[Any]]) -> None:
    url, calls = endpoint
    invoker = _invoker(url, "local-name", function_name="echo", qualifier="live")
    await invoker.start()
    try:
        result = await invoker.invoke(_invocation({"a": 1}))
    finally:
        await invoker.aclose()
    assert result.outcome is Outcome.SUCCESS
    assert calls == [("echo", {"Qualifier": "live"}, {"a": 1})]


async def test_unreachable_endpoint_is_a_transport_error(aws_credentials: None) -> None:
    invoker = _invoker(f"http://127.0.0.1:{free_port()}", "echo")
    await invoker.start()
    try:
        result = await invoker.invoke(_invocation({}, timeout=5))
    finally:
        await invoker.aclose()
    assert result.outcome is Outcome.TRANSPORT_ERROR
    assert "testing" not in result.detail
