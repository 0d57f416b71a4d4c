"""What happens to a batch once it is cut: invoke, classify, retry, bisect, honour partial
batch responses, hand failures and successes to destinations, acknowledge.

Three policies, one per :class:`router.models.SourceKind` (SPEC 6):

- STREAM: retry the batch in place until it succeeds, runs out of retries or ages out;
  bisect on function errors if asked; a partial batch response checkpoints before the first
  failed record and retries from there; exhausted records go to the on-failure destination and
  the lane moves on.
- QUEUE: invoke once; delete what succeeded; leave failures to the queue's visibility timeout
  and redrive policy (as Lambda does for SQS).
- ASYNC: one event per invoke, ``maximum_retry_attempts`` retries (2 by default),
  ``maximum_record_age``, then the on-failure destination; successes go to on-success.

Throttles and transport errors are retried with backoff without spending the function-error
budget. A destination that is down blocks the lane (retry with backoff, never drop). Every
function here removes from the front of the ``batch`` list the entries it has finished
(acknowledged or released), so a caller that sees :class:`Abandoned` knows what is left.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from router import logs
from router.abc import Destination, Invoker, Source
from router.aio import wait_event
from router.models import (
    MAX_PAYLOAD_BYTES,
    FunctionConfig,
    Invocation,
    InvokeResult,
    MappingConfig,
    Outcome,
    Record,
    SourceKind,
    function_arn,
)
from router.pipeline.records import async_record, stream_failure_record
from router.pipeline.retry import (
    Backoff,
    PartialBatchFailure,
    failed_identifiers,
    first_failed_index,
    names_no_failure,
)
from router.secrets import redact

logger = logging.getLogger(__name__)
warnings = logs.LimitedLogger(logger)
"""Warnings about a mapping, rate-limited per (mapping, cause)."""

Entry = tuple[Record, bool]

_PLATFORM = (Outcome.THROTTLED, Outcome.TRANSPORT_ERROR)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Abandoned(Exception):
    """The router is stopping; the batch is left unacknowledged to be delivered again."""


@dataclass(slots=True)
class Counters:
    """Per-mapping counters; the app flushes them to the store and to /metrics (see
    docs/operations.md for what each one counts)."""

    records_in: int = 0
    filtered: int = 0
    invoked: int = 0
    """Records delivered: the function took them (success, and not named in a partial batch
    response). Once per record, however many attempts it took."""
    attempts: int = 0
    """Records sent to the function, once per attempt (throttled and unreachable included)."""
    invocations: int = 0
    failed: int = 0
    retries: int = 0
    throttles: int = 0
    destination_sends: int = 0
    rejected: int = 0
    """Items the source could not turn into events (skipped, see ``Sink.reject``)."""
    last_invoke: datetime | None = None
    latency_sum: float = 0.0
    latency_buckets: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    batch_sizes_sum: int = 0

    def observe_latency(self, seconds: float) -> None:
        self.latency_sum += seconds
        for i, bound in enumerate(LATENCY_BUCKETS):
            if seconds <= bound:
                self.latency_buckets[i] += 1
                return
        self.latency_buckets[-1] += 1


@dataclass(slots=True)
class _Segment:
    """Consecutive records of a stream batch that are retried together."""

    records: list[Record]
    retries: int = 0
    result: InvokeResult | None = None
    """The last failed invocation, for the destination record if the records age out."""
    request_id: str = ""


class Delivery:
    def __init__(
        self,
        *,
        mapping: MappingConfig,
        function: FunctionConfig,
        source: Source,
        invoker: Invoker,
        kind: SourceKind,
        on_failure: Destination | None,
        on_success: Destination | None,
        backoff: Backoff,
        counters: Counters,
        stopping: asyncio.Event,
        report: Callable[[str], None],
        done: Callable[[int], None],
        invoke_slots: asyncio.Semaphore | None = None,
    ) -> None:
        self.mapping = mapping
        self.function = function
        self.source = source
        self.invoker = invoker
        self.kind = kind
        self.on_failure = on_failure
        self.on_success = on_success
        self.backoff = backoff
        self.counters = counters
        self.stopping = stopping
        self.report = report
        self.done = done
        self.invoke_slots = invoke_slots
        """Bounds concurrent invocations (asynchronous sources); None: bounded by lanes."""
        self.arn = function_arn(function.name, function.arn)
        self.max_age = mapping.maximum_record_age
        self.max_retries = mapping.maximum_retry_attempts
        cap = source.traits_for(source.settings).retry_cap_with_destination
        if self.max_retries < 0 and on_failure is not None and cap is not None:
            self.max_retries = cap

    # ------------------------------------------------------------------ helpers

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
        self.report(f"PROBLEM: function error: {_describe(result)}")
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
        self.report(
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
                break
            except Exception as e:  # noqa: BLE001 - any source failure: retry, never lose
                attempt += 1
                message = redact(str(e)) or type(e).__name__
                self.report(f"PROBLEM: cannot acknowledge at the source: {message}")
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
        self.done(len(records))

    async def release(self, records: Sequence[Record]) -> None:
        if not records:
            return
        try:
            await self.source.release(records)
        except Exception as e:  # noqa: BLE001
            # The queue redelivers them when their visibility timeout ends anyway.
            self.warn("release", "release at the source failed: %s", redact(str(e)))
        self.done(len(records))

    async def send(self, destination: Destination, record: dict[str, Any], what: str) -> None:
        """Hand a record to a destination; block (with backoff) until it is accepted."""
        attempt = 0
        while True:
            try:
                await destination.send(record)
                self.counters.destination_sends += 1
                if attempt:
                    self.report("OK")
                return
            except Exception as e:  # noqa: BLE001 - a destination that is down blocks the lane
                attempt += 1
                message = redact(str(e)) or type(e).__name__
                self.report(f"PROBLEM: {what} destination unavailable: {message}")
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
        size = sum([r.size for r in records])
        while True:
            event = self.source.build_event(records)
            request_id = str(uuid.uuid4())
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
                result = await self._call(event, request_id)
            else:
                async with self.invoke_slots:
                    if self.stopping.is_set():
                        raise Abandoned
                    started = time.monotonic()
                    result = await self._call(event, request_id)
            counters = self.counters
            counters.invocations += 1
            counters.attempts += len(records)
            counters.batch_sizes_sum += len(records)
            counters.last_invoke = datetime.now(UTC)
            counters.observe_latency(time.monotonic() - started)
            if result.outcome not in _PLATFORM:
                return result, request_id, event
            attempt += 1
            counters.throttles += 1
            self.report(f"PROBLEM: function {result.outcome}: {result.detail}")
            delay = self.backoff.delay(attempt, result.retry_after)
            expired = False
            if self.kind is not SourceKind.QUEUE:
                now = time.time()
                expired = all(self._expired(r, now) for r in records)
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

    async def _call(self, event: Any, request_id: str) -> InvokeResult:
        invocation = Invocation(
            function=self.function.name,
            event=event,
            request_id=request_id,
            deadline=time.time() + self.function.timeout,
            invoked_function_arn=self.arn,
        )
        try:
            return await self.invoker.invoke(invocation)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - an invoker bug is a transport error
            return InvokeResult(
                outcome=Outcome.TRANSPORT_ERROR, status_code=0, detail=redact(str(e))
            )

    # ------------------------------------------------------------------ streams

    async def stream(self, batch: list[Entry]) -> None:
        """Deliver a stream batch in order; returns when every entry is acknowledged."""
        sent = [r for r, filtered in batch if not filtered]
        finished: set[int] = set()
        if len(sent) < len(batch):
            finished.update(id(r) for r, filtered in batch if filtered)
        work = [_Segment(sent)]
        while work:
            await self._ack_prefix(batch, finished)
            segment = work[0]
            if not segment.records:
                work.pop(0)
                continue
            expired = self._expired_in(segment.records) if self.max_age >= 0 else None
            if expired:
                # The complement of exactly those records: a second clock reading could let
                # a record fall between "expired" and "kept" and stall the lane.
                gone = {id(r) for r in expired}
                segment.records = [r for r in segment.records if id(r) not in gone]
                await self._stream_failed(
                    expired,
                    "RecordAgeExceeded",
                    segment.result,
                    segment.request_id,
                    segment.retries,
                )
                finished.update(id(r) for r in expired)
                continue
            result, request_id, event = await self.invoke(segment.records)
            failed_from: int | None = None
            if result.outcome is Outcome.SUCCESS:
                failed_from = self._partial(segment.records, result)
                if failed_from is None:
                    await self._succeed(segment.records, result, request_id, event)
                    if len(work) == 1:
                        # Every entry still in the batch is now finished: a record not yet
                        # finished is in exactly one segment, and this was the last one. The
                        # common case: the whole batch went through at the first try.
                        await self.ack(
                            segment.records
                            if len(segment.records) == len(batch)
                            else [r for r, _ in batch]
                        )
                        batch.clear()
                        return
                    finished.update(id(r) for r in segment.records)
                    work.pop(0)
                    continue
                # Checkpoint before the first failed record, retry from there.
                self._items_failed(len(segment.records) - failed_from, len(segment.records))
                self.counters.invoked += failed_from
                finished.update(id(r) for r in segment.records[:failed_from])
                segment.records = segment.records[failed_from:]
            elif result.outcome in _PLATFORM:
                # Every record expired while the function was throttled or unreachable.
                continue
            else:
                self._function_failed(result, len(segment.records), segment.retries + 1)
            self.counters.failed += len(segment.records)
            segment.result, segment.request_id = result, request_id
            if result.status_code == 413 and len(segment.records) == 1:
                # A single record over the payload limit can never be sent: retrying would
                # block the lane for good (streams retry forever by default).
                await self._stream_failed(
                    segment.records, "PayloadTooLarge", result, request_id, segment.retries + 1
                )
                finished.update(id(r) for r in segment.records)
                work.pop(0)
                continue
            if (
                self.mapping.bisect_batch_on_function_error
                and len(segment.records) > 1
                and failed_from is None
            ):
                half = len(segment.records) // 2
                left = _Segment(segment.records[:half], segment.retries, result, request_id)
                right = _Segment(segment.records[half:], segment.retries, result, request_id)
                work[0:1] = [left, right]
                continue
            segment.retries += 1
            for r in segment.records:
                r.attempts += 1
            if 0 <= self.max_retries < segment.retries:
                await self._stream_failed(
                    segment.records, "RetryAttemptsExhausted", result, request_id, segment.retries
                )
                finished.update(id(r) for r in segment.records)
                work.pop(0)
                continue
            self.counters.retries += 1
            # Checkpoint what succeeded before waiting: a stop during the backoff must not
            # send those records again.
            await self._ack_prefix(batch, finished)
            await self.sleep(self.backoff.delay(segment.retries))
        await self._ack_prefix(batch, finished)

    async def _ack_prefix(self, batch: list[Entry], finished: set[int]) -> None:
        n = 0
        for record, _ in batch:
            if id(record) not in finished:
                break
            n += 1
        if n:
            await self.ack([r for r, _ in batch[:n]])
            del batch[:n]

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
        self.report("OK")
        if self.on_success is None:
            return
        if self.kind is SourceKind.ASYNC:
            record = async_record(
                request_id=request_id,
                function_arn=self.arn,
                condition="Success",
                invoke_count=records[0].attempts + 1,
                result=result,
                request_payload=event,
            )
        else:
            record = stream_failure_record(
                request_id=request_id,
                function_arn=self.arn,
                condition="Success",
                invoke_count=max(r.attempts for r in records) + 1,
                result=result,
                batch_info=self.source.batch_info(records),
                payload=event,
            )
        await self.send(self.on_success, record, "on-success")

    async def _stream_failed(
        self,
        records: Sequence[Record],
        condition: str,
        result: InvokeResult | None,
        request_id: str,
        invoke_count: int,
    ) -> None:
        if self.on_failure is None:
            self.warn(
                "dropped",
                "%d records dropped (%s) and no on-failure destination is set",
                len(records),
                condition,
            )
            return
        record = stream_failure_record(
            request_id=request_id or str(uuid.uuid4()),
            function_arn=self.arn,
            condition=condition,
            invoke_count=invoke_count,
            result=result,
            batch_info=self.source.batch_info(records),
            payload=self.source.build_event(records),
        )
        await self.send(self.on_failure, record, "on-failure")

    # ------------------------------------------------------------------ queues

    async def queue(self, batch: list[Entry], *, ordered: bool) -> bool:
        """Deliver a queue batch once. Returns True when records of an ordered lane went back
        to the queue (the caller then releases what is queued behind them). Filtered records
        riding in the batch are deleted with the successes, in record order."""
        records = [r for r, filtered in batch if not filtered]
        if not records:
            await self.ack([r for r, _ in batch])
            batch.clear()
            return False
        result, request_id, event = await self.invoke(records)
        if result.outcome is Outcome.SUCCESS:
            failed_from = self._partial(records, result)
            if failed_from is None:
                await self.ack([r for r, _ in batch])
                batch.clear()
                await self._succeed(records, result, request_id, event)
                return False
            if ordered:
                failed = records[failed_from:]
            else:
                identifiers = self.source.identifiers(records)
                known = set(identifiers)
                try:
                    bad = failed_identifiers(result.payload, known)
                except PartialBatchFailure:
                    bad = known
                failed = [r for r, i in zip(records, identifiers, strict=True) if i in bad]
            self._items_failed(len(failed), len(records))
            self.counters.invoked += len(records) - len(failed)
        else:
            failed = records
            self._function_failed(result, len(records), None)
        failed_ids = {id(r) for r in failed}
        self.counters.failed += len(failed)
        await self.ack([r for r, _ in batch if id(r) not in failed_ids])
        # Acknowledged: no longer the caller's to account for if we are cancelled below.
        batch[:] = [(r, False) for r in failed]
        await self.release(failed)
        batch.clear()
        return ordered

    # ------------------------------------------------------------------ asynchronous

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
        while True:
            if self._expired(record, time.time()):
                await self._async_failed(record, "EventAgeExceeded", result, request_id)
                return
            result, request_id, event = await self.invoke([record])
            if result.outcome is Outcome.SUCCESS:
                await self._succeed([record], result, request_id, event)
                return
            if result.outcome in _PLATFORM:
                continue  # expired while throttled: the age check above sends it on
            self._function_failed(result, 1, record.attempts + 1)
            record.attempts += 1
            self.counters.failed += 1
            if 0 <= self.max_retries < record.attempts:
                await self._async_failed(record, "RetriesExhausted", result, request_id)
                return
            self.counters.retries += 1
            await self.sleep(self.backoff.delay(record.attempts))

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
