"""The ``http`` invoker against a real aiohttp server speaking the Lambda Invoke API."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any

import orjson
import pytest
from aiohttp import web

from router.invokers.http import HttpInvoker, HttpInvokerSettings, parse_retry_after
from router.models import Outcome
from tests.fixtures.procs import free_port
from tests.invokers.helpers import InitErrors, function, invocation


@dataclass
class FakeLambda:
    """An Invoke API endpoint; the function name in the path picks the behaviour."""

    url: str = ""
    requests: list[dict[str, Any]] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        body = await request.read()
        self.requests.append(
            {
                "name": name,
                "headers": dict(request.headers),
                "query": dict(request.query),
                "body": body,
            }
        )
        if name == "ok":
            return web.json_response({"echo": orjson.loads(body)})
        if name == "versioned":
            return web.json_response(1, headers={"X-Amz-Executed-Version": "7"})
        if name == "err":
            error = {"errorMessage": "bad", "errorType": "ValueError", "stackTrace": []}
            return web.json_response(error, headers={"X-Amz-Function-Error": "Unhandled"})
        if name == "throttle":
            error = {
                "Type": "User",
                "message": "Rate Exceeded.",
                "Reason": "ReservedFunctionConcurrentInvocationLimitExceeded",
            }
            headers = {"Retry-After": "7", "x-amzn-ErrorType": "TooManyRequestsException"}
            return web.json_response(error, status=429, headers=headers)
        if name == "throttle-body":
            body_error: dict[str, Any] = {
                "__type": "TooManyRequestsException",
                "retryAfterSeconds": 2,
                "message": "slow down",
            }
            return web.json_response(body_error, status=429)
        if name == "boom":
            return web.json_response(
                {"Message": "internal"},
                status=500,
                headers={"x-amzn-ErrorType": "ServiceException"},
            )
        if name == "missing":
            return web.json_response(
                {"Message": "Function not found"},
                status=404,
                headers={"x-amzn-ErrorType": "ResourceNotFoundException"},
            )
        if name == "text":
            return web.Response(text="plain words")
        if name == "empty":
            return web.Response(body=b"")
        if name == "null":
            return web.Response(body=b"null")
        if name == "slow":
            await self.release.wait()
            return web.json_response("late")
        raise web.HTTPNotFound


@pytest.fixture
async def fake_lambda() -> AsyncIterator[FakeLambda]:
    fake = FakeLambda()
    app = web.Application()
    app.router.add_post("/2015-03-31/functions/{name}/invocations", fake.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    fake.url = f"http://127.0.0.1:{port}"
    try:
        yield fake
    finally:
        fake.release.set()
        await runner.cleanup()


Factory = Callable[..., Any]


@pytest.fixture
async def make() -> AsyncIterator[Factory]:
    made: list[HttpInvoker] = []

    async def factory(url: str, name: str, timeout: float = 3.0, **settings: Any) -> HttpInvoker:
        config = HttpInvokerSettings.model_validate({"url": url, **settings})
        invoker = HttpInvoker(function(name, "http", config, timeout), InitErrors().context())
        await invoker.start()
        made.append(invoker)
        return invoker

    yield factory
    for invoker in made:
        await invoker.aclose()


async def test_success_sends_the_invoke_api_request(fake_lambda: FakeLambda, make: Factory) -> None:
    invoker = await make(
        fake_lambda.url + "/", "ok", qualifier="live", headers={"Authorization": "Bearer s3cret"}
    )
    result = await invoker.invoke(invocation({"Records": [{"n": 1}]}))
    assert result.outcome is Outcome.SUCCESS
    assert result.payload == {"echo": {"Records": [{"n": 1}]}}
    sent = fake_lambda.requests[0]
    assert sent["headers"]["X-Amz-Invocation-Type"] == "RequestResponse"
    assert sent["headers"]["Authorization"] == "Bearer s3cret"
    assert sent["query"] == {"Qualifier": "live"}
    assert "s3cret" not in repr(invoker.settings)


async def test_function_name_setting_overrides_and_version_is_reported(
    fake_lambda: FakeLambda, make: Factory
) -> None:
    invoker = await make(fake_lambda.url, "our-name", function_name="versioned")
    result = await invoker.invoke(invocation({}))
    assert result.outcome is Outcome.SUCCESS
    assert result.payload == 1
    assert result.executed_version == "7"
    assert fake_lambda.requests[0]["name"] == "versioned"


@pytest.mark.parametrize(
    ("name", "payload"), [("text", "plain words"), ("empty", None), ("null", None)]
)
async def test_non_json_and_empty_bodies(
    fake_lambda: FakeLambda, make: Factory, name: str, payload: Any
) -> None:
    result = await (await make(fake_lambda.url, name)).invoke(invocation({}))
    assert result.outcome is Outcome.SUCCESS
    assert result.payload == payload


async def test_function_error_header(fake_lambda: FakeLambda, make: Factory) -> None:
    result = await (await make(fake_lambda.url, "err")).invoke(invocation({}))
    assert result.outcome is Outcome.FUNCTION_ERROR
    assert result.function_error == "Unhandled"
    assert result.payload == {"errorMessage": "bad", "errorType": "ValueError", "stackTrace": []}
    assert result.detail == "ValueError: bad"


async def test_429_is_throttled_with_retry_after(fake_lambda: FakeLambda, make: Factory) -> None:
    result = await (await make(fake_lambda.url, "throttle")).invoke(invocation({}))
    assert result.outcome is Outcome.THROTTLED
    assert result.retry_after == 7.0
    assert result.status_code == 429
    assert "TooManyRequestsException" in result.detail

    result = await (await make(fake_lambda.url, "throttle-body")).invoke(invocation({}))
    assert result.outcome is Outcome.THROTTLED
    assert result.retry_after == 2.0


async def test_5xx_and_other_errors_are_transport_errors(
    fake_lambda: FakeLambda, make: Factory
) -> None:
    result = await (await make(fake_lambda.url, "boom")).invoke(invocation({}))
    assert result.outcome is Outcome.TRANSPORT_ERROR
    assert result.status_code == 500
    assert "ServiceException" in result.detail

    result = await (await make(fake_lambda.url, "missing")).invoke(invocation({}))
    assert result.outcome is Outcome.TRANSPORT_ERROR
    assert result.status_code == 404
    assert "ResourceNotFoundException: Function not found" in result.detail


async def test_connection_refused(make: Factory) -> None:
    url = f"http://user:pw@127.0.0.1:{free_port()}"
    result = await (await make(url, "ok")).invoke(invocation({}))
    assert result.outcome is Outcome.TRANSPORT_ERROR
    assert "127.0.0.1" in result.detail
    assert "pw@" not in result.detail


async def test_no_answer_by_the_deadline_is_a_timeout(
    fake_lambda: FakeLambda, make: Factory
) -> None:
    invoker = await make(fake_lambda.url, "slow", timeout=0.3)
    call = invocation({}, timeout=0.3)
    result = await invoker.invoke(call)
    assert result.outcome is Outcome.TIMEOUT
    assert call.request_id in result.payload["errorMessage"]
    # The pooled session keeps working after an abandoned request.
    fake_lambda.release.set()
    other = await make(fake_lambda.url, "ok")
    assert (await other.invoke(invocation({}))).outcome is Outcome.SUCCESS


def test_retry_after_forms() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("0.5") == 0.5
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    now = 1_700_000_000.0
    assert parse_retry_after(formatdate(now + 30, usegmt=True), now=now) == 30.0
    assert parse_retry_after(formatdate(now - 30, usegmt=True), now=now) == 0.0


def test_url_must_be_http() -> None:
    with pytest.raises(ValueError, match="http"):
        HttpInvokerSettings.model_validate({"url": "ftp://x"})
