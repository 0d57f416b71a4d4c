"""The ``python`` invoker: sync and async handlers, errors, timeouts, context, import errors.

Every test that invokes runs twice: in the router's process (``isolation: shared``) and in
worker processes (``isolation: process``): both modes keep the same contract."""

from __future__ import annotations

import concurrent.futures
import sys
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from router.errors import ConfigError
from router.invokers.python import (
    Isolation,
    PythonInvoker,
    PythonInvokerSettings,
    parse_handler,
)
from router.models import MAX_PAYLOAD_BYTES, Invocation, Outcome
from tests.invokers.helpers import EXAMPLES, HANDLERS, InitErrors, function, invocation

Factory = Callable[..., PythonInvoker]


@pytest.fixture(params=["shared", "process"])
def isolation(request: pytest.FixtureRequest) -> Isolation:
    mode: Isolation = request.param
    return mode


@pytest.fixture
async def make(isolation: Isolation) -> AsyncIterator[Factory]:
    made: list[PythonInvoker] = []

    def factory(handler: str, path: str | None = str(HANDLERS), **settings: Any) -> PythonInvoker:
        timeout = settings.pop("timeout", 3.0)
        config = PythonInvokerSettings(handler=handler, path=path, isolation=isolation, **settings)
        invoker = PythonInvoker(function("fn", "python", config, timeout), InitErrors().context())
        made.append(invoker)
        return invoker

    yield factory
    for invoker in made:
        await invoker.aclose()


async def started(make: Factory, handler: str, **settings: Any) -> PythonInvoker:
    invoker = make(handler, **settings)
    await invoker.start()
    return invoker


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("app:handler", ("app", "handler")),
        ("app.handler", ("app", "handler")),
        ("pkg.mod.handler", ("pkg.mod", "handler")),
        ("pkg.mod:App.handle", ("pkg.mod", "App.handle")),
        ("hello_world/app.lambda_handler", ("hello_world.app", "lambda_handler")),
        ("src/handlers/app:handler", ("src.handlers.app", "handler")),
    ],
)
def test_handler_forms(spec: str, expected: tuple[str, str]) -> None:
    assert parse_handler(spec) == expected


@pytest.mark.parametrize("spec", ["handler", "app:", ":handler", "a:b:c", ""])
def test_bad_handler_forms_are_rejected_by_settings(spec: str) -> None:
    with pytest.raises(ValueError, match="module:function"):
        PythonInvokerSettings(handler=spec)


def test_settings_forbid_unknown_keys() -> None:
    with pytest.raises(ValueError, match="extra"):
        PythonInvokerSettings.model_validate({"handler": "a:b", "environment": {}})


async def test_sync_handler_gets_event_and_context(make: Factory) -> None:
    invoker = await started(make, "invoker_handlers:context_info", memory_size=512)
    call = invocation({"k": "v"}, timeout=3)
    result = await invoker.invoke(call)
    assert result.outcome is Outcome.SUCCESS
    out = result.payload
    assert out["event"] == {"k": "v"}
    assert out["aws_request_id"] == call.request_id
    assert out["function_name"] == "fn"
    assert out["function_version"] == "$LATEST"
    assert out["invoked_function_arn"].endswith(":function:fn")
    assert out["memory_limit_in_mb"] == "512"
    assert out["log_group_name"] == "/aws/lambda/fn"
    assert "[$LATEST]" in out["log_stream_name"]
    assert 0 < out["remaining_ms"] <= 3000
    assert out["has_identity"] is True


async def test_client_context_and_identity_reach_the_handler(make: Factory) -> None:
    invoker = await started(make, "environment_handlers:env_info")
    call = Invocation(
        function="fn",
        event={},
        request_id="r",
        deadline=time.time() + 3,
        client_context='{"custom": {"tenant": "t1"}, "client": {"app_title": "shop"}, "env": {}}',
        cognito_identity_id="us-east-1:abc",
        cognito_identity_pool_id="us-east-1:pool",
    )
    out = (await invoker.invoke(call)).payload
    assert out["custom"] == {"tenant": "t1"}
    assert (out["cognito_identity_id"], out["cognito_identity_pool_id"]) == (
        "us-east-1:abc",
        "us-east-1:pool",
    )
    plain = (await invoker.invoke(invocation({}))).payload
    assert plain["custom"] is None
    assert plain["cognito_identity_id"] is None


async def test_aws_dotted_handler_form_and_example_module(make: Factory) -> None:
    invoker = await started(make, "hello.handler", path=str(EXAMPLES))
    result = await invoker.invoke(invocation({"name": "x"}))
    assert result.outcome is Outcome.SUCCESS
    assert result.payload["message"] == "hello"
    assert result.payload["event"] == {"name": "x"}


