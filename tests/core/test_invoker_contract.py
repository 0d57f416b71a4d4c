"""The Invoker base class hands every invoker its checked settings."""

from __future__ import annotations

from typing import cast

import pytest

from router.abc import InvokerContext, Store
from router.invokers.python import Isolation, PythonInvoker, PythonInvokerSettings
from router.models import FunctionConfig, PluginSettings


def _context() -> InvokerContext:
    return InvokerContext(store=cast(Store, None), report_init_error=lambda _: None)


ISOLATION = pytest.mark.parametrize("isolation", ["shared", "process"])


@ISOLATION
def test_settings_of_the_invokers_own_type_are_kept(isolation: Isolation) -> None:
    settings = PythonInvokerSettings(handler="router.examples.hello:handler", isolation=isolation)
    function = FunctionConfig(name="f", invoker="python", settings=settings)
    assert PythonInvoker(function, _context()).settings is settings


def test_settings_of_another_type_are_refused() -> None:
    function = FunctionConfig(name="f", invoker="python", settings=PluginSettings())
    with pytest.raises(TypeError, match="PythonInvoker needs PythonInvokerSettings settings"):
        PythonInvoker(function, _context())


@ISOLATION
def test_check_finds_what_start_would_fail_on(isolation: Isolation) -> None:
    from router.abc import SettingsProblem
    from router.invokers.http import HttpInvoker, HttpInvokerSettings

    fine = PythonInvokerSettings(handler="router.examples.hello:handler", isolation=isolation)
    assert PythonInvoker.check(FunctionConfig(name="f", invoker="python", settings=fine)) == []
    missing = PythonInvokerSettings(handler="router.examples.hello:nope", isolation=isolation)
    assert PythonInvoker.check(FunctionConfig(name="f", invoker="python", settings=missing)) == [
        SettingsProblem(
            ("handler",),
            "handler 'router.examples.hello:nope': 'router.examples.hello' has no attribute 'nope'",
        )
    ]
    both = HttpInvokerSettings.model_validate(
        {"url": "https://u:p@example.com", "headers": {"Authorization": "Bearer x"}}
    )
    (problem,) = HttpInvoker.check(FunctionConfig(name="f", invoker="http", settings=both))
    assert problem.path == ("headers", "Authorization")
    one = HttpInvokerSettings.model_validate(
        {"url": "https://example.com", "headers": {"Authorization": "Bearer x"}}
    )
    assert HttpInvoker.check(FunctionConfig(name="f", invoker="http", settings=one)) == []
