"""The operations listener: ``/healthz`` (liveness), ``/readyz`` (readiness: every enabled
mapping runs and none has been failing for long) and Prometheus ``/metrics``. What each
metric means is in docs/operations.md."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterable

from aiohttp import web

from router.abc import MetricFamily
from router.app import Router
from router.counters import LATENCY_BUCKETS, Counters
from router.errors import RouterError, SetupError
from router.secrets import redact

READINESS_STORE_TIMEOUT = 5.0
"""Seconds /readyz waits for the store's list of mappings."""

logger = logging.getLogger(__name__)

_COUNTERS = (
    ("records_in", "router_records_in_total", "Records read from the source"),
    ("filtered", "router_records_filtered_total", "Records that matched no filter pattern"),
    (
        "invoked",
        "router_records_invoked_total",
        "Records delivered to the function (once per record, however many attempts)",
    ),
    (
        "attempts",
        "router_record_attempts_total",
        "Records sent to the function, once per attempt (retries, throttles included)",
    ),
    ("invocations", "router_invocations_total", "Function invocations"),
    ("failed", "router_records_failed_total", "Records in failed invocations, per attempt"),
    ("retries", "router_retries_total", "Retries after function errors"),
    ("throttles", "router_throttles_total", "Throttled or unreachable invocations"),
    ("destination_sends", "router_destination_sends_total", "Records sent to destinations"),
    ("batch_sizes_sum", "router_batch_records_total", "Records per batch, summed"),
    ("rejected", "router_records_rejected_total", "Items the source could not turn into events"),
)


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render_metrics(router: Router) -> str:
    merged: dict[str, tuple[str, list[Counters]]] = {}
    for uid, (name, counters) in router.retired.items():
        merged.setdefault(uid, (name, []))[1].append(counters)
    for uid, (name, counters) in router.counters().items():
        merged.setdefault(uid, (name, []))[1].append(counters)
    lines: list[str] = []
    for attr, metric, help_text in _COUNTERS:
        lines.append(f"# HELP {metric} {help_text}")
        lines.append(f"# TYPE {metric} counter")
        for name, parts in merged.values():
            total = sum(getattr(c, attr) for c in parts)
            lines.append(f'{metric}{{mapping="{_label(name)}"}} {total}')
    metric = "router_invoke_duration_seconds"
    lines.append(f"# HELP {metric} Function invocation latency")
    lines.append(f"# TYPE {metric} histogram")
    for name, parts in merged.values():
        lines.extend(_histogram(metric, _label(name), parts))
    lines.extend(_states(router))
    lines.append("# HELP router_buffered_records Records held in lanes, not yet acknowledged")
    lines.append("# TYPE router_buffered_records gauge")
    for running in router.running.values():
        held = running.pipeline.held
        lines.append(f'router_buffered_records{{mapping="{_label(running.config.name)}"}} {held}')
    lines.extend(_families(router.functions.metrics()))
    if router.ingress is not None:
        names = {uid: running.config.name for uid, running in router.running.items()}
        lines.extend(_families(router.ingress.queue.metrics(names)))
    lines.extend(
        _families(
            f for running in router.running.values() for f in running.pipeline.source.metrics()
        )
    )
    return "\n".join(lines) + "\n"


def _families(families: Iterable[MetricFamily]) -> list[str]:
    """Plug-in metrics; families of one name (one per function) are rendered together."""
    merged: dict[str, list[MetricFamily]] = {}
    for family in families:
        merged.setdefault(family.name, []).append(family)
    lines: list[str] = []
    for name, parts in merged.items():
        lines.append(f"# HELP {name} {parts[0].help}")
        lines.append(f"# TYPE {name} {parts[0].type}")
        for part in parts:
            for sample, labels, value in part.samples:
                text = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
                lines.append(f"{sample}{{{text}}} {_number(value)}")
    return lines


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


MAPPING_STATES = ("ok", "problem", "not_running")