async def test_handler_written_as_a_path_as_sam_templates_do(make: Factory, tmp_path: Any) -> None:
    package = tmp_path / "hello_world_sam"
    package.mkdir()
    (package / "__init__.py").write_text("")
    source = "def lambda_handler(event, context):\n    return {'got': event}\n"
    (package / "app.py").write_text(source)
    invoker = await started(make, "hello_world_sam/app.lambda_handler", path=str(tmp_path))
    result = await invoker.invoke(invocation({"name": "x"}))
    assert result.outcome is Outcome.SUCCESS
    assert result.payload == {"got": {"name": "x"}}


async def test_async_handler(make: Factory) -> None:
    invoker = await started(make, "invoker_handlers:async_echo")
    call = invocation([1, 2])
    result = await invoker.invoke(call)
    assert result.outcome is Outcome.SUCCESS
    assert result.payload == {"async": True, "event": [1, 2], "request_id": call.request_id}


async def test_async_callable_object(make: Factory) -> None:
    invoker = await started(make, "invoker_handlers:callable_object")
    assert (await invoker.invoke(invocation({}))).payload == "object"


async def test_raising_handler_is_a_function_error_with_lambda_shape(make: Factory) -> None:
    invoker = await started(make, "invoker_handlers:fail")
    result = await invoker.invoke(invocation({"message": "bad input"}))
    assert result.outcome is Outcome.FUNCTION_ERROR
    assert result.function_error == "Unhandled"
    payload = result.payload
    assert payload["errorMessage"] == "bad input"
    assert payload["errorType"] == "ValueError"
    stack = payload["stackTrace"]
    # The handler's frames only, formatted like traceback.format_list (Lambda's runtime).
    assert stack[0].startswith('  File "') and "in fail" in stack[0]
    assert "in _inner" in stack[-1] and "raise ValueError(message)" in stack[-1]
    assert not any("router/invokers" in line for line in stack)
    assert result.detail == "ValueError: bad input"


async def test_async_handler_raising(make: Factory) -> None:
    invoker = await started(make, "invoker_handlers:async_fail")
    result = await invoker.invoke(invocation({}))
    assert result.outcome is Outcome.FUNCTION_ERROR
    assert result.payload["errorType"] == "KeyError"
    assert "in async_fail" in result.payload["stackTrace"][0]


async def test_handler_raising_its_own_timeout_error_is_a_function_error(make: Factory) -> None:
    invoker = await started(make, "invoker_handlers:raises_timeout")
    result = await invoker.invoke(invocation({}))
    assert result.outcome is Outcome.FUNCTION_ERROR
    assert result.payload["errorType"] == "TimeoutError"


async def test_sys_exit_is_a_runtime_exit_error_not_a_router_exit(make: Factory) -> None:
    invoker = await started(make, "invoker_handlers:exits")
    result = await invoker.invoke(invocation({}))
    assert result.outcome is Outcome.FUNCTION_ERROR
    assert result.payload["errorType"] == "Runtime.ExitError"
    assert "exit status 3" in result.payload["errorMessage"]


async def test_sync_handler_overrunning_is_a_timeout(make: Factory) -> None:
    invoker = await started(make, "invoker_handlers:block", timeout=0.3)
    # In-process, the abandoned thread is let go afterwards; a worker process is killed.
    module = sys.modules.get("invoker_handlers") if invoker.handler is not None else None
    if module is not None:
        module.RELEASE.clear()
    call = invocation({}, timeout=0.3)
    try:
        result = await invoker.invoke(call)
    finally:
        if module is not None:
            module.RELEASE.set()
    assert result.outcome is Outcome.TIMEOUT
    assert result.payload["errorType"] == "Sandbox.Timedout"
    assert call.request_id in result.payload["errorMessage"]
    assert "Task timed out after 0.30 seconds" in result.payload["errorMessage"]


async def test_async_handler_overrunning_is_a_timeout(make: Factory) -> None:
    invoker = await started(make, "invoker_handlers:async_block", timeout=0.2)
    result = await invoker.invoke(invocation({}, timeout=0.2))
    assert result.outcome is Outcome.TIMEOUT


async def test_past_deadline_is_a_timeout_without_calling(make: Factory) -> None:
    invoker = await started(make, "invoker_handlers:mutate")
    event: dict[str, Any] = {}
    result = await invoker.invoke(invocation(event, timeout=-1))
    assert result.outcome is Outcome.TIMEOUT
    assert event == {}


async def test_return_values_marshal_like_lambda(make: Factory) -> None:
    invoker = await started(make, "invoker_handlers:decimals")
    result = await invoker.invoke(invocation({}))
    assert result.outcome is Outcome.SUCCESS
    assert result.payload == {"price": 1.5, "count": 2, "pair": [1, 2], "3": "int key"}

    for handler, expected in [
        ("returns_none", None),
        ("returns_string", "plain"),
        ("returns_bytes", "not json"),
    ]:
        other = await started(make, f"invoker_handlers:{handler}")
        assert (await other.invoke(invocation({}))).payload == expected


