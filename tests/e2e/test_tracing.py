"""Traces through a running router, recorded by an in-memory span exporter: one span per
batch, the child of the trace an SQS message (``AWSTraceHeader``, moto) or a Kafka record
(``traceparent`` header, the test broker) carries, and the function invoked with that span
as parent (``_X_AMZN_TRACE_ID``, as Lambda's runtime sets it)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from router import tracing
from router.store import SQLStore
from tests.aws.util import make_queue
from tests.fixtures.aws import unique
from tests.fixtures.kafka import TopicFactory
from tests.helpers import eventually, run_router
from tests.kafka.helpers import produce

sdk_trace = pytest.importorskip("opentelemetry.sdk.trace", reason="pip install opentelemetry-sdk")
from opentelemetry import trace as otel  # noqa: E402
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider  # noqa: E402

seen: list[str | None] = []
"""What each invocation of :func:`handler` found in ``_X_AMZN_TRACE_ID``."""


def handler(event: Any, context: Any) -> dict[str, Any]:
    seen.append(os.environ.get("_X_AMZN_TRACE_ID"))
    return {}


def handler_writing(event: Any, context: Any) -> dict[str, Any]:
    """In a worker process (``isolation: process``): what it found, into a file."""
    with open(os.environ["TRACE_SEEN_FILE"], "a") as f:
        f.write(os.environ.get("_X_AMZN_TRACE_ID", "") + "\n")
    return {}


class Recorder(SpanProcessor):
    """Keeps the spans that end while a test records (the provider is process-wide)."""

    def __init__(self) -> None:
        self.spans: list[ReadableSpan] | None = None

    def on_end(self, span: ReadableSpan) -> None:
        if self.spans is not None:
            self.spans.append(span)


RECORDER = Recorder()


@pytest.fixture
def spans() -> Iterator[list[ReadableSpan]]:
    provider = otel.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        otel.set_tracer_provider(provider)
        provider = otel.get_tracer_provider()
    assert isinstance(provider, TracerProvider), "another tracer provider is installed"
    if RECORDER not in provider._active_span_processor._span_processors:
        provider.add_span_processor(RECORDER)
    seen.clear()
    RECORDER.spans = []
    try:
        yield RECORDER.spans
    finally:
        RECORDER.spans = None


def config(source: str) -> str:
    return f"""
functions:
  fn:
    invoker: python
    handler: tests.e2e.test_tracing:handler
