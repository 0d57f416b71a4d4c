"""The ``python`` invoker: a ``module:function`` handler called in-process.

Sync handlers run in a thread pool of ``max_threads`` workers (so a slow handler never blocks
the event loop); async handlers are awaited on the loop. The deadline is enforced either way:
a sync handler that overruns keeps its thread until it returns, but its result is discarded
and the invocation is a timeout. An async handler that blocks the loop cannot be interrupted;
write async handlers that await.

The event object is passed as it is, not copied: the pipeline builds a fresh event for every
invocation (a retry builds a new one), so a handler that mutates its event cannot affect what
a retry sees. Callers that reuse an event object must copy it themselves.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import importlib
import inspect
import logging
import os
import sys
import time
import traceback
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar

from pydantic import ConfigDict, Field, field_validator

from router.abc import Invoker, InvokerContext, SettingsProblem
from router.errors import ConfigError, Location
from router.invokers.context import ClientContext, CognitoIdentity, LambdaContext
from router.invokers.results import (
    MarshalError,
    decode_payload,
    encode_response,
    error_payload,
    function_error,
    response_too_large,
    success,
    timeout_result,
)
from router.models import (
    MAX_PAYLOAD_BYTES,
    FunctionConfig,
    Invocation,
    InvokeResult,
    PluginSettings,
    function_arn,
)

logger = logging.getLogger(__name__)

Handler = Callable[[Any, LambdaContext], Any]


def parse_handler(spec: str) -> tuple[str, str]:
    """Split ``module:function`` (or AWS's ``module.function``) into module and attribute.

    After a colon the attribute may be dotted (``pkg.mod:App.handle``); without a colon the
    last dot separates the function, as in a Lambda function's ``Handler`` setting.
    """
    spec = spec.strip()
    if ":" in spec:
        module, _, attr = spec.partition(":")
    else:
        module, _, attr = spec.rpartition(".")
    if not module or not attr or ":" in attr:
        raise ValueError(f"handler {spec!r} must look like 'module:function' or 'module.function'")
    return module, attr


class PythonInvokerSettings(PluginSettings):
    """YAML keys of ``invoker: python``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    handler: str
    """``module:function`` or ``module.function`` (e.g. ``app.handlers:on_order``)."""
    path: str | None = None
    """A directory put in front of ``sys.path`` before importing; relative to the working
    directory of the router process."""
    max_threads: int = Field(default=16, ge=1, le=1024)
    """How many invocations of a sync handler may run at once (worker threads)."""
    memory_size: int = Field(default=128, ge=128, le=10240)
    """Reported as ``context.memory_limit_in_mb``; nothing is enforced."""

    @field_validator("handler")
    @classmethod
    def _check_handler(cls, value: str) -> str:
        parse_handler(value)
        return value.strip()


class HandlerError(Exception):
    """The handler cannot be loaded; ``key`` is the setting at fault."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key
        self.message = message


def load_handler(settings: PythonInvokerSettings) -> Handler:
    """Import ``settings.handler`` (after putting ``settings.path`` in front of
    ``sys.path``); raises :class:`HandlerError` saying what is wrong."""
    spec = settings.handler
    module_name, attr_path = parse_handler(spec)
    if settings.path is not None:
        directory = Path(settings.path).expanduser().resolve()
        if not directory.is_dir():
            raise HandlerError(
                "path", f"{directory} is not a directory (handler {spec!r} is imported from it)"
            )
        if str(directory) not in sys.path:
            sys.path.insert(0, str(directory))
    try:
        target: Any = importlib.import_module(module_name)
    except Exception as e:
        raise HandlerError(
            "handler",
            f"cannot import module {module_name!r} of handler {spec!r}: "
            f"{type(e).__name__}: {e} (check the module name, 'path' and sys.path)",
        ) from e
    for part in attr_path.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise HandlerError(
                "handler", f"handler {spec!r}: {module_name!r} has no attribute {attr_path!r}"
            ) from None
    if not callable(target):
        raise HandlerError("handler", f"handler {spec!r} is not callable")
    handler: Handler = target
    return handler


def _is_infrastructure(filename: str) -> bool:
    return filename == __file__ or any(filename.startswith(d) for d in _INFRA_DIRS)


_INFRA_DIRS = tuple(
    os.path.dirname(m.__file__ or "") + os.sep for m in (asyncio, concurrent.futures)
)


def format_stack(tb: TracebackType | None) -> list[str]:
    """The ``stackTrace`` list Lambda's Python runtime reports: the handler's frames only,
    each formatted by :func:`traceback.format_list`."""
    frames = traceback.extract_tb(tb)
    start = 0
    while start < len(frames) and _is_infrastructure(frames[start].filename):
        start += 1
    return traceback.format_list(frames[start:] if start < len(frames) else frames)


def _exception_result(exc: BaseException, request_id: str) -> InvokeResult:
    if isinstance(exc, SystemExit):
        # The Lambda runtime process would exit; the sandbox reports it like this.
        message = (
            f"RequestId: {request_id} Error: Runtime exited with error: exit status {exc.code}"
        )
        return function_error(error_payload(message, "Runtime.ExitError"))
    stack = format_stack(exc.__traceback__)
    return function_error(error_payload(str(exc), type(exc).__name__, stack))


def _call_sync(handler: Handler, event: Any, context: LambdaContext) -> Any:
    try:
        return handler(event, context)
    except SystemExit as e:
        # Raised in a worker thread, SystemExit would otherwise surface in the event loop.
        raise _HandlerExit(e) from None


def _is_coroutine_callable(obj: object) -> bool:
    if inspect.iscoroutinefunction(obj):
        return True
    # A callable object whose __call__ is ``async def``.
    return inspect.iscoroutinefunction(getattr(type(obj), "__call__", None))  # noqa: B004


class _HandlerExit(Exception):
    def __init__(self, exc: SystemExit) -> None:
        super().__init__(exc.code)
        self.exit = exc


class PythonInvoker(Invoker):
    """Calls an in-process Python handler with a Lambda-like context."""

    Settings: ClassVar[type[PluginSettings]] = PythonInvokerSettings
    settings: PythonInvokerSettings

    def __init__(self, function: FunctionConfig, context: InvokerContext) -> None:
        super().__init__(function, context)
        self._handler: Handler | None = None
        self._is_async = False
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._arn = function_arn(function.name, function.arn)
        self._log_stream = ""

    @property
    def handler(self) -> Handler | None:
        """The imported handler (after :meth:`start`)."""
        return self._handler

    async def start(self) -> None:
        if self._handler is not None:
            return
        self._handler = self._import()
        self._is_async = _is_coroutine_callable(self._handler)
        if not self._is_async:
            self._executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=self.settings.max_threads,
                thread_name_prefix=f"fn-{self.function.name}",
            )
        today = datetime.now(UTC).strftime("%Y/%m/%d")
        self._log_stream = f"{today}/[$LATEST]{uuid.uuid4().hex}"

    @classmethod
    def check(cls, function: FunctionConfig) -> list[SettingsProblem]:
        """Imports the handler exactly as :meth:`start` does (same ``path``, same
        ``sys.path``), so that ``router validate`` fails where ``router run`` would."""
        settings = function.settings
        assert isinstance(settings, PythonInvokerSettings)
        try:
            load_handler(settings)
        except HandlerError as e:
            return [SettingsProblem((e.key,), e.message)]
        return []

    def _import(self) -> Handler:
        try:
            return load_handler(self.settings)
        except HandlerError as e:
            where = Location(path=f"functions.{self.function.name}.{e.key}")
            raise ConfigError(e.message, where) from e.__cause__

    async def invoke(self, invocation: Invocation) -> InvokeResult:
        handler = self._handler
        if handler is None:
            raise RuntimeError("PythonInvoker.invoke() called before start()")
        remaining = invocation.deadline - time.time()
        request_id = invocation.request_id
        if remaining <= 0:
            return timeout_result(request_id, self.function.timeout)
        context = LambdaContext(
            function_name=self.function.name,
            invoked_function_arn=invocation.invoked_function_arn or self._arn,
            aws_request_id=request_id,
            deadline=invocation.deadline,
            memory_limit_in_mb=self.settings.memory_size,
            log_stream_name=self._log_stream,
            client_context=ClientContext.parse(invocation.client_context),
            identity=CognitoIdentity(
                invocation.cognito_identity_id or None, invocation.cognito_identity_pool_id or None
            ),
        )
        timer = asyncio.timeout(remaining)
        try:
            async with timer:
                if self._is_async:
                    result = await handler(invocation.event, context)
                else:
                    loop = asyncio.get_running_loop()
                    result = await loop.run_in_executor(
                        self._executor, _call_sync, handler, invocation.event, context
                    )
                    if inspect.isawaitable(result):
                        # A sync wrapper around an async handler (some frameworks do this).
                        result = await result
        except TimeoutError as e:
            if timer.expired():
                return timeout_result(request_id, self.function.timeout)
            return _exception_result(e, request_id)
        except _HandlerExit as e:
            return _exception_result(e.exit, request_id)
        except (Exception, SystemExit) as e:  # noqa: BLE001 - any handler failure is a result
            return _exception_result(e, request_id)
        return self._encode(result)

    def _encode(self, result: Any) -> InvokeResult:
        if result is None:
            return success(None)
        try:
            body = encode_response(result)
        except MarshalError as e:
            return function_error(error_payload(str(e), "Runtime.MarshalError"))
        if len(body) > MAX_PAYLOAD_BYTES:
            return response_too_large(len(body))
        # Decoding what was encoded hands the pipeline exactly what Lambda would return
        # (tuples become lists, Decimals numbers) and no alias of the handler's own objects.
        return success(decode_payload(body))

    async def aclose(self) -> None:
        executor, self._executor = self._executor, None
        if executor is not None:
            # Overrunning handlers cannot be stopped; do not wait for them.
            executor.shutdown(wait=False, cancel_futures=True)
