"""A minimal Lambda handler: answers with what it received and what its context says.

Runs unchanged under AWS Lambda, under ``awslambdaric`` beside the router (``runtime-api``
invoker) and in-process (``python`` invoker)::

    functions:
      hello:
        invoker: python
        handler: hello:handler
        path: examples/handlers
"""

from __future__ import annotations

from typing import Any


def handler(event: Any, context: Any) -> dict[str, Any]:
    return {
        "message": "hello",
        "event": event,
        "request_id": context.aws_request_id,
        "function_name": context.function_name,
        "remaining_ms": context.get_remaining_time_in_millis(),
    }
