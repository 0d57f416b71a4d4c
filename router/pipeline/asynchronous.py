"""The asynchronous delivery policy (S3 notifications, a directory, schedules, the durable
queue's events): as Lambda's asynchronous invocation, each record is its own event, retried
``maximum_retry_attempts`` times (2 by default) within ``maximum_record_age``, then handed to
the on-failure destination; successes go to on-success. The queue's Invoke and SNS events
wait as Lambda's do (1 then 2 minutes after function errors, 1 s doubling to 5 minutes after
throttles and system errors; :class:`~router.backoff.LambdaAsyncRetry`); other sources, and
EventBridge rules, with the router's exponential backoff. Invocations, not batches, are
bounded by the mapping's concurrency: an event waiting out a retry backoff must not hold a
slot other events need."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from typing import Any

from router.models import InvokeResult, Outcome, Record
from router.pipeline.delivery import PLATFORM, Delivery
from router.pipeline.destination_records import async_record
from router.pipeline.lanes import Entry, Lane


class AsyncDelivery(Delivery):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.invoke_slots = asyncio.Semaphore(self.concurrency)
        self.timing = self.source.async_retry()
        """Lambda's retry timing (the durable queue's events), or None: the router's backoff."""
        if self.timing is not None:
            self.max_age = self.timing.max_age(self.max_age)

    def platform_delay(self, attempt: int, result: InvokeResult) -> float:
        if self.timing is None:
            return super().platform_delay(attempt, result)
        return self.timing.after_throttle(attempt)

    def error_delay(self, retry: int) -> float:
        """Seconds before retry ``retry`` (1: the first) after a function error."""
        if self.timing is None:
            return self.backoff.delay(retry)
        return self.timing.after_error(retry)

    async def deliver(self, lane: Lane, batch: list[Entry]) -> None:
        await self.asynchronous(batch)

    def success_record(
        self, records: Sequence[Record], result: InvokeResult, request_id: str, event: Any
    ) -> dict[str, Any]:
        return async_record(
            request_id=request_id,
            function_arn=self.arn,
            condition="Success",
            invoke_count=records[0].attempts + 1,
            result=result,
            request_payload=event,
        )

    async def asynchronous(self, batch: list[Entry]) -> None:
        """Asynchronous invocation: each record is its own event."""
        while batch:
            record, filtered = batch[0]
            if not filtered:
                await self._deliver_async(record)
            await self.ack([record])
            batch.pop(0)

    async def _deliver_async(self, record: Record) -> None:
        result: InvokeResult | None = None
        request_id = ""
        if 0 <= self.max_retries < record.attempts:
            # Its last attempt failed before a restart, which came before the destination.
            await self._async_failed(record, "RetriesExhausted", result, request_id)
            return
        while True:
            if self._expired(record, time.time()):
                await self._async_failed(record, "EventAgeExceeded", result, request_id)
                return
            result, request_id, event = await self.invoke([record])
            if result.outcome is Outcome.SUCCESS:
                await self._succeed([record], result, request_id, event)
                return
            if result.outcome in PLATFORM:
                continue  # expired while throttled: the age check above sends it on
            self._function_failed(result, 1, record.attempts + 1)
            record.attempts += 1
            self.counters.failed += 1
            if 0 <= self.max_retries < record.attempts:
                await self.source.attempted(record, None)
                await self._async_failed(record, "RetriesExhausted", result, request_id)
                return
            self.counters.retries += 1
            delay = self._until_expiry([record], time.time(), self.error_delay(record.attempts))
            await self.source.attempted(record, time.time() + delay)
            await self.sleep(delay)

    async def _async_failed(
        self, record: Record, condition: str, result: InvokeResult | None, request_id: str
    ) -> None:
        if self.on_failure is None:
            self.warn(
                "dropped",
                "event %s dropped (%s) and no on-failure destination is set",
                record.identifier,
                condition,
            )
            return
        payload = async_record(
            request_id=request_id or str(uuid.uuid4()),
            function_arn=self.arn,
            condition=condition,
            invoke_count=record.attempts,
            result=result,
            request_payload=self.source.build_event([record]),
        )
        await self.send(self.on_failure, payload, "on-failure")
