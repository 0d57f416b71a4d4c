"""The stream delivery policy (Kafka partitions, shards): a lane never moves past a batch
it has not finished. A batch is retried in place until it succeeds, runs out of retries or
ages out; it is bisected on function errors if the mapping asks; a partial batch response
checkpoints before the first failed record and retries from there; records that are given up
go to the on-failure destination, and the lane moves on."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from router.models import InvokeResult, Outcome, Record
from router.pipeline.delivery import PLATFORM, Abandoned, Delivery
from router.pipeline.destination_records import stream_failure_record
from router.pipeline.lanes import Entry, Lane, entry_filtered, entry_record

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class _Segment:
    """Consecutive records of a stream batch that are retried together."""

    records: list[Record]
    retries: int = 0
    result: InvokeResult | None = None
    """The last failed invocation, for the destination record if the records age out."""
    request_id: str = ""


class StreamDelivery(Delivery):
    async def deliver(self, lane: Lane, batch: list[Entry]) -> None:
        """An unexpected error is retried with backoff (:meth:`stream` removes what it
        acknowledged from ``batch``)."""
        attempt = 0
        while True:
            try:
                await self.stream(batch)
                return
            except (Abandoned, asyncio.CancelledError):
                raise
            except Exception:
                attempt += 1
                logger.exception("mapping %s: batch failed unexpectedly", self.mapping.name)
                self.status.report("PROBLEM: internal error, see the router log")
                await self.sleep(self.backoff.delay(attempt))

    async def stream(self, batch: list[Entry]) -> None:
        """Deliver a stream batch in order; returns when every entry is acknowledged."""
        finished: set[int] = set()
        if any(map(entry_filtered, batch)):
            sent = [r for r, filtered in batch if not filtered]
            finished.update(id(r) for r, filtered in batch if filtered)
        else:
            sent = list(map(entry_record, batch))
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
            elif result.outcome in PLATFORM:
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
