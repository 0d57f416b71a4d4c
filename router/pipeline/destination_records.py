"""Destination records in the formats AWS Lambda writes them (the Lambda Developer Guide's
"Capturing discarded batches for an event source mapping" and "Capturing records of Lambda
asynchronous invocations").

Stream and queue failures follow the event-source-mapping format (``requestContext``,
``responseContext``, ``*BatchInfo``) and always carry the invocation ``payload`` so the
records can be replayed without the source; asynchronous invocations follow the
async-destination format with ``requestPayload`` and ``responsePayload``.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from router.models import InvokeResult


def iso_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _response_context(result: InvokeResult | None) -> dict[str, Any]:
    if result is None:
        return {"statusCode": 0, "executedVersion": "$LATEST", "functionError": ""}
    context: dict[str, Any] = {
        "statusCode": result.status_code,
        "executedVersion": result.executed_version,
    }
    if result.function_error is not None:
        context["functionError"] = result.function_error
    elif result.outcome != "success":
        context["functionError"] = result.detail or str(result.outcome)
    return context


def stream_failure_record(
    *,
    request_id: str,
    function_arn: str,
    condition: str,
    invoke_count: int,
    result: InvokeResult | None,
    batch_info: dict[str, Any],
    payload: Any,
) -> dict[str, Any]:
    """``condition``: ``RetryAttemptsExhausted`` or ``RecordAgeExceeded`` (or
    ``PayloadTooLarge`` for a record that can never be sent)."""
    record: dict[str, Any] = {
        "requestContext": {
            "requestId": request_id,
            "functionArn": function_arn,
            "condition": condition,
            "approximateInvokeCount": invoke_count,
        },
        "responseContext": _response_context(result),
        "version": "1.0",
        "timestamp": iso_now(),
    }
    record.update(batch_info)
    record["payload"] = payload
    if result is not None and result.payload is not None:
        record["responsePayload"] = result.payload
    return record


def async_record(
    *,
    request_id: str,
    function_arn: str,
    condition: str,
    invoke_count: int,
    result: InvokeResult | None,
    request_payload: Any,
) -> dict[str, Any]:
    """``condition``: ``Success``, ``RetriesExhausted`` or ``EventAgeExceeded``."""
    return {
        "version": "1.0",
        "timestamp": iso_now(),
        "requestContext": {
            "requestId": request_id,
            "functionArn": function_arn,
            "condition": condition,
            "approximateInvokeCount": invoke_count,
        },
        "requestPayload": request_payload,
        "responseContext": _response_context(result),
        "responsePayload": None if result is None else result.payload,
    }


REJECTED = "RecordRejected"


def rejected_record(*, function_arn: str, reason: str, item: Mapping[str, Any]) -> dict[str, Any]:
    """Something a source read but could not turn into an event (a file whose name cannot
    be an S3 key), in the asynchronous destination format: condition ``RecordRejected``,
    ``requestPayload`` describes the item, ``responsePayload`` says why. The function was
    never invoked (``approximateInvokeCount`` 0)."""
    return {
        "version": "1.0",
        "timestamp": iso_now(),
        "requestContext": {
            "requestId": str(uuid.uuid4()),
            "functionArn": function_arn,
            "condition": REJECTED,
            "approximateInvokeCount": 0,
        },
        "requestPayload": dict(item),
        "responseContext": {
            "statusCode": 0,
            "executedVersion": "$LATEST",
            "functionError": REJECTED,
        },
        "responsePayload": {"errorType": REJECTED, "errorMessage": reason},
    }
