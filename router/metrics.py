"""Prometheus metrics of one router, through ``prometheus_client``: a registry per service
(:func:`registry_for`) with one collector that reads the pipelines' counters
(:class:`router.counters.Counters`, whose fields declare the counter names), the mappings'
states and the invokers' own families when ``/metrics`` is asked for. Nothing is counted
twice: the per-record path keeps plain integers, the collector only reads them. What each
metric means is in docs/operations.md."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from router.abc import MetricFamily
from router.counters import COUNTER_FIELDS, LATENCY_BUCKETS, LATENCY_HELP, LATENCY_METRIC, Counters

if TYPE_CHECKING:
    from router.app import Router

MAPPING_STATES = ("ok", "problem", "not_running")


class RouterCollector(Collector):
    """Reads one router's counters and states on every collection."""

    def __init__(self, router: Router) -> None:
        self.router = router

    def collect(self) -> Iterator[Metric]:
        router = self.router
        merged: dict[str, tuple[str, list[Counters]]] = {}
        for uid, (name, counters) in router.retired.items():
            merged.setdefault(uid, (name, []))[1].append(counters)
        for uid, (name, counters) in router.counters().items():
            merged.setdefault(uid, (name, []))[1].append(counters)
        for f in COUNTER_FIELDS:
            family = CounterMetricFamily(
                f.metadata["metric"], f.metadata["help"], labels=["mapping"]
            )
            for name, parts in merged.values():
                family.add_metric([name], sum(getattr(c, f.name) for c in parts))
            yield family
        histogram = HistogramMetricFamily(LATENCY_METRIC, LATENCY_HELP, labels=["mapping"])
        for name, parts in merged.values():
            counts = [
                sum(c.latency_buckets[i] for c in parts) for i in range(len(LATENCY_BUCKETS) + 1)
            ]
            buckets: list[tuple[str, float]] = []
            cumulative = 0
            for bound, count in zip((*map(str, LATENCY_BUCKETS), "+Inf"), counts, strict=True):
                cumulative += count
                buckets.append((bound, cumulative))
            histogram.add_metric([name], buckets, sum(c.latency_sum for c in parts))
        yield histogram
        yield from self._states()
        buffered = GaugeMetricFamily(
            "router_buffered_records",
            "Records held in lanes, not yet acknowledged",
            labels=["mapping"],
        )
        for running in router.running.values():
            buffered.add_metric([running.config.name], running.pipeline.held)
        yield buffered
        yield from plugin_families(router.functions.metrics())
        if router.ingress is not None:
            names = {uid: running.config.name for uid, running in router.running.items()}
            yield from plugin_families(router.ingress.queue.metrics(names))
        yield from plugin_families(
            f for running in router.running.values() for f in running.pipeline.source.metrics()
        )

    def _states(self) -> Iterator[Metric]:
        """One-hot ``router_mapping_state`` and ``router_mapping_failing_seconds`` of every
        mapping that runs here or is enabled in the store (as last read)."""
        router = self.router
        names = dict(router.enabled)
        names.update((uid, r.config.name) for uid, r in router.running.items())
        state = GaugeMetricFamily(
            "router_mapping_state",
            "1 for the mapping's state on this router: ok, problem (last_processing_result is "
            "PROBLEM), not_running (enabled in the store, not running)",
            labels=["mapping", "state"],
        )
        failing = GaugeMetricFamily(
            "router_mapping_failing_seconds",
            "Seconds the mapping has been failing (PROBLEM since its last success); 0 when it "
            "is not",
            labels=["mapping"],
        )
        for uid, name in sorted(names.items(), key=lambda item: item[1]):
            if uid not in router.running:
                now, seconds = "not_running", 0.0
            else:
                found = router.failing_for(uid)
                now, seconds = ("ok", 0.0) if found is None else ("problem", found)
            for candidate in MAPPING_STATES:
                state.add_metric([name, candidate], 1 if candidate == now else 0)
            failing.add_metric([name], round(seconds, 1))
        yield state
        yield failing


def plugin_families(families: Iterable[MetricFamily]) -> Iterator[Metric]:
    """Plug-in metrics; families of one name (one per function) become one family."""
    merged: dict[str, Metric] = {}
    for family in families:
        metric = merged.get(family.name)
        if metric is None:
            # prometheus_client names a counter family without its _total (it adds it back).
            name = family.name.removesuffix("_total") if family.type == "counter" else family.name
            metric = merged[family.name] = Metric(name, family.help, family.type)
        for sample, labels, value in family.samples:
            metric.add_sample(sample, dict(labels), value)
    yield from merged.values()


def registry_for(router: Router) -> CollectorRegistry:
    """A registry of its own for ``router`` (a service's ``/metrics``; tests running several
    routers in one process keep theirs apart)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RouterCollector(router))
    return registry


def render_metrics(router: Router, registry: CollectorRegistry | None = None) -> str:
    """The Prometheus text exposition of ``router``'s metrics."""
    return generate_latest(registry or registry_for(router)).decode()
