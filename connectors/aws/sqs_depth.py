"""The depth of an SQS queue as the SQS source reports it: ``ApproximateNumberOfMessages``
(visible: waiting for a consumer) and ``ApproximateNumberOfMessagesNotVisible`` (received,
not deleted yet), read with GetQueueAttributes every :data:`DEPTH_INTERVAL` seconds while
the source runs, shown on ``/metrics`` as ``router_sqs_approximate_messages`` and
``router_sqs_approximate_messages_not_visible``."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from connectors.aws.common import AWS_ERRORS
from router.abc import MetricFamily

if TYPE_CHECKING:
    from connectors.aws.sqs import SQSQueue

logger = logging.getLogger(__name__)

DEPTH_INTERVAL = 15.0
"""Seconds between two reads of the queue's depth (CloudWatch publishes it every minute)."""

ATTRIBUTES = {
    "ApproximateNumberOfMessages": (
        "router_sqs_approximate_messages",
        "Messages of the queue visible to consumers (SQS ApproximateNumberOfMessages: "
        "waiting to be received), as last read",
    ),
    "ApproximateNumberOfMessagesNotVisible": (
        "router_sqs_approximate_messages_not_visible",
        "Messages of the queue received and not deleted yet (SQS "
        "ApproximateNumberOfMessagesNotVisible), as last read",
    ),
}


class QueueDepth:
    """``run`` reads the depth of ``queue`` until cancelled; ``metrics`` reports the last
    values read. A failed read is logged at DEBUG (the receive loop reports outages) and the
    last values stay."""

    def __init__(self, queue: SQSQueue, mapping: str, interval: float = DEPTH_INTERVAL) -> None:
        self.queue = queue
        self.mapping = mapping
        self.interval = interval
        self.values: dict[str, int] = {}

    async def read(self) -> None:
        try:
            response = await self.queue.client.get_queue_attributes(
                QueueUrl=self.queue.url, AttributeNames=list(ATTRIBUTES)
            )
        except AWS_ERRORS as e:
            logger.debug("sqs %s: reading the queue depth failed: %s", self.queue.url, e)
            return
        attributes = response.get("Attributes") or {}
        for name in ATTRIBUTES:
            if name in attributes:
                self.values[name] = int(attributes[name])

    async def run(self) -> None:
        while True:
            await self.read()
            await asyncio.sleep(self.interval)

    def metrics(self) -> list[MetricFamily]:
        labels = {"mapping": self.mapping, "queue": self.queue.url}
        return [
            MetricFamily(
                name=metric,
                type="gauge",
                help=help_text,
                samples=[(metric, labels, float(self.values[attribute]))],
            )
            for attribute, (metric, help_text) in ATTRIBUTES.items()
            if attribute in self.values
        ]


__all__ = ["DEPTH_INTERVAL", "QueueDepth"]
