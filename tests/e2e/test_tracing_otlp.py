"""Spans exported over OTLP/HTTP by ``router run`` when OTEL_EXPORTER_OTLP_ENDPOINT is set,
received by a collector stand-in on this machine; the setup error without the exporter."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from router import tracing
from router.errors import SetupError
from tests.helpers import eventually, start_router_process, terminate

pytest.importorskip(
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    reason="pip install opentelemetry-exporter-otlp-proto-http (the otlp extra)",
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)

CONFIG = """\
functions:
  fn:
    invoker: python
    handler: router.examples.hello:handler
mappings:
  - name: inbox
    function: fn
    source: {{type: directory, path: {inbox}}}
"""


def service_name(resource: Any) -> str:
    names = [a.value.string_value for a in resource.attributes if a.key == "service.name"]
    return str(names[0]) if names else ""


async def test_router_run_exports_batch_spans(tmp_path: Path) -> None:
    received: list[ExportTraceServiceRequest] = []

    async def collect(request: web.Request) -> web.Response:
        message = ExportTraceServiceRequest()
        message.ParseFromString(await request.read())
        received.append(message)
        return web.Response(body=b"", content_type="application/x-protobuf")

    app = web.Application()
    app.router.add_post("/v1/traces", collect)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    config = tmp_path / "router.yaml"
    config.write_text(CONFIG.format(inbox=inbox))
    log = tmp_path / "router.log"
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
        "OTEL_SERVICE_NAME": "router-under-test",
        "OTEL_BSP_SCHEDULE_DELAY": "200",
    }
    proc = start_router_process(config, f"sqlite:///{tmp_path / 'r.db'}", tmp_path, log, env)
    try:

        def spans() -> list[tuple[str, str]]:
            if proc.poll() is not None:
                raise AssertionError(log.read_text())
            return [
                (span.name, service_name(resource.resource))
                for message in received
                for resource in message.resource_spans
                for scope in resource.scope_spans
                for span in scope.spans
            ]

        await eventually(lambda: "traces exported over OTLP" in log.read_text(), timeout=60)
        (inbox / "a.txt").write_text("a")
        found = await eventually(spans, timeout=60, what="a span at the collector")
        assert found == [("inbox process", "router-under-test")]
    finally:
        assert terminate(proc) == 0, log.read_text()
        await runner.cleanup()
    assert re.search(r"traces exported over OTLP to http://127\.0\.0\.1:\d+", log.read_text())


def test_an_endpoint_without_the_exporter_is_a_setup_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.otlp.proto.http.trace_exporter", None)
    with pytest.raises(SetupError, match=r"pip install 'event-router\[tracing,otlp\]'"):
        tracing.configure()
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT")
    assert tracing.configure() is None
