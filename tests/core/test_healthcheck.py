"""``python -m router.healthcheck``: the container's HEALTHCHECK, against a real listener."""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from router import healthcheck


@pytest.fixture
async def listener() -> AsyncIterator[tuple[int, list[int]]]:
    """An HTTP listener on 127.0.0.1 whose /healthz answers the status at the list's end."""
    statuses = [200]

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(status=statuses[-1], text="not yet" if statuses[-1] != 200 else "ok")

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield port, statuses
    await runner.cleanup()


async def run_check(env: dict[str, str], *args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "router.healthcheck",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode().strip()


async def test_the_check_follows_router_http_listen(listener: tuple[int, list[int]]) -> None:
    port, statuses = listener
    code, said = await run_check({"ROUTER_HTTP_LISTEN": f"0.0.0.0:{port}"})
    assert (code, said) == (0, f"healthy: http://127.0.0.1:{port}/healthz: 200")
    statuses.append(503)
    code, said = await run_check({"ROUTER_HTTP_LISTEN": f"0.0.0.0:{port}"})
    assert (code, said) == (1, f"unhealthy: http://127.0.0.1:{port}/healthz: 503 not yet")


async def test_an_argument_wins_and_nothing_listening_is_unhealthy() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    code, said = await run_check({"ROUTER_HTTP_LISTEN": "0.0.0.0:1"}, f"127.0.0.1:{free}")
    assert code == 1
    assert said.startswith(f"unhealthy: http://127.0.0.1:{free}/healthz: ")
    assert "refused" in said


def test_wildcards_are_checked_on_loopback_and_bad_addresses_say_so() -> None:
    assert healthcheck.url_for("0.0.0.0:9090") == "http://127.0.0.1:9090/healthz"
    assert healthcheck.url_for("[::]:9090") == "http://[::1]:9090/healthz"
    assert healthcheck.url_for("10.1.2.3:8080") == "http://10.1.2.3:8080/healthz"
    assert healthcheck.check("off") == (
        False,
        "the operations listener is off (ROUTER_HTTP_LISTEN=off): there is no /healthz "
        "to check; run the container with --no-healthcheck",
    )
    assert healthcheck.check("9090") == (False, "'9090' is not HOST:PORT (e.g. 0.0.0.0:9090)")
