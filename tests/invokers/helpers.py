"""Small builders shared by the invoker tests."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any, cast

import router.examples
from router.abc import InvokerContext, Store
from router.models import FunctionConfig, Invocation, PluginSettings

HANDLERS = Path(__file__).parent / "handlers"
EXAMPLES = Path(router.examples.__file__).parent
"""The bundled example handlers (``hello``), as a folder of modules."""


class InitErrors(list[str]):
    """Collects what invokers pass to ``report_init_error``."""

    def context(self) -> InvokerContext:
        return InvokerContext(store=cast(Store, None), report_init_error=self.append)


def function(
    name: str, invoker: str, settings: PluginSettings, timeout: float = 3.0
) -> FunctionConfig:
    return FunctionConfig(name=name, invoker=invoker, timeout=timeout, settings=settings)


def invocation(
    event: Any, *, timeout: float = 3.0, function_name: str = "fn", backlog: bool = False
) -> Invocation:
    return Invocation(
        function=function_name,
        event=event,
        request_id=str(uuid.uuid4()),
        deadline=time.time() + timeout,
        backlog=backlog,
    )
