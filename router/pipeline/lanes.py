"""Lanes: the records of one lane (a partition, a shard, a message group, a key) wait here
in order until a batch is cut from them."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Hashable
from itertools import repeat
from operator import attrgetter, itemgetter

from router.models import Record
from router.pipeline.batcher import EVENT_OVERHEAD, RECORD_OVERHEAD, BatchPolicy

Entry = tuple[Record, bool]
"""``(record, filtered)``: filtered records ride along in their lane so that acks stay in
order."""

# Getters for map() over many entries or records at once (the loop runs in C).
entry_record = itemgetter(0)
entry_filtered = itemgetter(1)
record_size = attrgetter("size")
record_lane = attrgetter("lane")


class Lane:
    __slots__ = ("count", "entries", "key", "nbytes", "oldest", "task", "wake")

    def __init__(self, key: Hashable) -> None:
        self.key = key
        self.entries: deque[Entry] = deque()
        self.count = 0  # records to send (not filtered)
        self.nbytes = 0
        self.oldest = 0.0  # monotonic time the oldest waiting record arrived in the lane
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    def clear(self) -> list[Entry]:
        """Take every waiting entry out of the lane."""
        entries = list(self.entries)
        if entries:
            self.entries.clear()
            self.count = 0
            self.nbytes = 0
        return entries

    def take(self, policy: BatchPolicy) -> list[Entry]:
        """Cut the next batch from the front of the lane."""
        entries = self.entries
        if self.nbytes + EVENT_OVERHEAD + RECORD_OVERHEAD * self.count <= policy.max_bytes:
            # Everything waiting fits in the payload limit: no record's size needs a look.
            if self.count <= policy.batch_size:
                # One batch takes it all (filtered entries ride along).
                batch = list(entries)
                entries.clear()
                self.count = 0
                self.nbytes = 0
                return batch
            if self.count == len(entries):
                # Nothing rides along: the batch is the first batch_size entries.
                # popleft() batch_size times, in C.
                batch = list(map(deque.popleft, repeat(entries, policy.batch_size)))
                self.count -= len(batch)
                self.nbytes -= sum(map(record_size, map(entry_record, batch)))
                self.oldest = time.monotonic()
                return batch
        n = policy.cut(None if f else r.size for r, f in entries)
        batch = list(map(deque.popleft, repeat(entries, n)))
        for record, filtered in batch:
            if not filtered:
                self.count -= 1
                self.nbytes -= record.size
        if self.count:
            self.oldest = time.monotonic()
        return batch
