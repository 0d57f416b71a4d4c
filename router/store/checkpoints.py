"""Checkpoint writes of one mapping, group-committed.

Sources that acknowledge one record per batch (a file, an object) write a checkpoint per
acknowledgement. At a trickle of hundreds a second that is hundreds of commits a second, and
every batch holds its concurrency slot until its commit is done. :class:`CheckpointWriter`
writes the acknowledgements made while a write is in flight together in the next one: one
transaction for many records, and an acknowledgement still returns only once its checkpoint
is committed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from router.aio import GroupCommit

PutCheckpoints = Callable[[str, Mapping[str, str]], Awaitable[None]]
"""``Store.put_checkpoints``."""

GROUP_LIMIT = 500
"""Acknowledgements written at most in one transaction."""


class CheckpointWriter:
    """``put_checkpoints(mapping_uuid, ...)`` (the store's) for concurrent callers, in as
    few transactions as possible (one write in flight at a time, so a key's later value is
    always written after its earlier one)."""

    def __init__(
        self, put_checkpoints: PutCheckpoints, mapping_uuid: str, limit: int = GROUP_LIMIT
    ) -> None:
        self._put_checkpoints = put_checkpoints
        self.mapping_uuid = mapping_uuid
        self._group: GroupCommit[Mapping[str, str]] = GroupCommit(self._write, limit)

    async def put(self, values: Mapping[str, str]) -> None:
        """Write ``values``; returns once they are committed (raises what the write
        raised)."""
        if values:
            await self._group.submit(values)

    async def _write(self, acks: list[Mapping[str, str]]) -> None:
        values: dict[str, str] = {}
        for ack in acks:
            values.update(ack)  # in order: the later value of a key wins
        await self._put_checkpoints(self.mapping_uuid, values)

    async def aclose(self) -> None:
        """Wait for the writes in flight."""
        await self._group.aclose()
