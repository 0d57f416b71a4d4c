"""PutEvents throughput and latency: events/s the event bus accepts (each committed to the
durable queue before the answer) on SQLite and PostgreSQL, end-to-end p50 / p99 from the
PutEvents call to the handler, and a baseline of the same HTTP listener answering PutEvents
without queueing, measured in the same run by the same load generator (on this machine).

    .venv/bin/python bench/eventbus.py [--seconds 5] [--clients 32] [--entries 1]
        [--stores sqlite,postgres] [--rate 200]

Prints, per store: accepted events/s and the ratio to the baseline; p50 / p99 accept-to-
handler at a fixed rate (``--rate`` events/s, below what the store sustains, so the figure is
the delivery latency, not a backlog).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
import time
import types
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp
from aiohttp import web

from router.config import load_config_text
from router.config.convert import IngressSettings
from router.ingress import IngressListener, IngressRequest
from router.service import Service
from router.store.migrate import upgrade_async

CONFIG = """
router:
  ingress: {listen: "127.0.0.1:0"}
functions:
  sink: {invoker: python, handler: bench_eventbus_handler:handle}
mappings:
  - name: rule
    function: sink
    source: {type: eventbridge}
    filter_criteria:
      filters:
        - pattern: '{"source": ["bench"]}'
"""


class Arrivals:
    """What the handler saw: the delay from each event's ``sent`` to its arrival."""

    def __init__(self) -> None:
        self.delays: list[float] = []
        self.wanted = 0
        self.done = asyncio.Event()
        self.loop: asyncio.AbstractEventLoop | None = None

    def expect(self, count: int) -> None:
        self.delays.clear()
        self.wanted = count
        self.done.clear()
        self.loop = asyncio.get_running_loop()

    def handle(self, event: dict[str, Any], context: Any) -> None:
        sent = event["detail"].get("sent")
        if sent is not None:
            self.delays.append(time.time() - sent)
            if len(self.delays) >= self.wanted and self.loop is not None:
                # The handler may run in a worker thread.
                self.loop.call_soon_threadsafe(self.done.set)


ARRIVALS = Arrivals()


def install_handler_module() -> None:
    module = types.ModuleType("bench_eventbus_handler")
    module.handle = ARRIVALS.handle  # type: ignore[attr-defined]
    sys.modules["bench_eventbus_handler"] = module


def body(entries: int, sent: float | None = None) -> bytes:
    detail = json.dumps({"order": "o-1", "amount": 42.5, "sent": sent})
    entry = {"Source": "bench", "DetailType": "OrderPlaced", "Detail": detail}
    return json.dumps({"Entries": [entry] * entries}).encode()


HEADERS = {
    "X-Amz-Target": "AWSEvents.PutEvents",
    "Content-Type": "application/x-amz-json-1.1",
}


async def load(url: str, *, seconds: float, clients: int, entries: int) -> float:
    """Entries accepted per second by ``clients`` callers posting for ``seconds``."""
    payload = body(entries)
    accepted = 0
    deadline = time.monotonic() + seconds
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def caller() -> None:
            nonlocal accepted
            while time.monotonic() < deadline:
                async with session.post(url, data=payload, headers=HEADERS) as answer:
                    result = await answer.json(content_type=None)
                    if answer.status != 200:
                        raise RuntimeError(f"PutEvents answered {answer.status}: {result}")
                    accepted += entries - result.get("FailedEntryCount", 0)

        started = time.monotonic()
        await asyncio.gather(*(caller() for _ in range(clients)))
        return accepted / (time.monotonic() - started)


async def latency(url: str, *, rate: float, seconds: float) -> tuple[float, float, int]:
    """p50 / p99 seconds from the call to the handler at ``rate`` events/s."""
    total = int(rate * seconds)
    ARRIVALS.expect(total)
    async with aiohttp.ClientSession() as session:
        started = time.monotonic()
        tasks = []
        for i in range(total):
            wait = started + i / rate - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            tasks.append(
                asyncio.create_task(_post(session, url, body(1, sent=time.time())), name=f"put-{i}")
            )
        await asyncio.gather(*tasks)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(60):
            await ARRIVALS.done.wait()
    delays = sorted(ARRIVALS.delays)
    if not delays:
        raise RuntimeError("no event reached the handler")
    return (
        delays[len(delays) // 2],
        delays[min(len(delays) - 1, int(len(delays) * 0.99))],
        len(delays),
    )


async def _post(session: aiohttp.ClientSession, url: str, data: bytes) -> None:
    async with session.post(url, data=data, headers=HEADERS) as answer:
        await answer.read()


@asynccontextmanager
async def baseline_listener() -> AsyncIterator[str]:
    """The ingress listener answering PutEvents at once, queueing nothing."""

    async def answer(request: IngressRequest) -> web.StreamResponse:
        entries = json.loads(request.body)["Entries"]
        return web.json_response(
            {"FailedEntryCount": 0, "Entries": [{"EventId": "e"} for _ in entries]},
            content_type="application/x-amz-json-1.1",
        )

    async with IngressListener(IngressSettings(listen="127.0.0.1:0")) as listener:
        with listener.add_target("AWSEvents.PutEvents", answer, owner="the baseline"):
            yield listener.url + "/"


@asynccontextmanager
async def router_store(kind: str) -> AsyncIterator[str]:
    if kind == "sqlite":
        with tempfile.TemporaryDirectory() as folder:
            yield f"sqlite:///{Path(folder) / 'bench.db'}"
        return
    from tests.fixtures.postgres import create_pg_database, drop_pg_database, pg_database_url

    name = await create_pg_database()
    try:
        url = pg_database_url(name)
        await upgrade_async(url)
        yield url
    finally:
        await drop_pg_database(name)


@asynccontextmanager
async def event_bus(store_url: str) -> AsyncIterator[str]:
    config = load_config_text(CONFIG, "bench.yaml")
    async with Service(config, store_url=store_url, http_listen="off") as service:
        assert service.ingress is not None
        url = service.ingress.listener.url + "/"
        deadline = time.monotonic() + 30
        async with aiohttp.ClientSession() as session:
            while True:  # the rule registers PutEvents once its mapping runs
                async with session.post(url, data=body(1), headers=HEADERS) as answer:
                    if answer.status == 200:
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError("PutEvents was not served")
                await asyncio.sleep(0.1)
        yield url


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--entries", type=int, default=1, help="entries per PutEvents call")
    parser.add_argument("--stores", default="sqlite,postgres")
    parser.add_argument("--rate", type=float, default=200.0)
    args = parser.parse_args()
    install_handler_module()
    options = {"seconds": args.seconds, "clients": args.clients, "entries": args.entries}
    async with baseline_listener() as url:
        base = await load(url, **options)
    print(
        f"baseline (listener answering PutEvents, no queue): {base:,.0f} events/s "
        f"({args.clients} clients, {args.entries} entries per call)"
    )
    for kind in args.stores.split(","):
        async with router_store(kind) as store_url, event_bus(store_url) as url:
            # Latency first, on an empty queue: the load phase leaves a backlog behind.
            p50, p99, seen = await latency(url, rate=args.rate, seconds=args.seconds)
            accepted = await load(url, **options)
        print(
            f"{kind}: PutEvents accepted {accepted:,.0f} events/s durably queued "
            f"({accepted / base:.2f} of the baseline); at {args.rate:.0f}/s accept-to-handler "
            f"p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms ({seen} events)"
        )


if __name__ == "__main__":
    asyncio.run(main())
