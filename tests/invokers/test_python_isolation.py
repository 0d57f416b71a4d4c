"""``invoker: python`` with ``isolation: process``: each function in worker processes of its
own (real processes), so module-level state does not leak between functions; timeouts and
crashes kill and replace the worker; logs reach the router's log with function and request."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import orjson
import pytest

from router.errors import ConfigError
from router.invokers.python import Isolation, PythonInvoker, PythonInvokerSettings
from router.models import FunctionConfig, Invocation, Outcome
from tests.invokers.helpers import HANDLERS, InitErrors, function, invocation

LOGS = "router.invokers.runtime.logs"

Factory = Callable[..., Coroutine[Any, Any, PythonInvoker]]


@pytest.fixture
async def isolated() -> AsyncIterator[Factory]:
    made: list[PythonInvoker] = []

    async def factory(
        handler: str, *, name: str = "fn", timeout: float = 5.0, **settings: Any
    ) -> PythonInvoker:
        config = PythonInvokerSettings(
            handler=handler, path=str(HANDLERS), isolation="process", **settings
        )
        invoker = PythonInvoker(function(name, "python", config, timeout), InitErrors().context())
        made.append(invoker)
        await invoker.start()
        return invoker

    yield factory
    for invoker in made:
        await invoker.aclose()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


async def ok(invoker: PythonInvoker, event: Any, *, timeout: float = 5.0) -> Any:
    result = await invoker.invoke(invocation(event, timeout=timeout))
    assert result.outcome is Outcome.SUCCESS, result
    return result.payload


@pytest.mark.parametrize("isolation", ["shared", "process"])
async def test_module_state_of_one_function_is_not_seen_by_another(isolation: Isolation) -> None:
    """The same module behind two functions: shared, they share one module object (the
    caveat docs/invokers.md describes); isolated, each has its own."""
    invokers = []
    for name in ("a", "b"):
        config = PythonInvokerSettings(
            handler="isolation_handlers:remember", path=str(HANDLERS), isolation=isolation
        )
        invokers.append(PythonInvoker(function(name, "python", config), InitErrors().context()))
    a, b = invokers
    try:
        await a.start()
        await b.start()
        first = await ok(a, {})
        second = await ok(b, {})
    finally:
        await a.aclose()
        await b.aclose()
    if isolation == "shared":
        assert second["seen"][-2:] == ["a", "b"]
        assert first["pid"] == second["pid"] == os.getpid()
    else:
        assert first["seen"] == ["a"]
        assert second["seen"] == ["b"]
        assert len({first["pid"], second["pid"], os.getpid()}) == 3


async def test_powertools_cold_start_and_logger_keys_stay_with_their_function(
    isolated: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGS)
    a = await isolated("isolation_handlers:tagged", name="a")
    b = await isolated("isolation_handlers:tagged", name="b")
    await ok(a, {"tenant": "t-a"})
    await ok(a, {})
    await ok(b, {})

    def lines(name: str) -> list[dict[str, Any]]:
        found = []
        for record in caplog.records:
            if record.name != LOGS:
                continue
            prefix, _, text = record.getMessage().partition(": ")
            if prefix.split(" ")[0] == name and text.startswith("{"):
                found.append(orjson.loads(text))
        return found

    a_lines, b_lines = lines("a"), lines("b")
    assert [line["cold_start"] for line in a_lines] == [True, False]
    assert [line.get("tenant") for line in a_lines] == ["t-a", "t-a"]
    assert all(line["function_name"] == "a" for line in a_lines)
    (b_line,) = b_lines
    assert b_line["cold_start"] is True
    assert "tenant" not in b_line
    assert b_line["function_name"] == "b"


async def test_a_timeout_kills_the_worker_and_a_fresh_one_takes_the_next(
    isolated: Factory,
) -> None:
    invoker = await isolated("isolation_handlers:sleep", timeout=0.5)
    before = await ok(invoker, {"seconds": 0})
    call = invocation({"seconds": 30}, timeout=0.5)
    result = await invoker.invoke(call)
    assert result.outcome is Outcome.TIMEOUT
    assert result.payload["errorType"] == "Sandbox.Timedout"
    assert f"RequestId: {call.request_id}" in result.payload["errorMessage"]
    assert "Task timed out after 0.50 seconds" in result.payload["errorMessage"]
    after = await ok(invoker, {"seconds": 0})
    assert after != before
    async with asyncio.timeout(10):
        while alive(before):
            await asyncio.sleep(0.05)


async def test_an_async_handler_overrunning_is_a_timeout_too(isolated: Factory) -> None:
    invoker = await isolated("isolation_handlers:async_sleep", timeout=0.3)
    before = await ok(invoker, {"seconds": 0})
    result = await invoker.invoke(invocation({"seconds": 30}, timeout=0.3))
    assert result.outcome is Outcome.TIMEOUT
    assert await ok(invoker, {"seconds": 0}) != before


@pytest.mark.parametrize(
    ("event", "status"), [({"kill": True}, "signal: killed"), ({"exit": 3}, "exit status 3")]
)
async def test_a_crash_is_a_function_error_and_the_next_invocation_works(
    isolated: Factory, event: dict[str, Any], status: str
) -> None:
    invoker = await isolated("isolation_handlers:crash")
    before = await ok(invoker, {})
    call = invocation(event)
    result = await invoker.invoke(call)
    assert result.outcome is Outcome.FUNCTION_ERROR
    assert result.payload == {
        "errorType": "Runtime.ExitError",
        "errorMessage": f"RequestId: {call.request_id} Error: Runtime exited with error: {status}",
    }
    # The router carries on, and a fresh worker takes the next invocation.
    after = await ok(invoker, {})
    assert after not in (before, os.getpid())
    assert not alive(before)


async def test_max_processes_workers_run_at_once_and_no_more(
    isolated: Factory, tmp_path: Path
) -> None:
    invoker = await isolated("isolation_handlers:hold", max_processes=2, timeout=30)
    calls = [
        asyncio.create_task(invoker.invoke(invocation({"dir": str(tmp_path)}, timeout=30)))
        for _ in range(3)
    ]
    async with asyncio.timeout(20):
        while len(list(tmp_path.glob("*.start"))) < 2:
            await asyncio.sleep(0.02)
    (tmp_path / "release").touch()
    results = await asyncio.gather(*calls)
    assert [result.outcome for result in results] == [Outcome.SUCCESS] * 3
    # Two ran at once, in two workers; the third waited for one of them.
    assert len({result.payload for result in results}) == 2


async def test_handler_logs_reach_the_router_log_with_function_and_request(
    isolated: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGS)
    invoker = await isolated("isolation_handlers:logs")
    call = invocation({})
    assert (await invoker.invoke(call)).payload == "logged"
    mine = [
        (record.levelno, record.getMessage())
        for record in caplog.records
        if record.name == LOGS and call.request_id in record.getMessage()
    ]
    prefix = f"fn {call.request_id}: "
    assert (logging.INFO, f"{prefix}printed by {call.request_id}") in mine
    assert (logging.WARNING, f"{prefix}isolation_handlers: careful:\nsecond line") in mine
    assert (
        logging.INFO,
        f"{prefix}router.invokers.context: {call.request_id} through context.log",
    ) in mine
    assert not any("not shown" in text for _, text in mine)


async def test_async_handlers_run_on_one_loop_with_the_lambda_context(isolated: Factory) -> None:
    invoker = await isolated("isolation_handlers:async_context", timeout=3.0)
    call = Invocation(
        function="fn",
        event={},
        request_id="r-1",
        deadline=time.time() + 3,
        trace_id="Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1",
    )
    first = (await invoker.invoke(call)).payload
    assert first["request_id"] == "r-1"
    assert first["function_name"] == "fn"
    assert 0 < first["remaining_ms"] <= 3000
    assert first["trace"] == "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1"
    second = await ok(invoker, {})
    assert second["loop"] == first["loop"]
    assert second["trace"] is None


async def test_workers_get_the_routers_environment_and_lambdas_variables(
    isolated: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORDERS_TABLE", "orders-dev")
    invoker = await isolated("environment_handlers:env_info", memory_size=512)
    out = await ok(invoker, {})
    env = out["env"]
    assert env["ORDERS_TABLE"] == "orders-dev"
    assert env["AWS_LAMBDA_FUNCTION_NAME"] == "fn"
    assert env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "512"
    assert env["AWS_LAMBDA_INITIALIZATION_TYPE"] == "on-demand"
    assert out["memory_limit_in_mb"] == "512"
    assert out["log_group_name"] == "/aws/lambda/fn"
    assert out["log_stream_name"] == env["AWS_LAMBDA_LOG_STREAM_NAME"]
    assert out["cwd"] == os.getcwd()


async def test_a_handler_that_does_not_import_fails_the_start_and_the_check() -> None:
    config = PythonInvokerSettings(
        handler="broken_module:handler", path=str(HANDLERS), isolation="process"
    )
    fn = function("fn", "python", config)
    (problem,) = PythonInvoker.check(fn)
    assert problem.path == ("handler",)
    assert "import-time failure" in problem.message
    invoker = PythonInvoker(fn, InitErrors().context())
    with pytest.raises(ConfigError, match=r"functions\.fn\.handler: cannot import module"):
        await invoker.start()
    await invoker.aclose()


def test_a_module_that_ends_the_process_at_import_is_a_problem_not_a_dead_router() -> None:
    config = PythonInvokerSettings(
        handler="exits_at_import:handler", path=str(HANDLERS), isolation="process"
    )
    (problem,) = PythonInvoker.check(function("fn", "python", config))
    assert problem.message == (
        "importing handler 'exits_at_import:handler' ended its worker process (exit status 2)"
    )


def test_the_check_imports_the_handler_in_a_process_of_its_own() -> None:
    config = PythonInvokerSettings(
        handler="check_probe:handler", path=str(HANDLERS), isolation="process"
    )
    assert PythonInvoker.check(function("fn", "python", config)) == []
    assert "check_probe" not in sys.modules


def test_the_check_imports_with_the_region_variables_a_worker_gets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As SAM examples do: a boto3 client made at import time needs AWS_REGION, which Lambda
    # (and a worker of router run) sets from the function's ARN.
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    (tmp_path / "region_at_import.py").write_text(
        "import os\n"
        "assert os.environ['AWS_REGION'] == os.environ['AWS_DEFAULT_REGION'] == 'eu-west-1'\n"
        "assert os.environ['AWS_LAMBDA_FUNCTION_NAME'] == 'orders'\n"
        "def handler(event, context):\n"
        "    return None\n"
    )
    config = PythonInvokerSettings(
        handler="region_at_import:handler", path=str(tmp_path), isolation="process"
    )
    arn = "arn:aws:lambda:eu-west-1:123456789012:function:orders"
    fn = FunctionConfig(name="orders", invoker="python", timeout=3.0, settings=config, arn=arn)
    assert PythonInvoker.check(fn) == []


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"max_processes": 2}, "max_processes needs isolation: process"),
        ({"isolation": "process", "max_threads": 2}, "max_threads is for isolation: shared"),
        ({"isolation": "process", "quick_wait_ms": 0}, "quick_wait_ms is for isolation: shared"),
        ({"isolation": "thread"}, "'shared' or 'process'"),
    ],
)
def test_settings_of_the_other_mode_are_refused(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PythonInvokerSettings(handler="a:b", **settings)


async def test_metrics_count_the_workers_invocations(isolated: Factory) -> None:
    invoker = await isolated("isolation_handlers:pid")
    await ok(invoker, {})
    families = {family.name: family for family in invoker.metrics()}
    samples = families["router_function_invocations_total"].samples
    assert ("router_function_invocations_total", {"function": "fn", "outcome": "success"}, 1) in [
        (name, dict(labels), value) for name, labels, value in samples
    ]
