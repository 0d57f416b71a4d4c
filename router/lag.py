"""How far behind each mapping is: one figure per mapping from its source's lag metric
(Kafka records behind, SQS messages waiting, RabbitMQ messages ready, Redis / NATS records not
handed out yet, stream iterator age, directory files waiting, schedule fire delay). The
metrics themselves are the sources' own (``Source.metrics``); this reads them back for the
console and the store's ``mapping_overview``."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from router.abc import MetricFamily, Source, Store

LAG_WRITE_INTERVAL = 5.0
"""Seconds between two writes of a mapping's lag to the store."""

LAG_METRICS: dict[str, tuple[str, Callable[[Iterable[float]], float]]] = {
    "router_lane_lag": ("records behind", sum),
    "router_sqs_approximate_messages": ("messages waiting", sum),
    "router_source_lag_records": ("records waiting", sum),
    "router_rabbitmq_messages_ready": ("messages waiting", sum),
    "router_stream_iterator_age_milliseconds": ("ms behind", max),
    "router_directory_files_waiting": ("files waiting", sum),
    "router_schedule_fire_delay_seconds": ("s fire delay", max),
}
"""Lag metric name: (unit, how the lanes add up: counts are summed, ages take the oldest)."""


@dataclass(frozen=True, slots=True)
class Lag:
    value: float
    unit: str

    def __str__(self) -> str:
        value = int(self.value) if float(self.value).is_integer() else round(self.value, 1)
        return f"{value} {self.unit}"


def lag_of(families: Sequence[MetricFamily]) -> Lag | None:
    """The mapping's lag from its source's metric families; None when the source reports
    none (yet)."""
    for family in families:
        known = LAG_METRICS.get(family.name)
        if known is None:
            continue
        values = [value for sample, _, value in family.samples if sample == family.name]
        if values:
            unit, combine = known
            return Lag(float(combine(values)), unit)
    return None


class LagWriter:
    """Writes this replica's lag of each mapping it runs to the store (``mapping_lag``, shown
    by ``mapping_overview``): what changed, at most every :data:`LAG_WRITE_INTERVAL`
    seconds; a mapping no longer running here has its row removed."""

    def __init__(self, store: Store, replica_id: str) -> None:
        self.store = store
        self.replica_id = replica_id
        self.written: dict[str, Lag] = {}
        self._last = 0.0

    async def write(self, sources: Mapping[str, Source]) -> None:
        """``sources``: the running mappings' sources by mapping uuid."""
        now = time.monotonic()
        if now - self._last < LAG_WRITE_INTERVAL:
            return
        self._last = now
        current = {uid: lag_of(source.metrics()) for uid, source in sources.items()}
        for uid in sorted(set(self.written) | set(current)):
            lag = current.get(uid)
            if self.written.get(uid) == lag:
                continue
            if lag is None:
                await self.store.put_lag(uid, self.replica_id, None)
                del self.written[uid]
            else:
                await self.store.put_lag(uid, self.replica_id, lag.value, lag.unit)
                self.written[uid] = lag


__all__ = ["LAG_METRICS", "LAG_WRITE_INTERVAL", "Lag", "LagWriter", "lag_of"]
