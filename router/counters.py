"""The counters of a mapping, kept by its pipeline on the per-record path (plain integers),
read by the metrics and flushed to the store's ``mapping_stats``."""

from __future__ import annotations

from dataclasses import Field, dataclass, field, fields
from datetime import datetime
from typing import Any

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
"""Upper bounds (seconds) of the invocation latency histogram."""
LATENCY_METRIC = "router_invoke_duration_seconds"
LATENCY_HELP = "Function invocation latency"


def _counter(metric: str, help_text: str) -> Any:
    """A counter field: 0 to start with; ``metric`` is its name on ``/metrics``."""
    return field(default=0, metadata={"metric": metric, "help": help_text})


@dataclass(slots=True)
class Counters:
    """Per-mapping counters; the app flushes them to the store and to /metrics (see
    docs/operations.md for what each one counts)."""

    records_in: int = _counter("router_records_in_total", "Records read from the source")
    filtered: int = _counter(
        "router_records_filtered_total", "Records that matched no filter pattern"
    )
    invoked: int = _counter(
        "router_records_invoked_total",
        "Records delivered to the function (once per record, however many attempts)",
    )
    """Records delivered: the function took them (success, and not named in a partial batch
    response). Once per record, however many attempts it took."""
    attempts: int = _counter(
        "router_record_attempts_total",
        "Records sent to the function, once per attempt (retries, throttles included)",
    )
    """Records sent to the function, once per attempt (throttled and unreachable included)."""
    invocations: int = _counter("router_invocations_total", "Function invocations")
    failed: int = _counter(
        "router_records_failed_total", "Records in failed invocations, per attempt"
    )
    retries: int = _counter("router_retries_total", "Retries after function errors")
    throttles: int = _counter("router_throttles_total", "Throttled or unreachable invocations")
    destination_sends: int = _counter(
        "router_destination_sends_total", "Records sent to destinations"
    )
    batch_sizes_sum: int = _counter("router_batch_records_total", "Records per batch, summed")
    rejected: int = _counter(
        "router_records_rejected_total", "Items the source could not turn into events"
    )
    """Items the source could not turn into events (skipped, see ``Sink.reject``)."""
    last_invoke: datetime | None = None
    latency_sum: float = 0.0
    latency_buckets: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))

    def observe_latency(self, seconds: float) -> None:
        self.latency_sum += seconds
        for i, bound in enumerate(LATENCY_BUCKETS):
            if seconds <= bound:
                self.latency_buckets[i] += 1
                return
        self.latency_buckets[-1] += 1

    def add(self, other: Counters) -> None:
        """Add ``other``'s counts to these (a stopped mapping's totals)."""
        for f in COUNTER_FIELDS:
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
        self.latency_sum += other.latency_sum
        self.latency_buckets = [
            a + b for a, b in zip(self.latency_buckets, other.latency_buckets, strict=True)
        ]
        self.last_invoke = other.last_invoke or self.last_invoke


COUNTER_FIELDS: tuple[Field[Any], ...] = tuple(
    f for f in fields(Counters) if "metric" in f.metadata
)
"""The counters exposed on ``/metrics``, each with its ``metric`` name and ``help`` text:
the one place a counter is declared."""
