"""The operations listener: ``/healthz`` (liveness), ``/readyz`` (readiness: every enabled
mapping runs and none has been failing for long), Prometheus ``/metrics`` and the web console
under ``/console`` (:mod:`router.console`). What each
metric means is in docs/operations.md."""

from __future__ import annotations

import asyncio
import logging
import os

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry

from router.app import Router
from router.console import add_console
from router.errors import RouterError, SetupError
from router.metrics import registry_for, render_metrics
from router.secrets import redact

READINESS_STORE_TIMEOUT = 5.0
"""Seconds /readyz waits for the store's list of mappings."""

logger = logging.getLogger(__name__)

__all__ = ["OperationsListener", "make_app", "render_metrics", "start_listener"]


def make_app(router: Router, registry: CollectorRegistry | None = None) -> web.Application:
    registry = registry or registry_for(router)

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
        return web.Response(
            body=render_metrics(router, registry).encode(),
            headers={"Content-Type": CONTENT_TYPE_LATEST},
        )

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    add_console(app, router)
    return app


async def start_listener(
    router: Router, listen: str, registry: CollectorRegistry | None = None
) -> web.AppRunner:
    """Serve the operations endpoints on ``HOST:PORT`` (port 0 picks a free one); /metrics
    from ``registry`` (default: one of the router's own)."""
    host, _, port = listen.rpartition(":")
    runner = web.AppRunner(make_app(router, registry), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host or "127.0.0.1", int(port))
    await site.start()
    return runner


class OperationsListener:
    """``async with OperationsListener(router, "HOST:PORT")``: the operations endpoints served
    for the duration of the block. A port that cannot be bound raises :class:`SetupError`
    saying how to choose another."""

    def __init__(
        self, router: Router, listen: str, registry: CollectorRegistry | None = None
    ) -> None:
        self.router = router
        self.listen = listen
        self.registry = registry
        self.runner: web.AppRunner | None = None

    async def __aenter__(self) -> OperationsListener:
        try:
            self.runner = await start_listener(self.router, self.listen, self.registry)
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