mappings:
  - name: orders
    function: fn
    source:
{source}
"""


def check(spans: list[ReadableSpan], trace_id: int, parent: int, source_type: str) -> None:
    """One batch span, child of the upstream span; the function saw the span as parent."""
    (span,) = [s for s in spans if s.name == "orders process"]
    context = span.get_span_context()
    assert context is not None and span.parent is not None
    assert (context.trace_id, span.parent.span_id) == (trace_id, parent)
    assert span.parent.is_remote
    assert span.kind is otel.SpanKind.CONSUMER
    assert span.attributes is not None
    assert span.attributes["router.mapping"] == "orders"
    assert span.attributes["router.source.type"] == source_type
    assert span.attributes["messaging.batch.message_count"] == 1
    assert span.start_time is not None and span.end_time is not None
    assert span.start_time <= span.end_time
    assert seen == [tracing.xray_header(trace_id, context.span_id, True)]


@pytest.mark.aws
async def test_sqs_aws_trace_header(
    aws: Any, sqlite_store: SQLStore, spans: list[ReadableSpan]
) -> None:
    trace_id, parent = 0x5759E988BD862E3FE1BE46A994272793, 0x53995C3F42CD8AD8
    async with aws.client("sqs") as sqs:
        url = await make_queue(sqs, unique("traced"))
        await sqs.send_message(
            QueueUrl=url,
            MessageBody="traced",
            MessageSystemAttributes={
                "AWSTraceHeader": {
                    "StringValue": tracing.xray_header(trace_id, parent, True),
                    "DataType": "String",
                }
            },
        )
        source = f"""      type: sqs
      queue_url: {url}
      endpoint_url: {aws.endpoint}
      region: us-east-1
      wait_time_seconds: 1"""
        async with run_router(config(source), sqlite_store):
            await eventually(lambda: [s for s in spans if s.name == "orders process"])
    check(spans, trace_id, parent, "sqs")


@pytest.mark.kafka
async def test_kafka_traceparent_header(
    kafka_broker: str, make_topic: TopicFactory, sqlite_store: SQLStore, spans: list[ReadableSpan]
) -> None:
    topic = await make_topic()
    trace_id, parent = 0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331
    traceparent = f"00-{trace_id:032x}-{parent:016x}-01"
    await produce(kafka_broker, topic, [(b"k", b"traced", [("traceparent", traceparent.encode())])])
    source = f"""      type: kafka
      bootstrap_servers: ["{kafka_broker}"]
      topics: [{topic}]
      consumer_group_id: {unique("traced")}
      session_timeout_ms: 1000
      heartbeat_interval_ms: 100
      static_membership: false
    starting_position: TRIM_HORIZON"""
    async with run_router(config(source), sqlite_store):
        await eventually(lambda: [s for s in spans if s.name == "orders process"], timeout=60)
    check(spans, trace_id, parent, "kafka")


async def test_without_upstream_the_batch_starts_a_trace(
    sqlite_store: SQLStore, spans: list[ReadableSpan], tmp_path: Any
) -> None:
    inbox = tmp_path / "inbox"  # beside the store's file, not around it
    inbox.mkdir()
    source = f"""      type: directory
      path: {inbox}"""
    async with run_router(config(source), sqlite_store):
        (inbox / "a.txt").write_text("a")
        await eventually(lambda: seen)
    (span,) = [s for s in spans if s.name == "orders process"]
    assert span.parent is None
    context = span.get_span_context()
    assert context is not None
    assert seen == [tracing.xray_header(context.trace_id, context.span_id, True)]


async def test_a_worker_process_gets_the_span_through_the_runtime_api(
    sqlite_store: SQLStore,
    spans: list[ReadableSpan],
    tmp_path: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``isolation: process``: the worker takes the invocation from the Runtime API, whose
    ``Lambda-Runtime-Trace-Id`` it puts into its own ``_X_AMZN_TRACE_ID``."""
    written = tmp_path / "seen.txt"
    monkeypatch.setenv("TRACE_SEEN_FILE", str(written))
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    text = config(f"      type: directory\n      path: {inbox}").replace(
        "handler: tests.e2e.test_tracing:handler",
        "handler: tests.e2e.test_tracing:handler_writing\n    isolation: process",
    )
    async with run_router(text, sqlite_store):
        (inbox / "a.txt").write_text("a")
        await eventually(lambda: written.exists() and written.read_text(), timeout=60)
    (span,) = [s for s in spans if s.name == "orders process"]
    context = span.get_span_context()
    assert context is not None
    header = tracing.xray_header(context.trace_id, context.span_id, True)
    assert written.read_text().splitlines() == [header]


def test_header_forms() -> None:
    assert tracing.from_traceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01") == (
        "Root=1-0af76519-16cd43dd8448eb211c80319c;Parent=b7ad6b7169203331;Sampled=1"
    )
    assert tracing.from_traceparent("00-" + "0" * 32 + "-b7ad6b7169203331-01") == ""
    assert tracing.from_traceparent("not a header") == ""
    header = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=0"
    assert tracing.parse_xray(header) == (
        0x5759E988BD862E3FE1BE46A994272793,
        0x53995C3F42CD8AD8,
        False,
    )
    assert tracing.parse_xray("Root=1-5759e988-bd862e3fe1be46a994272793") is None
    assert tracing.upstream_header({"X-Amzn-Trace-Id": header, "traceparent": "x"}) == header
    assert tracing.upstream_header({"TraceParent": "junk"}) == ""