async def test_unserialisable_return_is_a_marshal_error(make: Factory) -> None:
    invoker = await started(make, "invoker_handlers:not_serialisable")
    result = await invoker.invoke(invocation({}))
    assert result.outcome is Outcome.FUNCTION_ERROR
    assert result.payload["errorType"] == "Runtime.MarshalError"
    assert result.payload["errorMessage"].startswith("Unable to marshal response:")
    assert "datetime" in result.payload["errorMessage"]


async def test_response_over_six_mb_is_a_function_error(make: Factory) -> None:
    invoker = await started(make, "invoker_handlers:big_response")
    result = await invoker.invoke(invocation({"size": MAX_PAYLOAD_BYTES}))
    assert result.outcome is Outcome.FUNCTION_ERROR
    assert result.payload["errorType"] == "Function.ResponseSizeTooLarge"


async def test_payload_is_not_an_alias_of_the_handlers_objects(make: Factory) -> None:
    invoker = await started(make, "invoker_handlers:mutate")
    event: dict[str, Any] = {"a": 1}
    result = await invoker.invoke(invocation(event))
    assert result.payload == {"a": 1, "mutated": True}
    assert result.payload is not event


async def test_import_error_names_handler_and_reason(make: Factory) -> None:
    invoker = make("broken_module:handler")
    with pytest.raises(ConfigError) as info:
        await invoker.start()
    text = str(info.value)
    assert "functions.fn.handler" in text
    assert "broken_module:handler" in text
    assert "import-time failure" in text


async def test_missing_module_and_missing_function(make: Factory) -> None:
    with pytest.raises(ConfigError, match="no_such_module_xyz"):
        await make("no_such_module_xyz:handler").start()
    with pytest.raises(ConfigError, match="has no attribute 'nope'"):
        await make("invoker_handlers:nope").start()
    with pytest.raises(ConfigError, match="is not callable"):
        await make("invoker_handlers:RELEASE.is_set.__name__").start()


async def test_path_must_be_a_directory(make: Factory, tmp_path: Any) -> None:
    with pytest.raises(ConfigError, match=r"functions\.fn\.path: .* is not a directory"):
        await make("x:y", path=str(tmp_path / "missing")).start()


async def test_aclose_is_idempotent(make: Factory) -> None:
    invoker = await started(make, "invoker_handlers:returns_none")
    await invoker.aclose()
    await invoker.aclose()


async def shared(handler: str, **settings: Any) -> PythonInvoker:
    """A started ``isolation: shared`` invoker of ``handler`` (the caller closes it)."""
    config = PythonInvokerSettings(handler=handler, path=str(HANDLERS), **settings)
    invoker = PythonInvoker(function("fn", "python", config, 3.0), InitErrors().context())
    await invoker.start()
    return invoker


class WaitCalls:
    """Records the loop's blocking waits for a sync handler's result (then waits)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.timeouts: list[float] = []
        real = concurrent.futures.wait

        def wait(futures: Any, timeout: float | None = None) -> Any:
            assert timeout is not None
            self.timeouts.append(timeout)
            return real(futures, timeout=timeout)

        monkeypatch.setattr(concurrent.futures, "wait", wait)


async def test_a_quick_sync_handler_is_waited_for_a_slow_one_is_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    waits = WaitCalls(monkeypatch)
    invoker = await shared("invoker_handlers:sleep")  # quick_wait_ms: 1, the default
    try:
        # Nothing waiting behind it: the result comes back through the loop, not waited for.
        alone = await invoker.invoke(invocation({"seconds": 0}, timeout=3))
        assert alone.payload == {"slept": 0}
        assert waits.timeouts == []

        def next_batch_waiting(seconds: float) -> Invocation:
            return invocation({"seconds": seconds}, timeout=3, backlog=True)

        quick = await invoker.invoke(next_batch_waiting(0))
        assert quick.outcome is Outcome.SUCCESS
        assert quick.payload == {"slept": 0}
        assert waits.timeouts == [0.001]
        # A handler slower than the wait: the loop waits once, then gets the result as before.
        slow = await invoker.invoke(next_batch_waiting(0.05))
        assert slow.payload == {"slept": 0.05}
        assert len(waits.timeouts) == 2
        # Lately slow: the loop no longer waits for it, however quick the next call.
        again = await invoker.invoke(next_batch_waiting(0))
        assert again.outcome is Outcome.SUCCESS
        assert len(waits.timeouts) == 2
        # Quick again for a while, it is waited for again.
        for _ in range(40):
            await invoker.invoke(next_batch_waiting(0))
        assert len(waits.timeouts) > 2
    finally:
        await invoker.aclose()


async def test_quick_wait_off_and_errors_of_a_waited_handler(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    waits = WaitCalls(monkeypatch)
    for wait_ms in (0, 1):
        invoker = await shared("invoker_handlers:fail", quick_wait_ms=wait_ms)
        try:
            result = await invoker.invoke(invocation({"message": "boom"}, timeout=3, backlog=True))
        finally:
            await invoker.aclose()
        assert result.outcome is Outcome.FUNCTION_ERROR
        assert result.payload["errorType"] == "ValueError"
    assert waits.timeouts == [0.001]  # only the second invoker waited
