"""Offset bookkeeping for the Kafka source: which offset may be committed, and operator resets.

Pure code (no I/O), tested table-driven.

With ``parallelization_factor > 1`` several lanes share one partition and finish out of order.
Kafka only stores one committed offset per partition ("everything before this was handled"),
so the committed offset may only advance over the contiguous prefix of acknowledged records:
``committed = the first fetched offset not yet acknowledged`` (or, when all fetched records
are acknowledged, the offset after the last one fetched).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

__all__ = [
    "MIRROR_PREFIX",
    "RESET_PREFIX",
    "PartitionOffsets",
    "ResetTarget",
    "checkpoint_key",
    "mirror_rows",
    "plan_resets",
]


class PartitionOffsets:
    """Outstanding offsets of one partition, in fetch order.

    ``fetched`` registers offsets as they are read (increasing); ``ack`` marks any of them as
    handled, in any order (``ack_run`` a run of them, cheaply when it is the next run in
    fetch order, the usual case). ``committable`` is the offset Kafka should store. ``None``
    until something was fetched or a start offset was set: there is nothing to commit yet.
    """

    __slots__ = ("_done", "_head", "_next", "_pending", "committed")

    _COMPACT_AT = 4096

    def __init__(self, start: int | None = None) -> None:
        # Outstanding offsets are _pending[_head:]; the acknowledged head is dropped in
        # chunks, which keeps acknowledging a run of offsets a C-speed slice comparison.
        self._pending: list[int] = []
        self._head = 0
        self._done: set[int] = set()
        self._next: int | None = start
        self.committed: int | None = None
        """The last offset known to be committed (set by the committer)."""

    def fetched(self, offsets: Iterable[int]) -> None:
        pending = self._pending
        before = len(pending)
        pending.extend(offsets)
        if len(pending) > before:
            self._next = pending[-1] + 1

    def ack(self, offset: int) -> bool:
        """Mark ``offset`` handled. False when it is not outstanding here (a record fetched
        before a rebalance, acknowledged after it): such acks are ignored."""
        pending = self._pending
        head = self._head
        if head == len(pending) or offset < pending[head] or offset in self._done:
            return False
        if offset == pending[head]:
            head += 1
            done = self._done
            if done:
                end = len(pending)
                while head < end and pending[head] in done:
                    done.discard(pending[head])
                    head += 1
            self._advance(head)
            return True
        if self._next is None or offset >= self._next:
            return False
        self._done.add(offset)
        return True

    def ack_run(self, offsets: list[int]) -> bool:
        """``ack`` each of ``offsets`` (increasing). True when any was outstanding."""
        head = self._head
        end = head + len(offsets)
        if not self._done and self._pending[head:end] == offsets:
            self._advance(end)
            return True
        changed = False
        for offset in offsets:
            if self.ack(offset):
                changed = True
        return changed

    def _advance(self, head: int) -> None:
        pending = self._pending
        if head == len(pending):
            pending.clear()
            self._done.clear()
            head = 0
        elif head >= self._COMPACT_AT and head * 2 >= len(pending):
            del pending[:head]
            head = 0
        self._head = head

    @property
    def committable(self) -> int | None:
        if self._head < len(self._pending):
            return self._pending[self._head]
        return self._next

    @property
    def dirty(self) -> bool:
        """True when ``committable`` is ahead of what was committed."""
        target = self.committable
        return target is not None and target != self.committed

    @property
    def outstanding(self) -> int:
        return len(self._pending) - self._head - len(self._done)


# ---------------------------------------------------------------------------------------------
# Checkpoints mirrored into the store, and resets written there by operators.

RESET_PREFIX = "reset:"
MIRROR_PREFIX = "_mirrored:"
"""``_mirrored:<topic>:<partition>`` holds the offset this router last wrote next to the
``<topic>:<partition>`` row: an operator who edits the latter makes the two differ, which
marks the edit as a reset. One pair per partition, so replicas never overwrite each other."""


def checkpoint_key(topic: str, partition: int) -> str:
    return f"{topic}:{partition}"


def mirror_rows(offsets: Mapping[tuple[str, int], int]) -> dict[str, str]:
    """The store rows that show committed offsets: ``<topic>:<partition>`` and its twin."""
    rows: dict[str, str] = {}
    for (topic, partition), offset in offsets.items():
        key = checkpoint_key(topic, partition)
        rows[key] = rows[MIRROR_PREFIX + key] = str(offset)
    return rows


@dataclass(frozen=True, slots=True)
class ResetTarget:
    """Where an operator wants a partition to resume."""

    offset: int | None = None
    timestamp_ms: int | None = None
    earliest: bool = False
    latest: bool = False

    @classmethod
    def parse(cls, value: str) -> ResetTarget:
        """``123`` (offset), ``TRIM_HORIZON``/``earliest``, ``LATEST``/``latest``, or an ISO
        8601 time (naive = UTC). Raises ValueError otherwise."""
        text = value.strip()
        upper = text.upper()
        if upper in ("TRIM_HORIZON", "EARLIEST"):
            return cls(earliest=True)
        if upper in ("LATEST", "END"):
            return cls(latest=True)
        if text.lstrip("-").isdigit():
            offset = int(text)
            if offset < 0:
                raise ValueError(f"offset must be >= 0, got {offset}")
            return cls(offset=offset)
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return cls(timestamp_ms=int(when.timestamp() * 1000))


@dataclass(frozen=True, slots=True)
class ResetPlan:
    """Resets found in the store: per partition, per topic (``reset:<topic>:*``) and for
    every partition (``reset:*``). ``keys`` are the rows to delete once applied."""

    partitions: Mapping[tuple[str, int], ResetTarget]
    topics: Mapping[str, ResetTarget]
    everything: ResetTarget | None
    keys: tuple[str, ...]
    problems: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.partitions or self.topics or self.everything)

    def target(self, topic: str, partition: int) -> ResetTarget | None:
        found = self.partitions.get((topic, partition))
        if found is None:
            found = self.topics.get(topic, self.everything)
        return found


def plan_resets(rows: Mapping[str, str], topics: Iterable[str]) -> ResetPlan:
    """Read operator resets out of a mapping's checkpoint rows.

    Two forms: explicit ``reset:...`` rows, and ``<topic>:<partition>`` rows whose value no
    longer equals what the router last mirrored (their ``_mirrored:`` twin)."""
    wanted = set(topics)
    partitions: dict[tuple[str, int], ResetTarget] = {}
    by_topic: dict[str, ResetTarget] = {}
    everything: ResetTarget | None = None
    keys: list[str] = []
    problems: list[str] = []
    for key, value in rows.items():
        if key.startswith(MIRROR_PREFIX):
            continue
        explicit = key.startswith(RESET_PREFIX)
        name = key[len(RESET_PREFIX) :] if explicit else key
        if not explicit and rows.get(MIRROR_PREFIX + key) == value:
            continue
        topic, sep, part = name.rpartition(":")
        if not explicit and (not sep or not part.isdigit() or topic not in wanted):
            continue  # not ours: another kind of row, or a topic no longer subscribed
        try:
            target = ResetTarget.parse(value)
        except ValueError as e:
            problems.append(f"checkpoint row {key!r} = {value!r}: {e}")
            if explicit:
                keys.append(key)
            continue
        if name == "*":
            everything = target
        elif sep and part == "*":
            by_topic[topic] = target
        elif sep and part.isdigit():
            partitions[(topic, int(part))] = target
        else:
            problems.append(
                f"checkpoint row {key!r}: expected reset:<topic>:<partition>, "
                "reset:<topic>:* or reset:*"
            )
        if explicit:
            keys.append(key)
    return ResetPlan(
        partitions=partitions,
        topics=by_topic,
        everything=everything,
        keys=tuple(keys),
        problems=tuple(problems),
    )
