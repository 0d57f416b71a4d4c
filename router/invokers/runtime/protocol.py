"""The Lambda Runtime API as AWS's Runtime Interface Emulator (RIE) answers it.

Routes (API version 2018-06-01), status codes, headers and bodies follow the RIE's handlers:
a runtime written against AWS sees the same answers here. Every JSON body the RIE renders
ends with a newline (Go's ``json.Encoder``); so do these.

A runtime moves through the RIE's states (their names appear in 403 messages)::

    Started --/next--> Ready --(invocation)--> Running --/response, /error--> ResponseSent
       |                 ^                                                       |
       |                 +---------------------------/next-----------------------+
       +--/init/error--> InitError

(``ResponseSent`` is named ``RuntimeResponseSentState`` in messages.)

A request that is not allowed in the runtime's state is ``403 InvalidStateTransition``; a
``/response`` or ``/error`` whose request id is not the runtime's current invocation is
``400 InvalidRequestID`` (checked first, as the RIE's middleware does).
"""

from __future__ import annotations

import enum
import re
from typing import Any

import orjson

from router.invokers.results import decode_payload
from router.invokers.runtime.http import Response

API_VERSION = "/2018-06-01"
RUNTIME = f"{API_VERSION}/runtime"

MAX_RESPONSE_BYTES = 6 * 1024 * 1024 + 100
"""The RIE's ``MaxPayloadSize`` (6 MiB + 100 bytes): the largest response or error body a
runtime may post."""

REQUEST_ID = "Lambda-Runtime-Aws-Request-Id"
DEADLINE_MS = "Lambda-Runtime-Deadline-Ms"
FUNCTION_ARN = "Lambda-Runtime-Invoked-Function-Arn"
TRACE_ID = "Lambda-Runtime-Trace-Id"
CLIENT_CONTEXT = "Lambda-Runtime-Client-Context"
COGNITO_IDENTITY = "Lambda-Runtime-Cognito-Identity"
ERROR_TYPE = "Lambda-Runtime-Function-Error-Type"
RESPONSE_MODE = "Lambda-Runtime-Function-Response-Mode"
ERROR_CAUSE_CONTENT_TYPE = "application/vnd.aws.lambda.error.cause+json"

STREAMING = "streaming"


class State(enum.StrEnum):
    """A runtime's state, named as the RIE names it."""

    STARTED = "Started"
    READY = "Ready"
    RUNNING = "Running"
    INVOCATION_RESPONSE = "InvocationResponse"
    INVOCATION_ERROR_RESPONSE = "InvocationErrorResponse"
    RESPONSE_SENT = "RuntimeResponseSentState"
    INIT_ERROR = "InitError"


def render(status: int, value: Any) -> Response:
    """A JSON answer, byte for byte as the RIE writes it (trailing newline included)."""
    return Response(status, orjson.dumps(value) + b"\n")


def error(status: int, error_type: str, message: str) -> Response:
    return render(status, {"errorMessage": message, "errorType": error_type})


_ACCEPTED = Response(202, orjson.dumps({"status": "OK"}) + b"\n")


def accepted() -> Response:
    """``202 {"status": "OK"}`` (one shared answer: it is never changed)."""
    return _ACCEPTED


def invalid_request_id() -> Response:
    return error(400, "InvalidRequestID", "Invalid request ID")


def invalid_state_transition(current: State, target: State) -> Response:
    return error(
        403,
        "InvalidStateTransition",
        f"State transition from {current} to {target} failed for runtime. "
        "Error: State transition is not allowed",
    )


def request_too_large(limit: int) -> Response:
    return error(
        413, "RequestEntityTooLarge", f"Exceeded maximum allowed payload size ({limit} bytes)."
    )


def invalid_response_mode() -> Response:
    return error(400, "InvalidFunctionResponseMode", "Invalid function response mode")


def internal_error() -> Response:
    return error(500, "InternalServerError", "Internal Server Error")


def ping() -> Response:
    """``GET /2018-06-01/ping``: the RIE still answers ``pong``."""
    return Response(200, b"pong", "text/plain; charset=utf-8")


def not_found() -> Response:
    """An unknown route, as the RIE's router (chi) answers it."""
    return Response(404, b"404 page not found\n", "text/plain; charset=utf-8")


def method_not_allowed() -> Response:
    return Response(405, b"", "")


def logs_not_supported() -> Response:
    """``PUT /2020-08-15/logs`` as the RIE answers it without a telemetry service."""
    return error(202, "Logs.NotSupported", "Logs API is not supported")


def telemetry_not_supported() -> Response:
    """``PUT /2022-07-01/telemetry`` as the RIE answers it without a telemetry service."""
    return error(202, "Telemetry.NotSupported", "Telemetry API is not supported")


def cognito_identity(identity_id: str, pool_id: str) -> str:
    """The ``Lambda-Runtime-Cognito-Identity`` header: both keys, always (as the RIE)."""
    value = {"cognitoIdentityId": identity_id, "cognitoIdentityPoolId": pool_id}
    return orjson.dumps(value).decode()


_VALID_ERROR_TYPE = re.compile(r"(Runtime|Function)\.[A-Z][a-zA-Z]+")


def scrub_error_type(value: str | None) -> str:
    """``Lambda-Runtime-Function-Error-Type`` as the RIE keeps it: ``Runtime.*`` and
    ``Function.*`` types pass; anything else becomes ``Runtime.Unknown`` (``Function.Unknown``
    for an invalid ``Function.`` type)."""
    value = value or ""
    if _VALID_ERROR_TYPE.search(value):
        return value
    if value.startswith("Function."):
        return "Function.Unknown"
    return "Runtime.Unknown"


def oversized_response(size: int, limit: int) -> dict[str, str]:
    """The error an invocation ends with when its runtime posts more than ``limit`` bytes
    (the RIE's ``ErrorResponseTooLarge``: no stack trace)."""
    return {
        "errorType": "Function.ResponseSizeTooLarge",
        "errorMessage": (
            f"Response payload size ({size} bytes) exceeded maximum allowed payload size "
            f"({limit} bytes)."
        ),
    }


def error_body(body: bytes, content_type: str | None) -> Any:
    """What the caller of an invocation sees for a posted ``/error`` body.

    The body is passed on as posted (decoded when it is JSON, as text when it is not), as
    the RIE forwards it. With the content type ``application/vnd.aws.lambda.error.cause+json``
    only ``errorMessage``, ``errorType`` and ``stackTrace`` are kept (the X-Ray cause goes),
    and a body that does not parse becomes ``"Invalid error body"``.
    """
    if (content_type or "").split(";")[0].strip().lower() != ERROR_CAUSE_CONTENT_TYPE:
        return decode_payload(body)
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return "Invalid error body"
    if not isinstance(parsed, dict):
        return "Invalid error body"
    kept: dict[str, Any] = {
        "errorMessage": _text(parsed.get("errorMessage")),
        "errorType": _text(parsed.get("errorType")),
    }
    stack = parsed.get("stackTrace")
    if isinstance(stack, list) and stack:
        kept["stackTrace"] = stack
    return kept


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""
