"""The store's half of the lag figures (table ``mapping_lag``): one row per mapping and
replica running it, written by :class:`router.lag.LagWriter`, read through the
``lag`` / ``lag_unit`` columns of ``mapping_overview``."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from router.store import tables as t

_LAG = t.mapping_lag


class LagMethods:
    """The lag methods of :class:`router.store.SQLStore` (see :class:`router.abc.Store`)."""

    if TYPE_CHECKING:
        backend: str

        def _write(self, action: str) -> AbstractAsyncContextManager[AsyncConnection]: ...

    async def put_lag(
        self, mapping_uuid: str, replica_id: str, lag: float | None, unit: str = ""
    ) -> None:
        """This replica's lag of the mapping (``unit`` as :data:`router.lag.LAG_METRICS`
        names it); None removes it (the replica no longer runs the mapping)."""
        mine = (_LAG.c.mapping_uuid == mapping_uuid) & (_LAG.c.replica_id == replica_id)
        async with self._write(f"writing the lag of {mapping_uuid}") as conn:
            if lag is None:
                await conn.execute(sa.delete(_LAG).where(mine))
                return
            insert = postgresql.insert if self.backend == "postgresql" else sqlite.insert
            values = {
                "mapping_uuid": mapping_uuid,
                "replica_id": replica_id,
                "lag": lag,
                "unit": unit,
                "updated_at": datetime.now(UTC),
            }
            ins = insert(_LAG).values(values)
            await conn.execute(
                ins.on_conflict_do_update(
                    index_elements=[_LAG.c.mapping_uuid, _LAG.c.replica_id],
                    set_={"lag": lag, "unit": unit, "updated_at": values["updated_at"]},
                )
            )


__all__ = ["LagMethods"]
