"""Shapes shared by every invoker: error payloads, timeouts, JSON encoding of responses.

Lambda's own formats are followed so that a destination record or a log line looks the same
whichever invoker ran the function.
"""

from __future__ import annotations

from typing import Any

import orjson

from router.invokers.handlers import error_payload
from router.models import MAX_PAYLOAD_BYTES, InvokeResult, Outcome

UNHANDLED = "Unhandled"


def function_error(payload: Any, detail: str = "", status_code: int = 200) -> InvokeResult:
    """A function error (``X-Amz-Function-Error: Unhandled``) carrying ``payload``."""
    if not detail:
        detail = describe_error(payload)
    return InvokeResult(
        outcome=Outcome.FUNCTION_ERROR,
        payload=payload,
        status_code=status_code,
        function_error=UNHANDLED,
        detail=detail,
    )


def describe_error(payload: Any) -> str:
    """``ErrorType: message`` of an error object, for logs and ``last_processing_result``."""
    if isinstance(payload, dict):
        error_type = payload.get("errorType") or "Error"
        message = payload.get("errorMessage") or ""
        text = f"{error_type}: {message}" if message else str(error_type)
    else:
        text = str(payload)
    return text if len(text) <= 300 else text[:297] + "..."


def timeout_result(request_id: str, timeout: float) -> InvokeResult:
    """The deadline passed. The payload is what Lambda returns for a timed-out invoke."""
    message = f"RequestId: {request_id} Error: Task timed out after {timeout:.2f} seconds"
    return InvokeResult(
        outcome=Outcome.TIMEOUT,
        payload={"errorType": "Sandbox.Timedout", "errorMessage": message},
        function_error=UNHANDLED,
        detail=f"Task timed out after {timeout:.2f} seconds",
    )


def throttled(
    detail: str, retry_after: float | None = None, status_code: int = 429, payload: Any = None
) -> InvokeResult:
    return InvokeResult(
        outcome=Outcome.THROTTLED,
        status_code=status_code,
        retry_after=retry_after,
        detail=detail,
        payload=payload,
    )


def transport_error(detail: str, status_code: int = 0, payload: Any = None) -> InvokeResult:
    return InvokeResult(
        outcome=Outcome.TRANSPORT_ERROR, status_code=status_code, payload=payload, detail=detail
    )


def success(payload: Any) -> InvokeResult:
    return InvokeResult(outcome=Outcome.SUCCESS, payload=payload)


def response_too_large(size: int, limit: int = MAX_PAYLOAD_BYTES) -> InvokeResult:
    """Lambda's answer to a function whose response exceeds the payload limit."""
    message = (
        f"Response payload size ({size} bytes) exceeded maximum allowed payload size "
        f"({limit} bytes)."
    )
    return function_error(error_payload(message, "Function.ResponseSizeTooLarge"))


def decode_payload(body: bytes) -> Any:
    """A response body as the caller sees it: JSON decoded, ``None`` when empty or ``null``,
    and the raw text when it is not JSON (a runtime may send any bytes)."""
    if not body or body.isspace():
        return None
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return body.decode("utf-8", errors="replace")
