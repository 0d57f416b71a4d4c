"""Checkpoint bookkeeping for one shard: which sequence number may be checkpointed.

Pure code (no I/O), tested table-driven.

A shard's records are read in sequence order; with ``parallelization_factor > 1`` several
lanes share the shard and finish out of order. The checkpoint (the last sequence number
acknowledged, as Lambda keeps it) only advances over the contiguous prefix of acknowledged
records: after a restart the shard is read again after that record, so nothing acknowledged
out of order is skipped while something before it is still missing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

SHARD_END = "SHARD_END"
"""Checkpoint of a shard read to its end (closed by a split or a merge) and acknowledged
whole: its children may be read."""
SKIPPED = "SKIPPED"
"""Checkpoint of a closed shard a mapping starting at ``LATEST`` never read."""
FINISHED = frozenset({SHARD_END, SKIPPED})


class ShardProgress:
    """Outstanding sequence numbers of one shard, in read order.

    ``fetched`` registers sequence numbers as they are read; ``ack_run`` marks a run of them
    as handled (cheap when it is the next run in read order, the usual case). ``checkpoint``
    is what the store should hold: the last sequence number of the acknowledged prefix, or
    ``SHARD_END`` once the shard was read to its end and everything was acknowledged.
    """

    __slots__ = (
        "_done",
        "_head",
        "_last_int",
        "_pending",
        "acked",
        "committed",
        "drained",
        "ended",
        "last_read",
    )

    _COMPACT_AT = 4096

    def __init__(self, start: str | None = None) -> None:
        self._pending: list[str] = []
        self._head = 0
        self._done: set[str] = set()
        self._last_int = -1
        self.acked: str | None = start
        """The last sequence number of the acknowledged prefix (the resume point)."""
        self.last_read: str | None = start
        """The last sequence number read (where an expired iterator is renewed)."""
        self.committed: str | None = start
        """What the store holds (set by the writer)."""
        self.ended = False
        """The shard was read to its end (no next iterator)."""
        self.drained = asyncio.Event()
        """Set while nothing read is outstanding."""
        self.drained.set()

    def fetched(self, sequences: Iterable[str]) -> None:
        pending = self._pending
        before = len(pending)
        pending.extend(sequences)
        if len(pending) > before:
            self.last_read = pending[-1]
            self._last_int = int(pending[-1])
            self.drained.clear()

    def end(self) -> None:
        self.ended = True

    def ack(self, sequence: str) -> bool:
        """Mark ``sequence`` handled. False when it is not outstanding here (read before the
        shard was given up and acknowledged after it): such acks are ignored."""
        pending = self._pending
        head = self._head
        if head == len(pending) or sequence in self._done:
            return False
        if sequence == pending[head]:
            head += 1
            done = self._done
            while head < len(pending) and pending[head] in done:
                done.discard(pending[head])
                head += 1
            self._advance(head)
            return True
        number = int(sequence)
        if number < int(pending[head]) or number > self._last_int:
            return False
        self._done.add(sequence)
        return True

    def ack_run(self, sequences: list[str]) -> bool:
        """``ack`` each of ``sequences`` (in read order). True when any was outstanding."""
        head = self._head
        end = head + len(sequences)
        if not self._done and self._pending[head:end] == sequences:
            self._advance(end)
            return True
        changed = False
        for sequence in sequences:
            if self.ack(sequence):
                changed = True
        return changed

    def _advance(self, head: int) -> None:
        pending = self._pending
        if head:
            self.acked = pending[head - 1]
        if head == len(pending):
            pending.clear()
            self._done.clear()
            head = 0
            self.drained.set()
        elif head >= self._COMPACT_AT and head * 2 >= len(pending):
            del pending[:head]
            head = 0
        self._head = head

    @property
    def outstanding(self) -> int:
        return len(self._pending) - self._head - len(self._done)

    @property
    def finished(self) -> bool:
        """Read to its end and everything acknowledged."""
        return self.ended and self._head == len(self._pending)

    @property
    def checkpoint(self) -> str | None:
        if self.finished:
            return SHARD_END
        return self.acked

    @property
    def dirty(self) -> bool:
        target = self.checkpoint
        return target is not None and target != self.committed
