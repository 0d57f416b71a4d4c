"""An unmodified Lambda handler: logs what it receives and answers with it and with what its
context says.

``handler`` works for every event shape the router builds (S3 / directory notifications,
scheduled events, SQS, Kafka) and runs unchanged under AWS Lambda, under ``awslambdaric``
beside the router (``runtime-api`` invoker) and in-process (``python`` invoker); the embedded
default configuration (``config/router.yaml``) points at it::

    functions:
      hello:
        invoker: python
        handler: router.examples.hello:handler
"""

from __future__ import annotations

import json
import logging
from typing import Any

logger = logging.getLogger("router.examples.hello")


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    if "Records" in event:
        for record in event["Records"]:
            if record.get("eventSource") == "aws:s3":
                obj = record["s3"]["object"]
                logger.info(
                    "hello: %s s3://%s/%s (%d bytes)",
                    record["eventName"],
                    record["s3"]["bucket"]["name"],
                    obj["key"],
                    obj["size"],
                )
            else:
                logger.info("hello: record %s", json.dumps(record)[:200])
    elif event.get("detail-type") == "Scheduled Event":
        logger.info("hello: scheduled event for %s", event["time"])
    else:
        logger.info("hello: event %s", json.dumps(event)[:200])
    return {
        "message": "hello",
        "event": event,
        "request_id": context.aws_request_id,
        "function_name": context.function_name,
        "remaining_ms": context.get_remaining_time_in_millis(),
    }
