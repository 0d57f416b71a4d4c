"""The /metrics exposition through prometheus_client: the names and label sets operators rely
on (docs/operations.md), counter names taken from the one declaration on Counters, and a
registry per router."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from router.abc import MetricFamily
from router.counters import COUNTER_FIELDS, Counters
from router.metrics import registry_for, render_metrics

COUNTERS = {
    "router_records_in_total",
    "router_records_filtered_total",
    "router_records_invoked_total",
    "router_record_attempts_total",
    "router_invocations_total",
    "router_records_failed_total",
    "router_retries_total",
    "router_throttles_total",
    "router_destination_sends_total",
    "router_batch_records_total",
    "router_records_rejected_total",
}


def _router(name: str, counters: Counters, retired: Counters | None = None) -> Any:
    running = SimpleNamespace(
        config=SimpleNamespace(name=name),
        pipeline=SimpleNamespace(
            counters=counters, held=2, source=SimpleNamespace(metrics=lambda: [])
        ),
    )
    cold = MetricFamily(
        name="router_function_cold_starts_total",
        type="counter",
        help="Cold starts",
        samples=[("router_function_cold_starts_total", {"function": "f"}, 2)],
    )
    return SimpleNamespace(
        retired={"u1": (name, retired)} if retired else {},
        counters=lambda: {"u1": (name, counters)},
        running={"u1": running},
        enabled={"u2": "idle"},
        failing_for=lambda uid: 3.25,
        functions=SimpleNamespace(metrics=lambda: [cold]),
        ingress=None,
    )


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_names_labels_and_values() -> None:
    live, retired = Counters(records_in=3, invoked=2), Counters(records_in=4)
    live.observe_latency(0.02)
    samples = _samples(render_metrics(_router('in"box', live, retired)))
    mapping = (("mapping", 'in"box'),)
    assert {f.metadata["metric"] for f in COUNTER_FIELDS} == COUNTERS
    for metric in COUNTERS:
        assert (metric, mapping) in samples, metric
    assert samples[("router_records_in_total", mapping)] == 7
    assert samples[("router_records_invoked_total", mapping)] == 2
    assert samples[("router_invoke_duration_seconds_bucket", (("le", "0.01"), *mapping))] == 0
    assert samples[("router_invoke_duration_seconds_bucket", (("le", "0.025"), *mapping))] == 1
    assert samples[("router_invoke_duration_seconds_bucket", (("le", "+Inf"), *mapping))] == 1
    assert samples[("router_invoke_duration_seconds_count", mapping)] == 1
    assert samples[("router_mapping_state", (*mapping, ("state", "problem")))] == 1
    assert samples[("router_mapping_state", (*mapping, ("state", "ok")))] == 0
    assert samples[("router_mapping_state", (("mapping", "idle"), ("state", "not_running")))] == 1
    assert samples[("router_mapping_failing_seconds", mapping)] == 3.2
    assert samples[("router_buffered_records", mapping)] == 2
    assert samples[("router_function_cold_starts_total", (("function", "f"),))] == 2


def test_a_registry_per_router() -> None:
    first, second = _router("a", Counters(records_in=1)), _router("b", Counters(records_in=5))
    one, two = registry_for(first), registry_for(second)
    assert one.get_sample_value("router_records_in_total", {"mapping": "a"}) == 1
    assert one.get_sample_value("router_records_in_total", {"mapping": "b"}) is None
    assert two.get_sample_value("router_records_in_total", {"mapping": "b"}) == 5
