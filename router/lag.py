"""How far behind each mapping is: one figure per mapping from its source's lag metric
(Kafka records behind, SQS messages waiting, RabbitMQ messages ready, Redis / NATS records not
handed out yet, stream iterator age, directory files waiting, schedule fire delay). The
metrics themselves are the sources' own (``Source.metrics``); this reads them back for the
console and the store's ``mapping_overview``."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from router.abc import MetricFamily

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


__all__ = ["LAG_METRICS", "Lag", "lag_of"]
