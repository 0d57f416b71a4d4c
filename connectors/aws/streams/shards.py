"""Which shards of a stream to read, and where to start each: pure code, tested
table-driven.

A shard closed by a split or a merge has children; a child is read only once all of its
parents are finished (read to their end and acknowledged), so the records of one partition
key stay in order across a reshard. A shard's checkpoint row (:mod:`.progress`) says how far
it was acknowledged; a shard is finished when its checkpoint says so, or when one of its
children was started (a finished parent's row is deleted once all its children have rows).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from connectors.aws.streams.progress import FINISHED, SKIPPED

TRIM_HORIZON = "TRIM_HORIZON"
LATEST = "LATEST"
AT_TIMESTAMP = "AT_TIMESTAMP"
_AT = AT_TIMESTAMP + ":"


@dataclass(frozen=True, slots=True)
class Shard:
    id: str
    parents: tuple[str, ...] = ()
    ending: str | None = None
    """The shard's ending sequence number: set once the shard is closed (split, merged)."""

    @property
    def closed(self) -> bool:
        """The shard takes no more records."""
        return self.ending is not None


@dataclass(frozen=True, slots=True)
class Start:
    """Where to read a shard from: an iterator type with its argument, and the checkpoint
    row to write before reading (a shard that had none), or ``skip``: mark the shard
    finished without reading it."""

    iterator: str
    sequence: str | None = None
    timestamp: float | None = None
    marker: str | None = None
    skip: bool = False


def parse_checkpoint(value: str) -> Start:
    """The start a stored checkpoint row means (a sequence number or a start marker)."""
    if value.isdigit():
        return Start("AFTER_SEQUENCE_NUMBER", sequence=value)
    if value.startswith(_AT):
        return Start(AT_TIMESTAMP, timestamp=float(value[len(_AT) :]))
    if value in (TRIM_HORIZON, LATEST):
        return Start(value)
    raise ValueError(
        f"checkpoint {value!r}: expected a sequence number, TRIM_HORIZON, LATEST, "
        "AT_TIMESTAMP:<epoch seconds>, SHARD_END or SKIPPED"
    )


def at_timestamp(when: float) -> str:
    return f"{_AT}{when:.3f}"


class ShardPlan:
    """The shards of one listing against the mapping's checkpoint rows."""

    def __init__(self, shards: Iterable[Shard], checkpoints: Mapping[str, str]) -> None:
        self.shards = {s.id: s for s in shards}
        self.checkpoints = checkpoints
        self.children: dict[str, list[str]] = {}
        for shard in self.shards.values():
            for parent in shard.parents:
                self.children.setdefault(parent, []).append(shard.id)
        self._started: dict[str, bool] = {}

    def started(self, shard_id: str) -> bool:
        """The shard or one of its descendants has a checkpoint row."""
        known = self._started.get(shard_id)
        if known is None:
            self._started[shard_id] = False  # a cycle (never in a real listing) ends here
            known = shard_id in self.checkpoints or any(
                self.started(c) for c in self.children.get(shard_id, ())
            )
            self._started[shard_id] = known
        return known

    def finished(self, shard_id: str) -> bool:
        if self.checkpoints.get(shard_id) in FINISHED:
            return True
        return any(self.started(c) for c in self.children.get(shard_id, ()))

    def listed_parents(self, shard: Shard) -> list[str]:
        return [p for p in shard.parents if p in self.shards]

    def readable(self) -> list[Shard]:
        """Shards that are not finished and whose listed parents all are, in listing
        order."""
        out: list[Shard] = []
        for shard in self.shards.values():
            if self.finished(shard.id):
                continue
            if all(self.finished(p) for p in self.listed_parents(shard)):
                out.append(shard)
        return out

    def start(
        self, shard: Shard, position: str, timestamp: float | None, now: float, pin: bool
    ) -> Start:
        """Where ``shard`` (readable) starts. A shard without a row starts at the start of
        the shard when a parent was read, else at the mapping's ``position``; ``LATEST`` is
        pinned to ``now`` as ``AT_TIMESTAMP`` when ``pin`` (the service reads from a time),
        so that a restart before the first record does not skip what came in between. A
        closed shard is skipped by a mapping that starts at ``LATEST``."""
        value = self.checkpoints.get(shard.id)
        if value is not None:
            return parse_checkpoint(value)
        parents = self.listed_parents(shard)
        if any(self.checkpoints.get(p) != SKIPPED for p in parents):
            return Start(TRIM_HORIZON, marker=TRIM_HORIZON)
        if position == AT_TIMESTAMP and timestamp is not None:
            return Start(AT_TIMESTAMP, timestamp=timestamp, marker=at_timestamp(timestamp))
        if position == LATEST:
            if shard.closed:
                return Start(LATEST, skip=True)
            if pin:
                return Start(AT_TIMESTAMP, timestamp=now, marker=at_timestamp(now))
            return Start(LATEST, marker=LATEST)
        return Start(TRIM_HORIZON, marker=TRIM_HORIZON)

    def cleanable(self) -> list[str]:
        """Rows of finished shards no longer needed: every child of the shard has a row of
        its own, or the shard is gone from the stream (trimmed) and a child started."""
        out: list[str] = []
        for shard_id, value in self.checkpoints.items():
            if value not in FINISHED:
                continue
            children = self.children.get(shard_id, ())
            if children and all(c in self.checkpoints for c in children):
                out.append(shard_id)
        return out
