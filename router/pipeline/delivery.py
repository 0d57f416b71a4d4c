"""What happens to a batch once it is cut, shared by the three delivery policies: invoke
(throttles and transport errors retried with backoff, without spending the function-error
budget), acknowledge at the source, release to a queue, read a partial batch response, hand a
record to a destination (a destination that is down blocks the lane: retry with backoff,
never drop).

Each kind of source has its policy, chosen once per mapping
(:data:`router.pipeline.core.POLICIES`):

- :class:`~router.pipeline.stream.StreamDelivery`: retry the batch in place until it
  succeeds, runs out of retries or ages out; bisect on function errors if asked; a partial
  batch response checkpoints before the first failed record and retries from there; exhausted
  records go to the on-failure destination and the lane moves on.
- :class:`~router.pipeline.queue.QueueDelivery`: invoke once; delete what succeeded; leave
  failures to the queue's visibility timeout and redrive policy (as Lambda does for SQS).
- :class:`~router.pipeline.asynchronous.AsyncDelivery`: one event per invoke,
  ``maximum_retry_attempts`` retries (2 by default), ``maximum_record_age``, then the
  on-failure destination; successes go to on-success.

A policy reports on the mapping's :class:`~router.pipeline.status.MappingStatus` and gives
the room of the records it finished back to the mapping's
:class:`~router.pipeline.backpressure.Backpressure`; it never calls into the pipeline. Every
method here removes from the front of the ``batch`` list the entries it has finished
(acknowledged or released), so a caller that sees :class:`Abandoned` knows what is left.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

import orjson

from router import logs, tracing
from router.abc import Destination, Invoker, Source
from router.aio import wait_event
from router.backoff import Backoff
from router.counters import Counters
from router.models import (
    MAX_PAYLOAD_BYTES,
    FunctionConfig,
    Invocation,
    InvokeResult,
    MappingConfig,
    Outcome,
    Record,
)
from router.pipeline.backpressure import Backpressure
from router.pipeline.batch_responses import (
    PartialBatchFailure,
    failed_identifiers,
    first_failed_index,
    names_no_failure,
)
from router.pipeline.destination_records import stream_failure_record
from router.pipeline.lanes import Entry, Lane, record_size
from router.pipeline.status import MappingStatus
from router.secrets import redact

logger = logging.getLogger(__name__)
warnings = logs.LimitedLogger(logger)
"""Warnings about a mapping, rate-limited per (mapping, cause)."""
_delivering: ContextVar[Lane | None] = ContextVar("delivering", default=None)
"""The lane whose batch the current task delivers (:meth:`Delivery.deliver_from`)."""

PLATFORM = (Outcome.THROTTLED, Outcome.TRANSPORT_ERROR)
"""Outcomes retried without spending the function-error budget."""
DEFAULT_CONCURRENCY = 10
UNBOUNDED = 1_000_000
EXPIRY_MARGIN = 0.01
"""Seconds a wait cut short at the records' expiry lasts beyond it (so that they have
expired when it ends)."""


class Abandoned(Exception):
    """The router is stopping; the batch is left unacknowledged to be delivered again."""


class Delivery(ABC):
    """The delivery policy of one mapping; one subclass per kind of source.

    The pipeline asks a policy four things: how many batches may run at once
    (``batch_slots``), whether a lane is ordered (``ordered``), what to do with filtered
    records as they arrive (``sort_filtered``, ``delete_filtered``), and to ``deliver`` a batch
    cut from a lane. Records the pipeline gives up without delivering them (the router stops,
    a batch failed unexpectedly) go to ``give_back``.
    """

    batch_slots = UNBOUNDED
    """Batches in flight at once across the mapping's lanes (an ordered lane runs one)."""
    ages_out = True
    """Records expire (``maximum_record_age``): an invocation throttled or unreachable gives up
    once all its records are too old."""

    def __init__(
        self,
        *,
        mapping: MappingConfig,
        function: FunctionConfig,
        source: Source,
        invoker: Invoker,
        on_failure: Destination | None,
        on_success: Destination | None,
        backoff: Backoff,
        counters: Counters,
        stopping: asyncio.Event,
        status: MappingStatus,
        room: Backpressure,
    ) -> None:
        self.mapping = mapping
        self.function = function
        self.source = source
        self.invoker = invoker
        self.on_failure = on_failure
        self.on_success = on_success
        self.backoff = backoff
        self.counters = counters
        self.stopping = stopping
        self.status = status
        self.room = room
        self.invoke_slots: asyncio.Semaphore | None = None
        """Bounds concurrent invocations (asynchronous sources); None: bounded by lanes."""
        self.concurrency = mapping.maximum_concurrency or DEFAULT_CONCURRENCY
        self.arn = function.invoked_arn
        self.max_age = mapping.maximum_record_age
        self.max_retries = mapping.maximum_retry_attempts
        cap = source.traits_for(source.settings).retry_cap_with_destination
        if self.max_retries < 0 and on_failure is not None and cap is not None:
            self.max_retries = cap

    # ------------------------------------------------------------------ the policy

    def ordered(self, lane: Any) -> bool:
        """Whether the batches of ``lane`` run one at a time, in order."""
        return True

    def sort_filtered(self, entries: list[Entry]) -> tuple[list[Entry], list[Record]]:
        """Split what a source put into entries for the lanes and filtered records to
        acknowledge at once (:meth:`delete_filtered`); by default every entry goes into its
        lane, where filtered ones ride along to keep acks in order."""
        return entries, []

    async def delete_filtered(self, records: Sequence[Record]) -> None:  # noqa: B027 - optional hook
        """Acknowledge records :meth:`sort_filtered` set apart."""

    async def deliver_from(self, lane: Lane, batch: list[Entry]) -> None:
        """What the pipeline calls: :meth:`deliver`, the invocations it makes knowing the
        lane the batch came from (:attr:`~router.models.Invocation.backlog`)."""
        token = _delivering.set(lane)
        try:
            await self.deliver(lane, batch)
        finally:
            _delivering.reset(token)

    def _backlog(self) -> bool:
        """Whether the lane being delivered holds another full batch behind this one."""
        lane = _delivering.get()
        return lane is not None and lane.count >= max(1, self.mapping.batch_size)

    @abstractmethod
    async def deliver(self, lane: Lane, batch: list[Entry]) -> None:
        """Deliver ``batch`` (cut from ``lane``) until every entry is acknowledged or released;
        raises :class:`Abandoned` when the router stops meanwhile."""

    async def give_back(self, records: Sequence[Record]) -> None:  # noqa: B027 - optional hook
        """Records the mapping no longer holds and did not deliver (their room is given back
        already). A stream reads them again, an asynchronous source finds them again; a queue
        releases them now."""

    # ------------------------------------------------------------------ shared steps

    async def sleep(self, delay: float) -> None:
        """Wait ``delay`` seconds; raise Abandoned if the router stops meanwhile."""
        if await wait_event(self.stopping, delay):
            raise Abandoned

    def warn(self, cause: str, msg: str, *args: Any, **fields: Any) -> None:
        """A WARNING about this mapping, rate-limited per (mapping, cause)."""
        name = self.mapping.name
        warnings.warning(
            (self.mapping.uuid or name, cause),
            "mapping %s: " + msg,
            name,
            *args,
            mapping=name,
            cause=cause,
            **fields,
        )

    def _function_failed(self, result: InvokeResult, count: int, attempt: int | None) -> None:
        """Report and log a failed invocation: the function raised, timed out or returned
        an error."""
        self.status.report(f"PROBLEM: function error: {_describe(result)}")
        error_type, message = error_fields(result)
        tried = f"attempt {attempt}, " if attempt else ""
        self.warn(
            str(result.outcome),
            "function %s failed (%s%s): errorType=%s errorMessage=%s",
            self.function.name,
            tried,
            _records(count),
            error_type,
            orjson.dumps(message).decode(),
            function=self.function.name,
            errorType=error_type,
            errorMessage=message,
        )

    def _items_failed(self, failed: int, count: int) -> None:
        self.status.report(
            f"PROBLEM: function reported {failed} of {count} records failed (batchItemFailures)"
        )
        self.warn(
            "batch_item_failures",
            "function %s reported %d of %d records failed (batchItemFailures)",
            self.function.name,
            failed,
            count,
            function=self.function.name,
        )

    def platform_delay(self, attempt: int, result: InvokeResult) -> float:
        """Seconds to wait after throttled / unreachable attempt ``attempt`` (1: the first)."""
        return self.backoff.delay(attempt, result.retry_after)

    def _until_expiry(self, records: Sequence[Record], now: float, delay: float) -> float:
        """``delay``, cut short when every record expires before it ends (a wait past their
        age is pointless: they go to the on-failure destination once it passes)."""
        if self.max_age < 0:
            return delay
        latest = max(r.arrival for r in records) + self.max_age
        return min(delay, max(0.0, latest - now) + EXPIRY_MARGIN)

    def _expired(self, record: Record, now: float) -> bool:
        return self.max_age >= 0 and now - record.arrival > self.max_age

    def _expired_in(self, records: Sequence[Record]) -> list[Record]:
        oldest = time.time() - self.max_age
        return [r for r in records if r.arrival < oldest]

    async def ack(self, records: Sequence[Record]) -> None:
        """Acknowledge at the source, retrying while the source is unavailable."""
        if not records:
            return
        attempt = 0
        while True:
            try:
                await self.source.ack(records)
                if attempt:
                    self.status.report("OK")  # the problem shown while retrying is over
                break
            except Exception as e:  # noqa: BLE001 - any source failure: retry, never lose
                attempt += 1
                message = redact(str(e)) or type(e).__name__
                self.status.report(f"PROBLEM: cannot acknowledge at the source: {message}")
                delay = self.backoff.delay(attempt)
                self.warn(
                    "ack",
                    "cannot acknowledge %d records at the source (attempt %d, retrying in "
                    "%.1fs): %s",
                    len(records),
                    attempt,
                    delay,
                    message,
                )
                await self.sleep(delay)
        self.room.give(len(records))

    async def release(self, records: Sequence[Record]) -> None:
        if not records:
            return
        try:
            await self.source.release(records)
        except Exception as e:  # noqa: BLE001
            # The queue redelivers them when their visibility timeout ends anyway.
            self.warn("release", "release at the source failed: %s", redact(str(e)))
        self.room.give(len(records))

    async def send(self, destination: Destination, record: dict[str, Any], what: str) -> None:
        """Hand a record to a destination; block (with backoff) until it is accepted."""
        attempt = 0
        while True:
            try:
                await destination.send(record)
                self.counters.destination_sends += 1
                if attempt:
                    self.status.report("OK")
                return
            except Exception as e:  # noqa: BLE001 - a destination that is down blocks the lane
                attempt += 1
                message = redact(str(e)) or type(e).__name__
                self.status.report(f"PROBLEM: {what} destination unavailable: {message}")
                delay = self.backoff.delay(attempt)
                self.warn(
                    "destination",
                    "%s destination failed (attempt %d, the lane waits; retrying in %.1fs): %s",
                    what,
                    attempt,
                    delay,
                    message,
                )
                await self.sleep(delay)

    async def invoke(self, records: Sequence[Record]) -> tuple[InvokeResult, str, Any]:
        """Invoke the function with ``records``; throttles and transport errors are retried
        here (without spending the retry budget) until the records expire."""
        attempt = 0
        size = sum(map(record_size, records))
        fields = self.source.invocation_fields(records)
        while True:
            event = self.source.build_event(records)
            request_id = fields.get("request_id") or str(uuid.uuid4())
            if size > MAX_PAYLOAD_BYTES:
                result = InvokeResult(
                    outcome=Outcome.FUNCTION_ERROR,
                    status_code=413,
                    function_error="Unhandled",
                    payload={
                        "errorType": "RequestEntityTooLargeException",
                        "errorMessage": f"request payload of {size} bytes exceeds the "
                        f"{MAX_PAYLOAD_BYTES} bytes limit",
                    },
                    detail="payload too large",
                )
                return result, request_id, event
            started = time.monotonic()
            if self.invoke_slots is None:
                result = await self._call(event, request_id, fields)
            else:
                async with self.invoke_slots:
                    if self.stopping.is_set():
                        raise Abandoned
                    started = time.monotonic()
                    result = await self._call(event, request_id, fields)
            counters = self.counters
            counters.invocations += 1
            counters.attempts += len(records)
            counters.batch_sizes_sum += len(records)
            counters.last_invoke = datetime.now(UTC)
            counters.observe_latency(time.monotonic() - started)
            if result.outcome not in PLATFORM:
                if result.outcome is Outcome.SUCCESS:
                    problem = self.source.check_response(records, result.payload)
                    if problem is not None:
                        result = InvokeResult(
                            outcome=Outcome.FUNCTION_ERROR,
                            payload={"errorType": "InvalidResponse", "errorMessage": problem},
                            status_code=result.status_code,
                            function_error="Unhandled",
                            executed_version=result.executed_version,
                            detail=problem,
                        )
                return result, request_id, event
            attempt += 1
            counters.throttles += 1
            self.status.report(f"PROBLEM: function {result.outcome}: {result.detail}")
            delay = self.platform_delay(attempt, result)
            expired = False
            if self.ages_out:
                now = time.time()
                expired = all(self._expired(r, now) for r in records)
                delay = self._until_expiry(records, now, delay)
            self.warn(
                str(result.outcome),
                "function %s %s (attempt %d, %s; %s): %s",
                self.function.name,
                "throttled" if result.outcome is Outcome.THROTTLED else "unreachable",
                attempt,
                _records(len(records)),
                "records expired" if expired else f"retrying in {delay:.1f}s",
                result.detail or result.outcome,
                function=self.function.name,
            )
            if expired:
                return result, request_id, event
            await self.sleep(delay)
            if self.ages_out and all(self._expired(r, time.time()) for r in records):
                return result, request_id, event  # the backoff outlived them

    async def _call(self, event: Any, request_id: str, fields: Mapping[str, str]) -> InvokeResult:
        invocation = Invocation(
            function=self.function.name,
            event=event,
            request_id=request_id,
            deadline=time.time() + self.function.timeout,
            invoked_function_arn=self.arn,
            client_context=fields.get("client_context", ""),
            trace_id=tracing.invocation_header(fields.get("trace_id", "")),
            backlog=self._backlog(),
        )
        try:
            return await self.invoker.invoke(invocation)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - an invoker bug is a transport error
            return InvokeResult(
                outcome=Outcome.TRANSPORT_ERROR, status_code=0, detail=redact(str(e))
            )

    def _partial(self, records: Sequence[Record], result: InvokeResult) -> int | None:
        """Index of the first failed record per a partial batch response, or None if the
        whole batch succeeded (or partial responses are not enabled)."""
        if not self.mapping.report_batch_item_failures or names_no_failure(result.payload):
            return None
        identifiers = self.source.identifiers(records)
        try:
            failed = failed_identifiers(result.payload, set(identifiers))
        except PartialBatchFailure as e:
            self.warn(
                "batch_item_failures",
                "function %s: malformed partial batch response, the whole batch failed: %s",
                self.function.name,
                e,
                function=self.function.name,
            )
            return 0
        if not failed:
            return None
        return first_failed_index(identifiers, failed)

    async def _succeed(
        self, records: Sequence[Record], result: InvokeResult, request_id: str, event: Any
    ) -> None:
        self.counters.invoked += len(records)
        self.status.report("OK")
        if self.on_success is None:
            return
        record = self.success_record(records, result, request_id, event)
        await self.send(self.on_success, record, "on-success")

    def success_record(
        self, records: Sequence[Record], result: InvokeResult, request_id: str, event: Any
    ) -> dict[str, Any]:
        """The on-success destination record: the event-source-mapping format (streams and
        queues); asynchronous invocations have their own."""
        return stream_failure_record(
            request_id=request_id,
            function_arn=self.arn,
            condition="Success",
            invoke_count=max(r.attempts for r in records) + 1,
            result=result,
            batch_info=self.source.batch_info(records),
            payload=event,
        )


def _records(n: int) -> str:
    return "1 record" if n == 1 else f"{n} records"


def error_fields(result: InvokeResult) -> tuple[str, str]:
    """``(errorType, errorMessage)`` of a failed invocation."""
    payload = result.payload
    if isinstance(payload, dict) and ("errorType" in payload or "errorMessage" in payload):
        error_type = str(payload.get("errorType") or result.function_error or "Error")
        message = str(payload.get("errorMessage") or "")
    else:
        error_type = result.function_error or str(result.outcome)
        message = result.detail or ("" if payload is None else str(payload))
    if len(message) > 1000:
        message = message[:997] + "..."
    return error_type, redact(message)


def _describe(result: InvokeResult) -> str:
    if result.detail:
        return result.detail
    payload = result.payload
    if isinstance(payload, dict) and "errorType" in payload:
        return f"{payload.get('errorType')}: {payload.get('errorMessage', '')}"
    return str(result.outcome)
