"""The Node.js runtime interface client (``aws-lambda-ric``) against the hosted Runtime API:
in managed environments, and started outside the router."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from router.invokers.runtime_api import (
    RuntimeApiInvoker,
    RuntimeApiInvokerSettings,
    RuntimeSettings,
)
from router.models import Invocation, Outcome
from tests.invokers.helpers import HANDLERS, InitErrors, function, invocation

NODE_HANDLERS = HANDLERS / "node"
READY = 30.0

Factory = Callable[..., Coroutine[Any, Any, RuntimeApiInvoker]]


@pytest.fixture
def init_errors() -> InitErrors:
    return InitErrors()


@pytest.fixture
async def node(node_ric: Path, init_errors: InitErrors) -> AsyncIterator[Factory]:
    made: list[RuntimeApiInvoker] = []

    async def factory(
        handler: str = "index.handler", *, timeout: float = 5.0, **settings: Any
    ) -> RuntimeApiInvoker:
        runtime = RuntimeSettings(command=[str(node_ric), handler], cwd=str(NODE_HANDLERS))
        config = RuntimeApiInvokerSettings(runtime=runtime, **settings)
        invoker = RuntimeApiInvoker(
            function("fn", "runtime-api", config, timeout), init_errors.context()
        )
        made.append(invoker)
        await invoker.start()
        return invoker

    yield factory
    for invoker in made:
        await invoker.aclose()


async def test_node_handler_gets_its_event_and_context(
    node: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "router.invokers.runtime.logs")
    invoker = await node(provisioned_concurrency=1, memory_size=256)
    call = Invocation(
        function="fn",
        event={"order": 7},
        request_id="node-req-1",
        deadline=0,
        client_context='{"custom": {"tenant": "t1"}, "env": {"locale": "en"}, "client": {}}',
        cognito_identity_id="us-east-1:abc",
        cognito_identity_pool_id="us-east-1:pool",
    )
    result = await invoker.invoke(call)
    assert result.outcome is Outcome.SUCCESS, result
    out = result.payload
    assert out["event"] == {"order": 7}
    assert out["awsRequestId"] == "node-req-1"
    assert out["functionName"] == "fn"
    assert str(out["memoryLimitInMB"]) == "256"
    assert 0 < out["remaining"] <= 5000
    assert out["clientContext"]["custom"] == {"tenant": "t1"}
    assert out["identity"] == {
        "cognitoIdentityId": "us-east-1:abc",
        "cognitoIdentityPoolId": "us-east-1:pool",
    }
    assert out["initializationType"] == "provisioned-concurrency"
    logged = [r.getMessage() for r in caplog.records]
    assert any(
        m.startswith("fn node-req-1: ") and "node says hello to node-req-1" in m for m in logged
    )


async def test_node_handler_error_is_a_function_error(node: Factory) -> None:
    invoker = await node()
    result = await invoker.invoke(invocation({"fail": "no such order"}))
    assert result.outcome is Outcome.FUNCTION_ERROR
    assert result.payload["errorType"] == "TypeError"
    assert result.payload["errorMessage"] == "no such order"


async def test_node_timeout_kills_the_environment_and_the_next_runs_fresh(node: Factory) -> None:
    invoker = await node(timeout=1.0)
    warm = await invoker.invoke(invocation({}))
    timed_out = await invoker.invoke(invocation({"sleep": 30}))
    assert timed_out.outcome is Outcome.TIMEOUT
    following = await invoker.invoke(invocation({}))
    assert following.outcome is Outcome.SUCCESS
    assert following.payload["pid"] != warm.payload["pid"]


async def test_node_init_error_is_reported(node: Factory, init_errors: InitErrors) -> None:
    invoker = await node("broken.handler")
    result = await invoker.invoke(invocation({}))
    assert result.outcome is Outcome.FUNCTION_ERROR
    assert "node import-time failure" in result.payload["errorMessage"]
    assert init_errors and "node import-time failure" in init_errors[0]
    assert invoker.pool is not None and not invoker.pool.environments


async def test_node_client_started_outside_keeps_running_after_a_rejected_answer(
    node_ric: Path, tmp_path: Path
) -> None:
    """The Node.js client logs a non-2xx answer and carries on (it does not exit, unlike
    awslambdaric): its late answer is refused and it takes the next invocation."""
    settings = RuntimeApiInvokerSettings(listen="127.0.0.1:0")
    invoker = RuntimeApiInvoker(
        function("fn", "runtime-api", settings, timeout=1.0), InitErrors().context()
    )
    await invoker.start()
    env = {
        "PATH": os.environ.get("PATH", os.defpath),
        "AWS_LAMBDA_RUNTIME_API": invoker.address,
        "_HANDLER": "index.handler",
        "LAMBDA_TASK_ROOT": str(NODE_HANDLERS),
        "AWS_LAMBDA_FUNCTION_NAME": "fn",
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "128",
        "AWS_LAMBDA_LOG_GROUP_NAME": "/aws/lambda/fn",
        "AWS_LAMBDA_LOG_STREAM_NAME": "2024/01/01/[$LATEST]0123456789abcdef",
    }
    with open(tmp_path / "node.log", "wb") as out:
        proc = subprocess.Popen(
            [str(node_ric), "index.handler"],
            cwd=NODE_HANDLERS,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        async with asyncio.timeout(READY):
            await invoker.wait_idle(1)
        late = await invoker.invoke(invocation({"sleep": 2}))
        assert late.outcome is Outcome.TIMEOUT
        async with asyncio.timeout(READY):
            while not invoker.rejected_responses:
                await asyncio.sleep(0.02)
        following = await invoker.invoke(invocation({}))
        assert following.outcome is Outcome.SUCCESS
        assert following.payload["pid"] == proc.pid
        assert proc.poll() is None
        assert "Http response code: 400" in (tmp_path / "node.log").read_text()
    finally:
        proc.kill()
        proc.wait()
        await invoker.aclose()
