"""Per-function metrics of the ``runtime-api`` invoker, as Prometheus families.

Every sample carries the ``function`` label. Names are declared once, here.
"""

from __future__ import annotations

import bisect
import collections
from collections.abc import Mapping, Sequence

from router.abc import MetricFamily

Sample = tuple[str, dict[str, str], float]
SECONDS_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
MEGABYTES_BUCKETS = (32, 64, 128, 256, 512, 1024, 2048, 4096, 10240)


class Histogram:
    """Cumulative-bucket histogram (Prometheus semantics)."""

    __slots__ = ("bounds", "count", "counts", "total")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * len(self.bounds)
        self.count = 0
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.count += 1
        self.total += value
        i = bisect.bisect_left(self.bounds, value)
        if i < len(self.counts):
            self.counts[i] += 1

    def samples(self, name: str, labels: Mapping[str, str]) -> list[Sample]:
        out: list[Sample] = []
        cumulative = 0
        for bound, count in zip(self.bounds, self.counts, strict=True):
            cumulative += count
            out.append((f"{name}_bucket", {**labels, "le": f"{bound:g}"}, cumulative))
        out.append((f"{name}_bucket", {**labels, "le": "+Inf"}, self.count))
        out.append((f"{name}_sum", dict(labels), self.total))
        out.append((f"{name}_count", dict(labels), self.count))
        return out


class FunctionMetrics:
    """What one function's runtimes did. ``environments`` gauges are read from the pool."""

    def __init__(self, function: str) -> None:
        self.labels = {"function": function}
        self.invocations: collections.Counter[str] = collections.Counter()
        """Invocations a runtime took, by outcome."""
        self.throttles = 0
        self.duration = Histogram(SECONDS_BUCKETS)
        self.queue_wait = Histogram(SECONDS_BUCKETS)
        self.memory = Histogram(MEGABYTES_BUCKETS)
        self.init_duration = Histogram(SECONDS_BUCKETS)
        self.cold_starts = 0
        self.init_errors = 0
        self.stopped: collections.Counter[str] = collections.Counter()
        """Environments stopped, by reason (idle, timeout, crash, init_error, shutdown)."""

    def families(self, environments: Mapping[str, int] | None) -> list[MetricFamily]:
        labels = self.labels
        families = [
            MetricFamily(
                name="router_function_invocations_total",
                type="counter",
                help="Invocations a runtime took, by outcome",
                samples=[
                    ("router_function_invocations_total", {**labels, "outcome": k}, v)
                    for k, v in sorted(self.invocations.items())
                ],
            ),
            MetricFamily(
                name="router_function_throttles_total",
                type="counter",
                help="Invocations refused because no runtime could take them",
                samples=[("router_function_throttles_total", labels, self.throttles)],
            ),
            MetricFamily(
                name="router_function_duration_seconds",
                type="histogram",
                help="Function duration, from /next to the response",
                samples=self.duration.samples("router_function_duration_seconds", labels),
            ),
            MetricFamily(
                name="router_function_queue_wait_seconds",
                type="histogram",
                help="Time invocations waited for a runtime to take them",
                samples=self.queue_wait.samples("router_function_queue_wait_seconds", labels),
            ),
        ]
        if environments is None:  # runtimes started outside the router
            return families
        families += [
            MetricFamily(
                name="router_function_max_memory_used_megabytes",
                type="histogram",
                help="Max Memory Used of the environment at the end of each invocation",
                samples=self.memory.samples("router_function_max_memory_used_megabytes", labels),
            ),
            MetricFamily(
                name="router_function_init_duration_seconds",
                type="histogram",
                help="Init duration of execution environments (start to first /next)",
                samples=self.init_duration.samples("router_function_init_duration_seconds", labels),
            ),
            MetricFamily(
                name="router_function_cold_starts_total",
                type="counter",
                help="Invocations that waited for an environment to start",
                samples=[("router_function_cold_starts_total", labels, self.cold_starts)],
            ),
            MetricFamily(
                name="router_function_init_errors_total",
                type="counter",
                help="Environments whose init failed (init error, crash or init timeout)",
                samples=[("router_function_init_errors_total", labels, self.init_errors)],
            ),
            MetricFamily(
                name="router_function_environments",
                type="gauge",
                help="Execution environments, by state",
                samples=[
                    ("router_function_environments", {**labels, "state": k}, v)
                    for k, v in sorted(environments.items())
                ],
            ),
            MetricFamily(
                name="router_function_environments_stopped_total",
                type="counter",
                help="Execution environments stopped, by reason",
                samples=[
                    ("router_function_environments_stopped_total", {**labels, "reason": k}, v)
                    for k, v in sorted(self.stopped.items())
                ],
            ),
        ]
        return families