def _states(router: Router) -> list[str]:
    """One-hot ``router_mapping_state`` and ``router_mapping_failing_seconds`` of every
    mapping that runs here or is enabled in the store (as last read)."""
    names = dict(router.enabled)
    names.update((uid, r.config.name) for uid, r in router.running.items())
    lines = [
        "# HELP router_mapping_state 1 for the mapping's state on this router: ok, problem "
        "(last_processing_result is PROBLEM), not_running (enabled in the store, not running)",
        "# TYPE router_mapping_state gauge",
    ]
    failing: list[str] = []
    for uid, name in sorted(names.items(), key=lambda item: item[1]):
        label = _label(name)
        if uid not in router.running:
            state = "not_running"
            seconds = 0.0
        else:
            found = router.failing_for(uid)
            state = "ok" if found is None else "problem"
            seconds = found or 0.0
        for candidate in MAPPING_STATES:
            value = 1 if candidate == state else 0
            lines.append(f'router_mapping_state{{mapping="{label}",state="{candidate}"}} {value}')
        failing.append(f'router_mapping_failing_seconds{{mapping="{label}"}} {seconds:.1f}')
    lines.append(
        "# HELP router_mapping_failing_seconds Seconds the mapping has been failing "
        "(PROBLEM since its last success); 0 when it is not"
    )
    lines.append("# TYPE router_mapping_failing_seconds gauge")
    lines.extend(failing)
    return lines


def _histogram(metric: str, name: str, parts: Iterable[Counters]) -> list[str]:
    parts = list(parts)
    buckets = [sum(c.latency_buckets[i] for c in parts) for i in range(len(LATENCY_BUCKETS) + 1)]
    lines = []
    cumulative = 0
    for bound, count in zip(LATENCY_BUCKETS, buckets, strict=False):
        cumulative += count
        lines.append(f'{metric}_bucket{{mapping="{name}",le="{bound}"}} {cumulative}')
    cumulative += buckets[-1]
    lines.append(f'{metric}_bucket{{mapping="{name}",le="+Inf"}} {cumulative}')
    lines.append(f'{metric}_sum{{mapping="{name}"}} {sum(c.latency_sum for c in parts)}')
    lines.append(f'{metric}_count{{mapping="{name}"}} {cumulative}')
    return lines


def make_app(router: Router) -> web.Application:
    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(request: web.Request) -> web.Response:
        if not router.ready():
            return web.json_response({"status": "starting"}, status=503)
        try:
            async with asyncio.timeout(READINESS_STORE_TIMEOUT):
                unready = await router.unready_mappings()
        except (RouterError, OSError, TimeoutError) as e:
            reason = redact(str(e)) or type(e).__name__
            return web.json_response(
                {"status": "not ready", "store": f"unreachable: {reason}"}, status=503
            )
        if unready:
            return web.json_response({"status": "not ready", **unready}, status=503)
        return web.json_response({"status": "ready", "mappings": len(router.running)})

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(text=render_metrics(router), content_type="text/plain")

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app


async def start_listener(router: Router, listen: str) -> web.AppRunner:
    """Serve the operations endpoints on ``HOST:PORT`` (port 0 picks a free one)."""
    host, _, port = listen.rpartition(":")
    runner = web.AppRunner(make_app(router), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host or "127.0.0.1", int(port))
    await site.start()
    return runner


class OperationsListener:
    """``async with OperationsListener(router, "HOST:PORT")``: the operations endpoints served
    for the duration of the block. A port that cannot be bound raises :class:`SetupError`
    saying how to choose another."""

    def __init__(self, router: Router, listen: str) -> None:
        self.router = router
        self.listen = listen
        self.runner: web.AppRunner | None = None

    async def __aenter__(self) -> OperationsListener:
        try:
            self.runner = await start_listener(self.router, self.listen)
        except OSError as e:
            raise SetupError(
                f"cannot listen on {self.listen} for /healthz, /readyz and /metrics: "
                f"{os.strerror(e.errno) if e.errno else e}. Is another router running on this "
                "host? Give each its own port with --http-listen HOST:PORT, "
                "$ROUTER_HTTP_LISTEN or router.http_listen (off: no listener)"
            ) from e
        for site in self.runner.sites:
            logger.info("operations listener on %s", site.name)
        return self

    async def __aexit__(self, *exc: object) -> None:
        runner, self.runner = self.runner, None
        if runner is not None:
            await runner.cleanup()
