"""How a stream source shares its shards with the other replicas on the store: the
leases it takes, renews and gives up, following the rules of :mod:`.leases`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import zlib
from typing import TYPE_CHECKING, ClassVar

from connectors.aws.streams.leases import (
    MEMBER_PREFIX,
    dead_members,
    live_members,
    member_row,
    should_yield,
    to_take,
)
from connectors.aws.streams.progress import SKIPPED
from connectors.aws.streams.shards import Shard, ShardPlan, Start
from router.abc import Sink, SourceContext

if TYPE_CHECKING:
    from connectors.aws.streams.source import StreamSettings

logger = logging.getLogger(__name__)


class ShardLeasing:
    """The lease part of :class:`~connectors.aws.streams.source.StreamSource`."""

    context: SourceContext
    settings: StreamSettings
    pins_latest: ClassVar[bool]
    _leased: set[str]
    _rows: dict[str, str]
    _readers: dict[str, asyncio.Task[None]]
    _position: str
    _timestamp: float | None

    if TYPE_CHECKING:

        @property
        def where(self) -> str: ...
        async def _write_rows(self, rows: dict[str, str]) -> None: ...
        async def _delete_rows(self, keys: list[str]) -> None: ...
        async def _give_up(self, shard_ids: list[str]) -> None: ...
        def _start_reader(self, sink: Sink, shard: Shard, start: Start) -> None: ...

    def _lease_key(self, shard_id: str) -> str:
        mapping = self.context.mapping
        return f"{mapping.source.type}:{mapping.uuid}:{shard_id}"

    async def _lease(self, sink: Sink, shard_id: str) -> bool:
        key = self._lease_key(shard_id)
        owner = self.context.replica_id
        ttl = self.settings.lease_duration
        return await sink.supervisor.retry(
            f"taking the lease of {shard_id}",
            lambda: self.context.store.acquire_lease(key, owner, ttl),
        )

    async def _plan(self, sink: Sink, shards: list[Shard]) -> None:
        """Renew the leases held, give up lost ones, take free shards up to the fair share,
        give one up for a starving replica (see :mod:`.leases`), start readers."""
        me = self.context.replica_id
        leasing = bool(self.context.mapping.uuid)
        while True:
            plan = ShardPlan(shards, self._rows)
            readable = plan.readable()
            readable_ids = {s.id for s in readable}
            now = time.time()
            skipped = {
                s.id: SKIPPED
                for s in readable
                if plan.start(s, self._position, self._timestamp, now, self.pins_latest).skip
            }
            if skipped:
                await self._write_rows(skipped)
                continue  # their children may be readable now
            break
        if leasing:
            for shard_id in sorted(self._leased):
                if shard_id not in readable_ids and shard_id not in self._readers:
                    await self._drop(shard_id, release=True)  # finished, or gone
                elif not await self._lease(sink, shard_id):
                    logger.warning(
                        "%s: lost the lease of %s to another replica", self.where, shard_id
                    )
                    await self._drop(shard_id, release=False)
            members = live_members(self._rows, now, self.settings.lease_duration)
            dead = dead_members(self._rows, now, self.settings.lease_duration)
            if dead:
                try:
                    await self._delete_rows(dead)
                except Exception as e:  # noqa: BLE001 - tried again next round
                    logger.warning("%s: deleting member rows of gone replicas: %s", self.where, e)
            members[me] = len(self._leased)
            want = to_take(len(self._leased), len(readable), len(members))
            # Replicas start their tries at different shards, so they seldom race for one.
            offset = zlib.crc32(me.encode()) % max(1, len(readable))
            for shard in readable[offset:] + readable[:offset]:
                if want <= 0:
                    break
                if shard.id in self._leased:
                    continue
                if await self._lease(sink, shard.id):
                    self._leased.add(shard.id)
                    want -= 1
            members[me] = len(self._leased)
            free = max(0, len(readable) - sum(members.values()))
            if should_yield(me, members, len(readable), free):
                shard_id = max(self._leased)
                logger.info(
                    "%s: giving %s up for a replica with fewer shards", self.where, shard_id
                )
                await self._drop(shard_id, release=True)
            await self._publish(sink)
        else:
            self._leased.update(readable_ids)
        # Readers may have finished shards while the leases were renewed: plan again.
        plan = ShardPlan(shards, self._rows)
        for shard in plan.readable():
            if shard.id in self._leased and shard.id not in self._readers:
                start = plan.start(shard, self._position, self._timestamp, now, self.pins_latest)
                self._start_reader(sink, shard, start)
        clean = plan.cleanable()
        if clean:
            await self._delete_rows(clean)

    async def _publish(self, sink: Sink) -> None:
        row = {MEMBER_PREFIX + self.context.replica_id: member_row(time.time(), len(self._leased))}
        uuid = self.context.mapping.uuid
        await sink.supervisor.retry(
            f"writing the member row of {self.where}",
            lambda: self.context.store.put_checkpoints(uuid, row),
        )

    async def _drop(self, shard_id: str, *, release: bool) -> None:
        """Stop reading ``shard_id`` (its in-flight batches finish first) and, when
        ``release``, let another replica have its lease at once."""
        task = self._readers.pop(shard_id, None)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await self._give_up([shard_id])
        self._leased.discard(shard_id)
        if release:
            key = self._lease_key(shard_id)
            try:
                await self.context.store.release_lease(key, self.context.replica_id)
            except Exception as e:  # noqa: BLE001 - the lease expires by itself
                logger.warning("%s: releasing the lease of %s: %s", self.where, shard_id, e)

    async def _release_all(self) -> None:
        """On close: release the leases held and the member row, so that the other replicas
        take the shards at once instead of after the lease duration."""
        uuid = self.context.mapping.uuid
        if not uuid:
            return
        me = self.context.replica_id
        for shard_id in sorted(self._leased):
            with contextlib.suppress(Exception):
                await self.context.store.release_lease(self._lease_key(shard_id), me)
        self._leased.clear()
        with contextlib.suppress(Exception):
            await self.context.store.delete_checkpoints(uuid, [MEMBER_PREFIX + me])
