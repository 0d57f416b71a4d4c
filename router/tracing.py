"""Traces: one OpenTelemetry span per batch, from the time its first record was read to its
acknowledgement, and the trace context carried into the invocation as Lambda does.

A source hands the trace header of a batch's first record (SQS ``AWSTraceHeader``, a Kafka
``traceparent`` / ``X-Amzn-Trace-Id`` header) as ``trace_id`` of its
``Source.invocation_fields``, in X-Ray's form (``Root=1-...;Parent=...;Sampled=1``). The
batch's span is that trace's child; the function gets the span as its parent: in-process as
``_X_AMZN_TRACE_ID``, a runtime as ``Lambda-Runtime-Trace-Id``. Without an upstream trace
the span starts a trace of its own.

OpenTelemetry is optional (``pip install 'event-router[tracing]'``); without it no span is
made and the upstream header is passed on unchanged. Spans are exported when the standard
``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set
(:func:`configure`; the ``otlp`` extra), or to whatever tracer provider the embedding program
installed. See docs/operations.md#traces.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
from collections.abc import Iterator
from typing import Any

from router.errors import SetupError

try:
    from opentelemetry import trace as otel
    from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags
except ImportError:  # pragma: no cover - the optional extra is missing
    otel = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)

TRACE_ENV = "_X_AMZN_TRACE_ID"
"""The environment variable Lambda's runtimes set to the invocation's trace header."""
TRACER = "event-router"

_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
_XRAY_ROOT = re.compile(r"^1-([0-9a-f]{8})-([0-9a-f]{24})$")


def xray_header(trace_id: int, span_id: int, sampled: bool) -> str:
    """``Root=1-<8 hex>-<24 hex>;Parent=<16 hex>;Sampled=0|1`` of an OpenTelemetry trace
    and span id (X-Ray's trace id is the same 128 bits, its first 32 the epoch seconds)."""
    hex_id = f"{trace_id:032x}"
    return f"Root=1-{hex_id[:8]}-{hex_id[8:]};Parent={span_id:016x};Sampled={int(sampled)}"


def from_traceparent(value: str) -> str:
    """The X-Ray form of a W3C ``traceparent`` header; "" when it is not one."""
    found = _TRACEPARENT.match(value.strip().lower())
    if found is None or found.group(1) == "0" * 32 or found.group(2) == "0" * 16:
        return ""
    trace_id, span_id, flags = found.groups()
    return xray_header(int(trace_id, 16), int(span_id, 16), bool(int(flags, 16) & 1))


def parse_xray(header: str) -> tuple[int, int, bool] | None:
    """(trace id, parent span id, sampled) of an X-Ray trace header; None without a valid
    ``Root`` and ``Parent``."""
    fields = dict(part.strip().split("=", 1) for part in header.split(";") if "=" in part)
    root = _XRAY_ROOT.match(fields.get("Root", "").lower())
    parent = fields.get("Parent", "").lower()
    if root is None or not re.fullmatch(r"[0-9a-f]{16}", parent):
        return None
    return int(root.group(1) + root.group(2), 16), int(parent, 16), fields.get("Sampled") == "1"


def upstream_header(headers: dict[str, str]) -> str:
    """The X-Ray trace header of a message's headers (names compared without case):
    ``X-Amzn-Trace-Id`` as it is, else ``traceparent`` converted; "" when neither."""
    lowered = {k.lower(): v for k, v in headers.items()}
    xray = lowered.get("x-amzn-trace-id", "")
    if xray and parse_xray(xray) is not None:
        return xray
    return from_traceparent(lowered.get("traceparent", ""))


@contextlib.contextmanager
def batch_span(
    mapping: str, source_type: str, records: int, upstream: str, started: float | None = None
) -> Iterator[Any]:
    """The span of one batch of ``mapping`` for the duration of the block, current (so the
    invocation inside takes it as parent); a child of ``upstream`` (an X-Ray header) when it
    is one. ``started``: epoch seconds the span starts at (default: now)."""
    if otel is None:
        yield None
        return
    context = None
    parsed = parse_xray(upstream) if upstream else None
    if parsed is not None:
        trace_id, parent, sampled = parsed
        remote = SpanContext(
            trace_id=trace_id,
            span_id=parent,
            is_remote=True,
            trace_flags=TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT),
        )
        context = otel.set_span_in_context(NonRecordingSpan(remote))
    with _tracer().start_as_current_span(
        f"{mapping} process",
        context=context,
        kind=SpanKind.CONSUMER,
        start_time=None if started is None else int(started * 1e9),
        attributes={
            "router.mapping": mapping,
            "router.source.type": source_type,
            "messaging.operation.type": "process",
            "messaging.batch.message_count": records,
        },
    ) as span:
        yield span


@functools.cache
def _tracer() -> Any:
    """The router's tracer (a proxy until a tracer provider is installed, then that one's)."""
    return otel.get_tracer(TRACER)


def invocation_header(upstream: str) -> str:
    """The trace header an invocation carries: the current span (the batch's) as parent
    when there is one, else ``upstream`` unchanged."""
    if otel is not None:
        context = otel.get_current_span().get_span_context()
        if context.is_valid:
            return xray_header(context.trace_id, context.span_id, context.trace_flags.sampled)
    return upstream


def enabled() -> bool:
    """Whether spans are made: the OpenTelemetry API is installed and a tracer provider is
    (by :func:`configure` or the embedding program). Before that every span would be a
    no-op that still costs its context switches, a few microseconds a batch."""
    return otel is not None and not isinstance(otel.get_tracer_provider(), otel.ProxyTracerProvider)


def configure() -> Any:
    """Export spans over OTLP when ``OTEL_EXPORTER_OTLP_ENDPOINT`` or
    ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is set (the exporter reads the other ``OTEL_*``
    variables itself); the tracer provider installed (shut it down to flush the last
    spans), or None. A set endpoint without the libraries is a
    :class:`SetupError` naming the extras."""
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    if not endpoint:
        return None
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as e:
        raise SetupError(
            f"OTEL_EXPORTER_OTLP_ENDPOINT is set ({endpoint}) but the OpenTelemetry SDK or "
            f"its OTLP exporter is missing ({e.name}): pip install 'event-router[tracing,otlp]'"
            ", or unset the variable"
        ) from e
    service = os.environ.get("OTEL_SERVICE_NAME", TRACER)
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    otel.set_tracer_provider(provider)
    logger.info("traces exported over OTLP to %s as service %s", endpoint, service)
    return provider


__all__ = [
    "TRACE_ENV",
    "batch_span",
    "configure",
    "enabled",
    "from_traceparent",
    "invocation_header",
    "parse_xray",
    "upstream_header",
    "xray_header",
]
