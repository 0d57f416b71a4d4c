"""The queue delivery policy (SQS standard and FIFO): a batch is invoked once; what
succeeded is deleted, failures are left to the queue's visibility timeout and redrive policy
(as Lambda does for SQS). Filtered messages of an unordered queue are deleted as they arrive;
in an ordered lane (a FIFO message group) nothing overtakes a message that goes back to the
queue: what waits behind it is released too."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from router.models import Outcome, Record
from router.pipeline.batch_responses import PartialBatchFailure, failed_identifiers
from router.pipeline.delivery import Abandoned, Delivery
from router.pipeline.lanes import Entry, Lane
from router.secrets import redact

logger = logging.getLogger(__name__)


class QueueDelivery(Delivery):
    ages_out = False
    """A message lives as long as the queue keeps it."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.batch_slots = self.concurrency

    def ordered(self, lane: Any) -> bool:
        """A lane of None is an unordered queue (SQS standard): its batches run at once."""
        return lane is not None

    def sort_filtered(self, entries: list[Entry]) -> tuple[list[Entry], list[Record]]:
        """Unordered messages that match no pattern are deleted at once (as AWS does)."""
        now = [r for r, filtered in entries if filtered and r.lane is None]
        if not now:
            return entries, []
        return [e for e in entries if not e[1] or e[0].lane is not None], now

    async def delete_filtered(self, records: Sequence[Record]) -> None:
        logger.info(
            "mapping %s: %d records did not match the filter and were deleted",
            self.mapping.name,
            len(records),
        )
        try:
            await self.ack(records)
        except Abandoned:
            self.room.give(len(records))
        except asyncio.CancelledError:
            # The source's receive loop was cancelled mid-delete: give the room back, and
            # let the queue redeliver (and filter) them rather than hold them forever.
            self.room.give(len(records))
            await self.give_back(records)
            raise

    async def deliver(self, lane: Lane, batch: list[Entry]) -> None:
        if await self.queue(batch, ordered=lane.key is not None) and lane.entries:
            # FIFO: nothing may overtake a message that goes back to the queue.
            rest = lane.clear()
            self.room.give(len(rest))
            await self.source.release([r for r, _ in rest])

    async def give_back(self, records: Sequence[Record]) -> None:
        """Release them now. A failure is logged: the queue makes them visible again when
        their visibility timeout ends anyway."""
        if not records:
            return
        try:
            await self.source.release(records)
        except Exception as e:  # noqa: BLE001 - see above
            self.warn(
                "release",
                "%d records not released to the queue (%s); they come back when their "
                "visibility timeout ends",
                len(records),
                redact(str(e)) or type(e).__name__,
            )

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
