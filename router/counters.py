"""The counters of a mapping, kept by its pipeline on the per-record path (plain integers),
read by the metrics and flushed to the store's ``mapping_stats``."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
"""Upper bounds (seconds) of the invocation latency histogram."""


@dataclass(slots=True)
class Counters:
    """Per-mapping counters; the app flushes them to the store and to /metrics (see
    docs/operations.md for what each one counts)."""

    records_in: int = 0
    filtered: int = 0
    invoked: int = 0
    """Records delivered: the function took them (success, and not named in a partial batch
    response). Once per record, however many attempts it took."""
    attempts: int = 0
    """Records sent to the function, once per attempt (throttled and unreachable included)."""
    invocations: int = 0
    failed: int = 0
    retries: int = 0
    throttles: int = 0
    destination_sends: int = 0
    rejected: int = 0
    """Items the source could not turn into events (skipped, see ``Sink.reject``)."""
    last_invoke: datetime | None = None
    latency_sum: float = 0.0
    latency_buckets: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    batch_sizes_sum: int = 0

    def observe_latency(self, seconds: float) -> None:
        self.latency_sum += seconds
        for i, bound in enumerate(LATENCY_BUCKETS):
            if seconds <= bound:
                self.latency_buckets[i] += 1
                return
        self.latency_buckets[-1] += 1
