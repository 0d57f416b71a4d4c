"""Python handlers as Lambda's Python runtime loads and calls them: the handler spec, the
import, the ``stackTrace`` of an error and the JSON encoding of a return value.

Shared by the in-process ``python`` invoker and its worker processes
(:mod:`router.invokers.worker`), so both report the same errors in the same shapes. Only the
standard library and orjson are imported here: a worker process starts with this module, and
everything it imports is part of every cold start.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import decimal
import importlib
import inspect
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import orjson

Handler = Callable[[Any, Any], Any]

_ORJSON_OPTS = (
    orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
)
"""Lambda's Python runtime (simplejson) accepts int keys but not datetimes or dataclasses."""


def parse_handler(spec: str) -> tuple[str, str]:
    """Split ``module:function`` (or AWS's ``module.function``) into module and attribute.

    After a colon the attribute may be dotted (``pkg.mod:App.handle``); without a colon the
    last dot separates the function, as in a Lambda function's ``Handler`` setting. A module
    written as a path (``hello_world/app.lambda_handler``, as SAM templates do) is imported as
    the dotted name (``hello_world.app``), as Lambda's Python runtime imports it.
    """
    spec = spec.strip()
    if ":" in spec:
        module, _, attr = spec.partition(":")
    else:
        module, _, attr = spec.rpartition(".")
    module = module.strip("/").replace("/", ".")
    if not module or not attr or ":" in attr:
        raise ValueError(f"handler {spec!r} must look like 'module:function' or 'module.function'")
    return module, attr


class HandlerError(Exception):
    """The handler cannot be loaded; ``key`` is the setting at fault (``handler``, ``path``)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key
        self.message = message


def handler_directory(spec: str, path: str | None) -> Path | None:
    """``path`` resolved against the working directory; :class:`HandlerError` when it is not
    a directory."""
    if path is None:
        return None
    directory = Path(path).expanduser().resolve()
    if not directory.is_dir():
        raise HandlerError(
            "path", f"{directory} is not a directory (handler {spec!r} is imported from it)"
        )
    return directory


def load_handler(spec: str, path: str | None = None) -> Handler:
    """Import ``spec`` (after putting ``path`` in front of ``sys.path``); raises
    :class:`HandlerError` saying what is wrong."""
    module_name, attr_path = parse_handler(spec)
    directory = handler_directory(spec, path)
    if directory is not None and str(directory) not in sys.path:
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


def is_coroutine_callable(obj: object) -> bool:
    """``async def``, or a callable object whose ``__call__`` is ``async def``."""
    if inspect.iscoroutinefunction(obj):
        return True
    return inspect.iscoroutinefunction(getattr(type(obj), "__call__", None))  # noqa: B004


_HERE = os.path.dirname(__file__)
_INFRA_FILES = frozenset(os.path.join(_HERE, name) for name in ("python.py", "worker.py"))
_INFRA_DIRS = tuple(
    os.path.dirname(m.__file__ or "") + os.sep for m in (asyncio, concurrent.futures)
)


def _is_infrastructure(filename: str) -> bool:
    return filename in _INFRA_FILES or filename.startswith(_INFRA_DIRS)


def format_stack(tb: TracebackType | None) -> list[str]:
    """The ``stackTrace`` list Lambda's Python runtime reports: the handler's frames only,
    each formatted by :func:`traceback.format_list`."""
    frames = traceback.extract_tb(tb)
    start = 0
    while start < len(frames) and _is_infrastructure(frames[start].filename):
        start += 1
    return traceback.format_list(frames[start:] if start < len(frames) else frames)


def error_payload(message: str, error_type: str, stack_trace: list[str] | None = None) -> Any:
    """The error object a function returns when it fails, as Lambda shapes it."""
    return {"errorMessage": message, "errorType": error_type, "stackTrace": stack_trace or []}


def exception_payload(exc: BaseException) -> Any:
    """What Lambda's Python runtime reports for an exception raised by a handler."""
    return error_payload(str(exc), type(exc).__name__, format_stack(exc.__traceback__))


class MarshalError(TypeError):
    """A handler's return value cannot be encoded as JSON."""


def _default(value: Any) -> Any:
    if isinstance(value, decimal.Decimal):
        # DynamoDB hands out Decimals; Lambda's encoder writes them as plain numbers.
        if value.is_nan():
            return None
        if value == value.to_integral_value():
            return int(value)
        return float(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def encode_response(value: Any) -> bytes:
    """Serialise a handler's return value as Lambda's Python runtime would.

    Raises :class:`MarshalError` for values Lambda cannot marshal either (datetimes, sets,
    arbitrary objects). ``bytes`` are sent as they are, as the runtime does.
    """
    if isinstance(value, bytes):
        return value
    try:
        return orjson.dumps(value, default=_default, option=_ORJSON_OPTS)
    except TypeError as e:
        raise MarshalError(f"Unable to marshal response: {e}") from e
