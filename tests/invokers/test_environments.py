"""Managed execution environments: the router starts real ``awslambdaric`` runtimes, scales
them up to the reserved concurrency, keeps provisioned ones warm, stops idle ones, and kills
and replaces the ones that time out or crash."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from router.errors import ConfigError
from router.invokers.runtime_api import (
    RuntimeApiInvoker,
    RuntimeApiInvokerSettings,
    RuntimeSettings,
)
from router.models import Invocation, Outcome
from tests.invokers.helpers import HANDLERS, InitErrors, function, invocation

READY = 30.0
LOGS = "router.invokers.runtime.logs"

Factory = Callable[..., Coroutine[Any, Any, RuntimeApiInvoker]]


@pytest.fixture
def init_errors() -> InitErrors:
    return InitErrors()


@pytest.fixture
async def managed(init_errors: InitErrors) -> AsyncIterator[Factory]:
    """Build and start a managed ``runtime-api`` invoker for a handler in tests/invokers/
    handlers; every invoker is closed (its environments stopped) after the test."""
    made: list[RuntimeApiInvoker] = []

    async def factory(
        handler: str,
        *,
        timeout: float = 5.0,
        runtime: dict[str, Any] | None = None,
        **settings: Any,
    ) -> RuntimeApiInvoker:
        block = {
            "command": [sys.executable, "-m", "awslambdaric", handler],
            "cwd": str(HANDLERS),
            **(runtime or {}),
        }
        config = RuntimeApiInvokerSettings(runtime=RuntimeSettings(**block), **settings)
        invoker = RuntimeApiInvoker(
            function("fn", "runtime-api", config, timeout), init_errors.context()
        )
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
    return True


async def gone(pid: int) -> None:
    """Wait until ``pid`` has exited (it is reaped by its parent, the router, or init)."""
    async with asyncio.timeout(READY):
        while alive(pid) and not _zombie(pid):
            await asyncio.sleep(0.01)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return False


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGS]


def report_of(caplog: pytest.LogCaptureFixture, request_id: str) -> str:
    found = [
        line for line in lines(caplog) if line.startswith(f"fn: REPORT RequestId: {request_id}")
    ]
    assert len(found) == 1, lines(caplog)
    return found[0]


def metric(invoker: RuntimeApiInvoker, name: str, **labels: str) -> float:
    for family in invoker.metrics():
        for sample, sample_labels, value in family.samples:
            if sample == name and all(sample_labels.get(k) == v for k, v in labels.items()):
                return value
    raise AssertionError(f"no sample {name} {labels}")


def pids(invoker: RuntimeApiInvoker) -> list[int]:
    assert invoker.pool is not None
    return [env.process.pid for env in invoker.pool.environments if env.process is not None]


# -- timeouts and crashes ----------------------------------------------------------------------


async def test_timed_out_handler_is_killed_and_the_next_invocation_runs_fresh(
    managed: Factory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, LOGS)
    invoker = await managed("environment_handlers.spawn_and_sleep", timeout=1.0)
    marker = tmp_path / "pids"
    call = invocation({"marker": str(marker)})
    result = await invoker.invoke(call)
    assert result.outcome is Outcome.TIMEOUT
    assert result.payload == {
        "errorType": "Sandbox.Timedout",
        "errorMessage": f"RequestId: {call.request_id} Error: Task timed out after 1.00 seconds",
    }
    runtime_pid, child_pid = (int(p) for p in marker.read_text().split())
    # The whole process group goes: the runtime and the child its handler started.
    await gone(runtime_pid)
    await gone(child_pid)
    assert "Status: timeout" in report_of(caplog, call.request_id)
    assert f"fn {call.request_id}: Task timed out after 1.00 seconds" in lines(caplog)

    following = await invoker.invoke(invocation({"marker": str(tmp_path / "again")}, timeout=1))
    assert following.outcome is Outcome.TIMEOUT  # it ran: a fresh environment took it
    fresh_pid = int((tmp_path / "again").read_text().split()[0])
    assert fresh_pid != runtime_pid
    assert metric(invoker, "router_function_environments_stopped_total", reason="timeout") == 2


async def test_a_crash_fails_the_invocation_and_the_next_runs_fresh(
    managed: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, LOGS)
    invoker = await managed("environment_handlers.exit_now")
    call = invocation({})
    result = await invoker.invoke(call)
    assert result.outcome is Outcome.FUNCTION_ERROR
    assert result.payload == {
        "errorType": "Runtime.ExitError",
        "errorMessage": (
            f"RequestId: {call.request_id} Error: Runtime exited with error: exit status 3"
        ),
    }
    assert report_of(caplog, call.request_id).endswith(
        "Status: error\tError Type: Runtime.ExitError"
    )
    assert metric(invoker, "router_function_environments_stopped_total", reason="crash") == 1
    again = await invoker.invoke(invocation({}))
    assert again.payload["errorType"] == "Runtime.ExitError"  # a new environment ran it
    assert metric(invoker, "router_function_cold_starts_total") == 2


# -- concurrency -------------------------------------------------------------------------------


async def test_reserved_concurrency_bounds_the_environments_and_throttles_beyond(
    managed: Factory, tmp_path: Path
) -> None:
    invoker = await managed("environment_handlers.overlap", reserved_concurrency=2, timeout=25)
    first = asyncio.create_task(
        invoker.invoke(invocation({"dir": str(tmp_path), "me": "a", "other": "b"}))
    )
    second = asyncio.create_task(
        invoker.invoke(invocation({"dir": str(tmp_path), "me": "b", "other": "a"}))
    )
    await asyncio.sleep(0)
    third = await invoker.invoke(invocation({"dir": str(tmp_path), "me": "c", "other": "c"}))
    assert third.outcome is Outcome.THROTTLED
    assert "reserved_concurrency 2" in third.detail
    a, b = await asyncio.gather(first, second)
    assert (a.payload["saw_other"], b.payload["saw_other"]) == (True, True)
    assert a.payload["pid"] != b.payload["pid"]
    # Warm environments are reused: no third one starts.
    again = await invoker.invoke(invocation({"dir": str(tmp_path), "me": "c", "other": "c"}))
    assert again.payload["pid"] in (a.payload["pid"], b.payload["pid"])
    assert metric(invoker, "router_function_throttles_total") == 1
    assert metric(invoker, "router_function_cold_starts_total") == 2


async def test_reserved_concurrency_zero_throttles_everything(managed: Factory) -> None:
    invoker = await managed("environment_handlers.env_info", reserved_concurrency=0)
    result = await invoker.invoke(invocation({}))
    assert result.outcome is Outcome.THROTTLED
    assert invoker.pool is not None and not invoker.pool.environments


async def test_provisioned_environment_answers_the_first_invocation_warm(
    managed: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, LOGS)
    invoker = await managed(
        "environment_handlers.env_info", provisioned_concurrency=1, reserved_concurrency=2
    )
    # Started and initialised before any traffic.
    assert any(line.startswith("fn: INIT_REPORT Init Duration: ") for line in lines(caplog))
    [started] = pids(invoker)
    call = invocation({})
    result = await invoker.invoke(call)
    assert result.payload["pid"] == started
    assert result.payload["env"]["AWS_LAMBDA_INITIALIZATION_TYPE"] == "provisioned-concurrency"
    assert "Init Duration" not in report_of(caplog, call.request_id)
    assert metric(invoker, "router_function_cold_starts_total") == 0


async def test_on_demand_environment_reports_its_cold_start(
    managed: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, LOGS)
    invoker = await managed("environment_handlers.env_info")
    assert pids(invoker) == []
    cold, warm = invocation({}), invocation({})
    first = await invoker.invoke(cold)
    second = await invoker.invoke(warm)
    assert first.payload["env"]["AWS_LAMBDA_INITIALIZATION_TYPE"] == "on-demand"
    assert first.payload["pid"] == second.payload["pid"]
    assert re.search(r"\tInit Duration: \d+\.\d\d ms$", report_of(caplog, cold.request_id))
    assert "Init Duration" not in report_of(caplog, warm.request_id)
    assert metric(invoker, "router_function_cold_starts_total") == 1
    assert metric(invoker, "router_function_init_duration_seconds_count") == 1
    assert metric(invoker, "router_function_duration_seconds_count") == 2
    assert metric(invoker, "router_function_max_memory_used_megabytes_count") == 2


async def test_idle_environments_are_stopped_but_provisioned_ones_stay(
    managed: Factory, tmp_path: Path
) -> None:
    invoker = await managed(
        "environment_handlers.overlap",
        provisioned_concurrency=1,
        reserved_concurrency=2,
        timeout=25,
        runtime={"idle_timeout": 0.5},
    )
    [provisioned] = pids(invoker)
    a, b = await asyncio.gather(
        invoker.invoke(invocation({"dir": str(tmp_path), "me": "a", "other": "b"})),
        invoker.invoke(invocation({"dir": str(tmp_path), "me": "b", "other": "a"})),
    )
    on_demand = ({a.payload["pid"], b.payload["pid"]} - {provisioned}).pop()
    await gone(on_demand)
    assert pids(invoker) == [provisioned]
    assert alive(provisioned)
    assert metric(invoker, "router_function_environments_stopped_total", reason="idle") == 1
    assert metric(invoker, "router_function_environments", state="idle") == 1


# -- init failures -----------------------------------------------------------------------------


async def test_an_error_in_init_is_reported_and_fails_the_invocation(
    managed: Factory, init_errors: InitErrors, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, LOGS)
    invoker = await managed("broken_module.handler")
    result = await invoker.invoke(invocation({}))
    assert result.outcome is Outcome.FUNCTION_ERROR
    assert result.payload["errorType"] == "RuntimeError"
    assert result.payload["errorMessage"] == "import-time failure"
    assert len(init_errors) == 1
    assert "import-time failure" in init_errors[0]
    assert any(
        re.fullmatch(r"fn: INIT_REPORT Init Duration: [\d.]+ ms\tPhase: init\tStatus: error\t"
                     r"Error Type: Runtime.Unknown", line)
        for line in lines(caplog)
    )  # fmt: skip
    assert metric(invoker, "router_function_init_errors_total") == 1
    assert invoker.pool is not None and not invoker.pool.environments


async def test_a_runtime_that_exits_in_init_fails_the_invocation(
    managed: Factory, init_errors: InitErrors
) -> None:
    invoker = await managed("exits_at_import.handler")
    call = invocation({})
    result = await invoker.invoke(call)
    assert result.payload == {
        "errorType": "Runtime.ExitError",
        "errorMessage": (
            f"RequestId: {call.request_id} Error: Runtime exited with error: exit status 2"
        ),
    }
    assert init_errors and "Runtime.ExitError" in init_errors[0]


async def test_an_init_that_takes_too_long_is_killed(
    managed: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, LOGS)
    invoker = await managed("slow_import.handler", runtime={"init_timeout": 0.5})
    result = await invoker.invoke(invocation({}))
    assert result.outcome is Outcome.TIMEOUT
    assert "did not initialise" in result.detail
    assert any("Phase: init\tStatus: timeout" in line for line in lines(caplog))


async def test_a_provisioned_environment_that_fails_init_does_not_fail_the_start(
    managed: Factory, init_errors: InitErrors
) -> None:
    invoker = await managed("broken_module.handler", provisioned_concurrency=1)
    assert init_errors and "import-time failure" in init_errors[0]
    # Traffic then gets on-demand environments (which fail the same way).
    result = await invoker.invoke(invocation({}))
    assert result.payload["errorMessage"] == "import-time failure"


# -- what the function sees and logs -----------------------------------------------------------


async def test_the_environment_has_lambdas_variables(
    managed: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ROUTER_ONLY_SECRET", "must not leak")
    invoker = await managed(
        "environment_handlers.env_info",
        memory_size=512,
        runtime={"env": {"STAGE": "test"}},
    )
    call = Invocation(
        function="fn",
        event={},
        request_id="req-env",
        deadline=0,
        client_context='{"custom": {"tenant": "t1"}, "client": {}, "env": {}}',
        cognito_identity_id="us-east-1:abc",
        cognito_identity_pool_id="us-east-1:pool",
    )
    out = (await invoker.invoke(call)).payload
    env = out["env"]
    assert env["AWS_LAMBDA_FUNCTION_NAME"] == "fn"
    assert env["AWS_LAMBDA_FUNCTION_VERSION"] == "$LATEST"
    assert env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "512"
    assert env["AWS_LAMBDA_LOG_GROUP_NAME"] == "/aws/lambda/fn"
    assert re.fullmatch(
        r"\d{4}/\d\d/\d\d/\[\$LATEST\][0-9a-f]{32}", env["AWS_LAMBDA_LOG_STREAM_NAME"]
    )
    assert env["AWS_REGION"] == env["AWS_DEFAULT_REGION"]
    assert env["_HANDLER"] == "environment_handlers.env_info"
    assert env["LAMBDA_TASK_ROOT"] == str(HANDLERS) == out["cwd"]
    assert env["TZ"] == ":UTC"
    assert env["STAGE"] == "test"
    assert re.fullmatch(r"127\.0\.0\.1:\d+", env["AWS_LAMBDA_RUNTIME_API"])
    assert "ROUTER_ONLY_SECRET" not in env
    assert out["function_name"] == "fn"
    assert out["memory_limit_in_mb"] == "512"
    assert out["log_stream_name"] == env["AWS_LAMBDA_LOG_STREAM_NAME"]
    assert 0 < out["remaining_ms"] <= 5000
    assert out["custom"] == {"tenant": "t1"}
    assert (out["cognito_identity_id"], out["cognito_identity_pool_id"]) == (
        "us-east-1:abc",
        "us-east-1:pool",
    )


async def test_output_and_platform_lines_go_to_the_log(
    managed: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, LOGS)
    invoker = await managed("environment_handlers.say_hello")
    call = invocation({})
    assert (await invoker.invoke(call)).payload == "ok"
    rid = call.request_id
    logged = lines(caplog)
    start = logged.index(f"fn: START RequestId: {rid} Version: $LATEST")
    said = logged.index(f"fn {rid}: hello from {rid}")
    end = logged.index(f"fn: END RequestId: {rid}")
    assert start < said < end
    assert re.fullmatch(
        rf"fn: REPORT RequestId: {rid}\tDuration: \d+\.\d\d ms\tBilled Duration: \d+ ms\t"
        r"Memory Size: 128 MB\tMax Memory Used: \d+ MB\tInit Duration: \d+\.\d\d ms",
        report_of(caplog, rid),
    )
    used = int(re.search(r"Max Memory Used: (\d+) MB", report_of(caplog, rid)).group(1))  # type: ignore[union-attr]
    assert used > 1  # a Python interpreter is resident: read from /proc, not made up


async def test_system_log_level_warn_drops_the_platform_lines_only(
    managed: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, LOGS)
    invoker = await managed("environment_handlers.say_hello", system_log_level="WARN")
    call = invocation({})
    assert (await invoker.invoke(call)).payload == "ok"
    rid = call.request_id
    assert lines(caplog) == [f"fn {rid}: hello from {rid}"]
    assert metric(invoker, "router_function_duration_seconds_count") == 1


# -- bad configuration -------------------------------------------------------------------------


async def test_a_command_that_does_not_exist_is_a_config_error(managed: Factory) -> None:
    with pytest.raises(ConfigError, match=r"functions\.fn\.runtime\.command: 'no-such-runtime'"):
        await managed("x.handler", runtime={"command": ["no-such-runtime", "x.handler"]})


async def test_a_missing_working_directory_is_a_config_error(
    managed: Factory, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match=r"functions\.fn\.runtime\.cwd: .* is not a directory"):
        await managed("x.handler", runtime={"cwd": str(tmp_path / "nope")})


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"listen": "127.0.0.1:0", "runtime": {"command": ["x"]}}, "remove listen"),
        ({"reserved_concurrency": 2}, "need runtime.command"),
        ({"provisioned_concurrency": 1}, "need runtime.command"),
        ({"system_log_level": "WARN"}, "need runtime.command"),
        (
            {
                "reserved_concurrency": 1,
                "provisioned_concurrency": 2,
                "runtime": {"command": ["x"]},
            },
            r"provisioned_concurrency \(2\) cannot exceed reserved_concurrency \(1\)",
        ),
        ({"runtime": {"command": ["x"], "env": {"AWS_REGION": "x"}}}, "AWS_REGION is reserved"),
        ({"runtime": {"command": ["x"], "env": {"_HANDLER": "x"}}}, "set runtime.handler"),
        ({"runtime": {"command": []}}, "at least 1 item"),
        ({"runtime": {"command": ["x"], "idle": 3}}, "Extra inputs are not permitted"),
    ],
)
def test_bad_settings(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RuntimeApiInvokerSettings(**settings)


def test_validate_reports_a_missing_command_and_working_directory(tmp_path: Path) -> None:
    def problems(runtime: dict[str, Any]) -> list[tuple[tuple[str | int, ...], str]]:
        settings = RuntimeApiInvokerSettings(runtime=RuntimeSettings(**runtime))
        found = RuntimeApiInvoker.check(function("fn", "runtime-api", settings))
        return [(p.path, p.message) for p in found]

    [(path, message)] = problems({"command": ["no-such-runtime"]})
    assert path == ("runtime", "command")
    assert "'no-such-runtime' is not found on the environment's PATH" in message
    [(path, message)] = problems({"command": ["python"], "cwd": str(tmp_path / "gone")})
    assert path == ("runtime", "cwd")
    assert problems({"command": ["python", "-m", "awslambdaric", "app.handler"]}) == []
    assert problems({"command": ["./bootstrap"], "cwd": str(tmp_path)})[0][0] == (
        "runtime",
        "command",
    )


def test_environment_variables_in_yaml_credentials_are_references(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from router.config import load_config_text
    from router.errors import ConfigErrors

    def env_of(block: str) -> dict[str, str]:
        config = load_config_text(
            "functions:\n  fn:\n    invoker: runtime-api\n    runtime:\n"
            f"      command: [python]\n      env: {block}\n",
            "f.yaml",
        )
        settings = config.functions["fn"].settings
        assert isinstance(settings, RuntimeApiInvokerSettings) and settings.runtime is not None
        return {k: v.reveal() for k, v in settings.runtime.env.items()}

    monkeypatch.setenv("SHOP_API_KEY", "k-123")
    assert env_of('{STAGE: prod, RETRIES: 3, DEBUG: true, API_KEY: "${SHOP_API_KEY}"}') == {
        "STAGE": "prod",
        "RETRIES": "3",
        "DEBUG": "true",
        "API_KEY": "k-123",
    }
    with pytest.raises(ConfigErrors, match=r"runtime\.env\.DB_PASSWORD: a secret must not be"):
        env_of("{DB_PASSWORD: hunter2}")
