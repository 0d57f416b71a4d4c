"""Batching rules (pure): when a lane's pending records form a batch, and how many go in it.

A batch is cut when the batch size is reached, the payload would pass 6 MB, or the batching
window (counted from the oldest waiting record) has passed, whichever comes first.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from router.models import MAX_PAYLOAD_BYTES

# Envelope bytes the event adds around its records ({"Records": [...]} and separators).
EVENT_OVERHEAD = 512
RECORD_OVERHEAD = 2


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchPolicy:
    batch_size: int
    window: float = 0.0
    max_bytes: int = MAX_PAYLOAD_BYTES

    def wait_time(self, count: int, nbytes: int, oldest: float, now: float) -> float:
        """Seconds to wait before cutting a batch from ``count`` pending records of
        ``nbytes`` total; 0 means cut now. Call only with ``count > 0``."""
        if count >= self.batch_size or nbytes + EVENT_OVERHEAD >= self.max_bytes:
            return 0.0
        return max(0.0, oldest + self.window - now)

    def cut(self, sizes: Iterable[int | None]) -> int:
        """How many leading entries go into the next batch. ``sizes`` gives each entry's size,
        or None for an entry that rides along without being sent (a filtered record). At most
        ``batch_size`` records are sent, no more than fit in ``max_bytes``, but always at
        least one (a record too large on its own is sent alone and fails as it would on AWS).
        Entries riding along after the last sent record are included up to the next record
        that does not fit."""
        total = EVENT_OVERHEAD
        sent = 0
        taken = 0
        for size in sizes:
            if size is not None:
                if sent == self.batch_size:
                    break
                total += size + RECORD_OVERHEAD
                if total > self.max_bytes and sent > 0:
                    break
                sent += 1
            taken += 1
        return taken
