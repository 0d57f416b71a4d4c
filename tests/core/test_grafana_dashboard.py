"""docs/grafana/router.json is a valid dashboard whose queries name only metrics the router
exposes (a metric renamed in the code fails here, not on an operator's empty panel)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from router.counters import COUNTER_FIELDS, LATENCY_METRIC
from router.lag import LAG_METRICS

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "docs" / "grafana" / "router.json"
METRIC = re.compile(r"\b(router_[a-z_]+)\b")
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def exposed_metrics() -> set[str]:
    """Every metric name written in the code: the counters' declared names and each
    ``"router_..."`` literal of router/ and connectors/ (gauges, plug-ins' families)."""
    names = {str(f.metadata["metric"]) for f in COUNTER_FIELDS} | {LATENCY_METRIC}
    names |= set(LAG_METRICS)
    for folder in ("router", "connectors"):
        for path in (ROOT / folder).rglob("*.py"):
            names |= set(re.findall(r'"(router_[a-z_]+)"', path.read_text()))
    return names


def base_name(name: str, known: set[str]) -> str:
    for suffix in HISTOGRAM_SUFFIXES:
        if name.endswith(suffix) and name.removesuffix(suffix) in known:
            return name.removesuffix(suffix)
    return name


def test_dashboard_queries_name_real_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"]
    known = exposed_metrics()
    used: set[str] = set()
    ids = []
    for panel in dashboard["panels"]:
        ids.append(panel["id"])
        assert panel["title"] and panel["type"] in {"timeseries", "stat"}, panel
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            found = METRIC.findall(target["expr"])
            assert found, f"{panel['title']}: no router metric in {target['expr']!r}"
            for name in found:
                assert base_name(name, known) in known, f"{panel['title']}: unknown {name}"
                used.add(base_name(name, known))
    assert len(ids) == len(set(ids)), "panel ids repeat"
    # Every lag the console shows has a panel.
    assert set(LAG_METRICS) <= used, set(LAG_METRICS) - used


def test_every_dashboard_metric_is_documented() -> None:
    docs = "".join(p.read_text() for p in (ROOT / "docs").glob("*.md"))
    names = {
        base_name(n, exposed_metrics())
        for panel in json.loads(DASHBOARD.read_text())["panels"]
        for target in panel["targets"]
        for n in METRIC.findall(target["expr"])
    }
    missing = sorted(n for n in names if not re.search(rf"\b{n}\b", docs))
    assert not missing, f"not described in docs/: {missing}"
