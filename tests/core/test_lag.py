"""The lag figure of a mapping from its source's metrics, and what the router writes of it
to the store (``mapping_overview``)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import sqlalchemy as sa

from router import lag as lag_module
from router.abc import MetricFamily, Source
from router.lag import Lag, LagWriter, lag_of
from router.store import SQLStore
from tests.store.helpers import make_row


def family(name: str, *values: float) -> MetricFamily:
    return MetricFamily(
        name=name,
        type="gauge",
        help="",
        samples=[(name, {"mapping": "m", "lane": str(i)}, v) for i, v in enumerate(values)],
    )


def test_lanes_add_up_by_kind() -> None:
    assert lag_of([family("router_lane_lag", 3, 4)]) == Lag(7, "records behind")
    age = family("router_stream_iterator_age_milliseconds", 250, 900)
    assert lag_of([family("router_stream_shards_held", 2), age]) == Lag(900, "ms behind")
    assert lag_of([family("router_lane_lag")]) is None  # no lane fetched yet
    assert lag_of([]) is None
    assert str(Lag(12.0, "records behind")) == "12 records behind"
    assert str(Lag(1.234, "s fire delay")) == "1.2 s fire delay"


class Reporting:
    """Stands in for a source: reports what the test sets."""

    def __init__(self) -> None:
        self.families: list[MetricFamily] = []

    def metrics(self) -> Sequence[MetricFamily]:
        return self.families


async def test_the_router_writes_what_changed(
    sqlite_store: SQLStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lag_module, "LAG_WRITE_INTERVAL", 0.0)
    row = make_row("orders")
    await sqlite_store.create_mapping(row)
    source = Reporting()
    sources: dict[str, Source] = {row.uuid: source}  # type: ignore[dict-item]
    writer = LagWriter(sqlite_store, "replica-1")

    async def overview() -> tuple[object, ...]:
        async with sqlite_store.engine.connect() as conn:
            result = await conn.execute(sa.text("SELECT lag, lag_unit FROM mapping_overview"))
            return tuple(result.one())

    await writer.write(sources)
    assert await overview() == (None, None)
    source.families = [family("router_directory_files_waiting", 5)]
    await writer.write(sources)
    assert await overview() == (5, "files waiting")
    source.families = [family("router_directory_files_waiting", 2)]
    await writer.write(sources)
    assert await overview() == (2, "files waiting")
    await writer.write({})  # the mapping stopped here
    assert await overview() == (None, None)
    assert writer.written == {}
