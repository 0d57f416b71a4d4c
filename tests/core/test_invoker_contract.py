"""The Invoker base class hands every invoker its checked settings."""

from __future__ import annotations

from typing import cast

import pytest

from router.abc import InvokerContext, Store
from router.invokers.python import PythonInvoker, PythonInvokerSettings
from router.models import FunctionConfig, PluginSettings


def _context() -> InvokerContext:
    return InvokerContext(store=cast(Store, None), report_init_error=lambda _: None)


def test_settings_of_the_invokers_own_type_are_kept() -> None:
    settings = PythonInvokerSettings(handler="router.examples.hello:handler")
    function = FunctionConfig(name="f", invoker="python", settings=settings)
    assert PythonInvoker(function, _context()).settings is settings


def test_settings_of_another_type_are_refused() -> None:
    function = FunctionConfig(name="f", invoker="python", settings=PluginSettings())
    with pytest.raises(TypeError, match="PythonInvoker needs PythonInvokerSettings settings"):
        PythonInvoker(function, _context())
