"""``router run --event-loop uvloop``: managed environments and the hosted Runtime API work
the same on uvloop's loop (its transports are not ``asyncio.Transport`` subclasses)."""

from __future__ import annotations

import asyncio
import sys

import pytest

from router.cli import event_loop, main, run_loop
from router.invokers.runtime_api import (
    RuntimeApiInvoker,
    RuntimeApiInvokerSettings,
    RuntimeSettings,
)
from router.models import Outcome
from tests.invokers.helpers import HANDLERS, InitErrors, function, invocation

uvloop = pytest.importorskip("uvloop")


async def _managed_round(handler: str) -> list[str]:
    settings = RuntimeApiInvokerSettings(
        reserved_concurrency=1,
        provisioned_concurrency=1,
        runtime=RuntimeSettings(
            command=[sys.executable, "-m", "awslambdaric", f"environment_handlers.{handler}"],
            cwd=str(HANDLERS),
        ),
    )
    invoker = RuntimeApiInvoker(
        function("fn", "runtime-api", settings, 1.0), InitErrors().context()
    )
    await invoker.start()
    try:
        async with asyncio.timeout(30):  # a runtime that cannot connect never gets ready
            await invoker.wait_idle(1)
        outcomes = []
        for _ in range(3):
            result = await invoker.invoke(invocation({"name": "uvloop"}))
            outcomes.append(result.outcome.value)
            if result.outcome is not Outcome.SUCCESS:
                outcomes.append(result.payload["errorType"])
        return outcomes
    finally:
        await invoker.aclose()


def test_managed_environment_answers_on_uvloop() -> None:
    outcomes = run_loop("uvloop", _managed_round("say_hello"))
    assert outcomes == [Outcome.SUCCESS.value] * 3


def test_a_crash_on_uvloop_is_reported_and_the_next_runs_fresh() -> None:
    outcomes = run_loop("uvloop", _managed_round("exit_now"))
    # Each invocation gets a fresh environment (the crashed one is replaced).
    assert outcomes == [Outcome.FUNCTION_ERROR.value, "Runtime.ExitError"] * 3


def test_event_loop_flag_then_environment_then_asyncio(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ROUTER_EVENT_LOOP", raising=False)
    assert event_loop(None) == "asyncio"
    monkeypatch.setenv("ROUTER_EVENT_LOOP", "UVLoop")
    assert event_loop(None) == "uvloop"
    assert event_loop("asyncio") == "asyncio"


def test_unknown_event_loop_in_the_environment_is_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ROUTER_EVENT_LOOP", "trio")
    assert main(["run", "--config", "/nonexistent"]) == 2
    err = capsys.readouterr().err
    assert "ROUTER_EVENT_LOOP='trio' is not an event loop: set it to asyncio or uvloop" in err
