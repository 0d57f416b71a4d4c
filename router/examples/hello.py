"""An unmodified Lambda-style handler: logs what it receives and where it came from.

``handler`` works for every event shape the router builds (S3 / directory notifications,
scheduled events, SQS, Kafka); the router's example configuration points at it.
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
    return {"ok": True, "request_id": getattr(context, "aws_request_id", None)}
