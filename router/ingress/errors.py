"""Errors as AWS services answer them, in the two wire protocols the front-ends speak.

A front-end handler raises :class:`AwsError`; the listener turns it into a response with the
route's :data:`ErrorFormat`:

- :func:`rest_json_error` (Lambda's Invoke API, REST-JSON): the code in the
  ``x-amzn-ErrorType`` header, the body ``{"Type": "User" | "Service", "message": ...}``
  (plus any extra members, e.g. ``Reason`` of ``TooManyRequestsException``);
- :func:`json_error` (JSON 1.1, e.g. EventBridge's ``PutEvents``): the body
  ``{"__type": CODE, "message": ...}`` with ``Content-Type: application/x-amz-json-1.1``.

botocore reads both (the code from the header or ``__type``, the message from ``message``),
so an SDK raises the named exception class.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

REQUEST_ID_HEADER = "x-amzn-RequestId"


@dataclass(slots=True)
class AwsError(Exception):
    """A refusal as an AWS service words it: HTTP ``status``, error ``code`` (the exception
    name an SDK raises), ``message``. ``extra`` members go into the body, ``headers`` into
    the response (``Retry-After``)."""

    status: int
    code: str
    message: str
    extra: Mapping[str, Any] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.status} {self.code}: {self.message}"


ErrorFormat = Callable[[AwsError, str], web.Response]
"""Renders an :class:`AwsError` for a request id."""


def rest_json_error(error: AwsError, request_id: str) -> web.Response:
    """Lambda's REST-JSON error."""
    body = {"Type": "User" if error.status < 500 else "Service", "message": error.message}
    body.update(error.extra)
    headers = {
        "x-amzn-ErrorType": error.code,
        REQUEST_ID_HEADER: request_id,
        **error.headers,
    }
    return web.Response(
        status=error.status,
        body=orjson.dumps(body),
        headers=headers,
        content_type="application/json",
    )


def json_error(error: AwsError, request_id: str) -> web.Response:
    """The JSON 1.1 protocol's error (EventBridge, SNS's JSON API...)."""
    body = {"__type": error.code, "message": error.message, **error.extra}
    return web.Response(
        status=error.status,
        body=orjson.dumps(body),
        headers={REQUEST_ID_HEADER: request_id, **error.headers},
        content_type="application/x-amz-json-1.1",
    )


def text_error(error: AwsError, request_id: str) -> web.Response:
    """A plain-text error for front-ends that are no AWS API (an SNS subscription endpoint)."""
    return web.Response(
        status=error.status,
        text=f"{error.code}: {error.message}\n",
        headers={REQUEST_ID_HEADER: request_id, **error.headers},
    )


def not_found(method: str, path: str) -> AwsError:
    return AwsError(404, "UnknownOperationException", f"no operation at {method} {path}")


def internal_error() -> AwsError:
    return AwsError(500, "ServiceException", "The service encountered an internal error.")


__all__ = [
    "REQUEST_ID_HEADER",
    "AwsError",
    "ErrorFormat",
    "internal_error",
    "json_error",
    "not_found",
    "rest_json_error",
    "text_error",
]
