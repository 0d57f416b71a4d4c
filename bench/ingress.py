"""Pushed events: how many asynchronous Invoke calls and EventBridge ``PutEvents`` entries
the router accepts per second, durably queued, beside the same HTTP server answering without
queueing; and how long an accepted event takes to reach its handler.

Run by hand: ``python bench/ingress.py [--seconds 5] [--concurrency 16] [--rounds 3]
[--store sqlite,postgres] [--api invoke,putevents] [--entries 1]``. In one run, one after
the other, on this machine, for each API:

* ``baseline``: the ingress listener (the same aiohttp server, route matching and body read)
  with a route at the Invoke path that answers 202 at once (``PutEvents``: a JSON 1.1 action
  that reads the entries and answers an ``EventId`` for each), nothing queued;
* ``sqlite`` / ``postgres``: a router (``Service``) with the Invoke API and one
  ``eventbridge`` rule matching every event: each ``InvocationType: Event`` call, and each
  ``PutEvents`` entry (``--entries`` per call), is committed to the asynchronous queue in the
  store before the answer, then delivered to an in-process python handler.

A load generator in a process of its own keeps ``--concurrency`` requests in flight (keep-alive
connections) for ``--seconds`` and counts the 202s. Then, at a modest load (``--latency-
concurrency`` requests in flight), every event carries the time it was sent and the handler
notes when it got it: p50 / p99 from the request to the handler. PostgreSQL is the local server
(``--pg-url``, a database created and dropped for the run). Rates are per wall-clock second
and per CPU-second of the server's process (which, for the durable runs, also delivers the
events meanwhile; PostgreSQL's own CPU is not counted). Each durable run is compared with a
baseline run just before it, and ``--rounds`` repeats the pairs: the median ratio is the
figure (single runs swing on a shared machine). Target: durable accept >= 0.3 x the baseline
on PostgreSQL.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp
from aiohttp import web

from router.config import load_config_text
from router.config.convert import IngressSettings
from router.ingress import IngressListener, IngressRequest
from router.ingress.invoke import INVOKE_PATH
from router.service import Service
from router.store.migrate import upgrade_async

LATENCIES: list[float] = []
"""Seconds from a request being sent to the handler getting its event."""
DELIVERED = 0

CONFIG = """
router:
  store: STORE
  ingress: {listen: "127.0.0.1:0"}
functions:
  bench: {invoker: python, handler: "__main__:handle"}
mappings:
  - name: bench-rule
    function: bench
    source: {type: eventbridge}
"""
PUT_EVENTS = {"X-Amz-Target": "AWSEvents.PutEvents", "Content-Type": "application/x-amz-json-1.1"}


def handle(event: dict[str, Any], context: Any) -> None:
    global DELIVERED
    DELIVERED += 1
    sent = event.get("sent") or event.get("detail", {}).get("sent")
    if sent:
        LATENCIES.append(time.time() - sent)


# ---------------------------------------------------------------------- the load generator


def put_events_body(entries: int, sent: float) -> bytes:
    detail = json.dumps({"order": 1, "sent": sent})
    entry = {"Source": "bench", "DetailType": "OrderPlaced", "Detail": detail}
    return json.dumps({"Entries": [entry] * entries}).encode()


async def load(
    url: str, seconds: float, concurrency: int, stamp: bool, api: str = "invoke", entries: int = 1
) -> dict[str, Any]:
    if api == "putevents":
        return await load_put_events(url, seconds, concurrency, stamp, entries)
    target = f"{url}/2015-03-31/functions/bench/invocations"
    headers = {"X-Amz-Invocation-Type": "Event", "Content-Type": "application/json"}
    accepted = errors = 0
    end = time.monotonic() + seconds
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            nonlocal accepted, errors
            while time.monotonic() < end:
                body = json.dumps({"order": 1, "sent": time.time() if stamp else 0}).encode()
                async with session.post(target, data=body, headers=headers) as answer:
                    await answer.read()
                    if answer.status == 202:
                        accepted += 1
                    else:
                        errors += 1

        started = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.monotonic() - started
    return {"accepted": accepted, "errors": errors, "elapsed": elapsed}


async def load_put_events(
    url: str, seconds: float, concurrency: int, stamp: bool, entries: int
) -> dict[str, Any]:
    """``accepted`` counts entries (an ``EventId`` in the answer), ``errors`` the others."""
    accepted = errors = 0
    end = time.monotonic() + seconds
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            nonlocal accepted, errors
            while time.monotonic() < end:
                body = put_events_body(entries, time.time() if stamp else 0)
                async with session.post(f"{url}/", data=body, headers=PUT_EVENTS) as answer:
                    result = await answer.json(content_type=None)
                    failed = (
                        result.get("FailedEntryCount", entries) if answer.status == 200 else entries
                    )
                    accepted += entries - failed
                    errors += failed

        started = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.monotonic() - started
    return {"accepted": accepted, "errors": errors, "elapsed": elapsed}


async def run_load(
    url: str, seconds: float, concurrency: int, stamp: bool, api: str = "invoke", entries: int = 1
) -> dict[str, Any]:
    """The load generator in a process of its own."""
    command = [
        sys.executable,
        __file__,
        "--load",
        url,
        "--seconds",
        str(seconds),
        "--concurrency",
        str(concurrency),
        "--api",
        api,
        "--entries",
        str(entries),
    ]
    if stamp:
        command.append("--stamp")
    process = await asyncio.create_subprocess_exec(*command, stdout=subprocess.PIPE)
    out, _ = await process.communicate()
    if process.returncode != 0:
        raise SystemExit(f"the load generator failed ({process.returncode})")
    result: dict[str, Any] = json.loads(out)
    return result


# ---------------------------------------------------------------------- the servers


@contextlib.asynccontextmanager
async def baseline() -> AsyncIterator[str]:
    async def accept(request: IngressRequest) -> web.StreamResponse:
        return web.Response(status=202)

    async def put_events(request: IngressRequest) -> web.StreamResponse:
        entries = json.loads(request.body)["Entries"]
        answer = {"FailedEntryCount": 0, "Entries": [{"EventId": "e"} for _ in entries]}
        return web.Response(body=json.dumps(answer), content_type="application/x-amz-json-1.1")

    async with IngressListener(IngressSettings(listen="127.0.0.1:0")) as listener:
        with (
            listener.add_route("POST", INVOKE_PATH, accept, owner="bench", service="lambda"),
            listener.add_target("AWSEvents.PutEvents", put_events, owner="bench"),
        ):
            yield listener.url


@contextlib.asynccontextmanager
async def router(store_url: str) -> AsyncIterator[str]:
    config = load_config_text(CONFIG.replace("STORE", store_url), "bench.yaml")
    async with Service(config, store_url=store_url, http_listen="off", replica_id="bench") as s:
        assert s.ingress is not None
        url = s.ingress.listener.url
        # PutEvents is served once the rule's mapping runs.
        async with aiohttp.ClientSession() as session:
            for _ in range(300):
                async with session.post(f"{url}/", data=b"{}", headers=PUT_EVENTS) as answer:
                    if answer.status != 400 or "Unknown" not in await answer.text():
                        break
                await asyncio.sleep(0.1)
        yield url


@contextlib.asynccontextmanager
async def sqlite_store() -> AsyncIterator[str]:
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{Path(folder) / 'bench.db'}"
        await upgrade_async(url)
        yield url


@contextlib.asynccontextmanager
async def postgres_store(admin_url: str) -> AsyncIterator[str]:
    import asyncpg

    name = f"bench_ingress_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = admin_url.rsplit("/", 1)[0] + f"/{name}"
    try:
        await upgrade_async(url)
        yield url
    finally:
        admin = await asyncpg.connect(admin_url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


# ---------------------------------------------------------------------- the run


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def measure(
    url: str, args: argparse.Namespace, *, durable: bool, api: str = "invoke"
) -> dict[str, Any]:
    global DELIVERED
    DELIVERED = 0
    shape = {"api": api, "entries": args.entries}
    await run_load(url, 1.0, args.concurrency, stamp=False, **shape)  # warm up connections
    cpu = time.process_time()
    result = await run_load(url, args.seconds, args.concurrency, stamp=False, **shape)
    cpu = time.process_time() - cpu
    rate = result["accepted"] / result["elapsed"]
    figures: dict[str, Any] = {
        "rate": rate,
        "errors": result["errors"],
        "cpu_rate": result["accepted"] / cpu if cpu > 0 else 0.0,
    }
    if durable:
        deadline = time.monotonic() + 300
        # Let the backlog drain before measuring latency at a modest load.
        while time.monotonic() < deadline:
            before = DELIVERED
            await asyncio.sleep(0.5)
            if before == DELIVERED:
                break
        LATENCIES.clear()
        await run_load(url, args.seconds, args.latency_concurrency, stamp=True, **shape)
        await asyncio.sleep(2.0)  # the last events reach the handler
        if LATENCIES:
            figures["p50"] = percentile(LATENCIES, 0.50) * 1000
            figures["p99"] = percentile(LATENCIES, 0.99) * 1000
            figures["latency_samples"] = len(LATENCIES)
    return figures


async def main(args: argparse.Namespace) -> None:
    for api in [a.strip() for a in args.api.split(",") if a.strip()]:
        await run_api(args, api)


async def run_api(args: argparse.Namespace, api: str) -> None:
    stores = [s.strip() for s in args.store.split(",") if s.strip()]
    what = (
        "async Invoke accepts" if api == "invoke" else f"PutEvents entries ({args.entries} a call)"
    )
    print(
        f"{what}, {args.seconds:g} s at {args.concurrency} in flight "
        f"(latency at {args.latency_concurrency} in flight), {args.rounds} rounds"
    )
    ratios: dict[str, list[float]] = {kind: [] for kind in stores}
    for round_ in range(1, args.rounds + 1):
        # Each durable run is compared with a baseline run just before it.
        for kind in stores:
            async with baseline() as url:
                base = await measure(url, args, durable=False, api=api)
            opened = sqlite_store() if kind == "sqlite" else postgres_store(args.pg_url)
            async with opened as store_url, router(store_url) as url:
                figures = await measure(url, args, durable=True, api=api)
            ratio = figures["rate"] / base["rate"]
            ratios[kind].append(ratio)
            line = (
                f"round {round_} {kind:8} baseline {base['rate']:6.0f}/s "
                f"({base['cpu_rate']:5.0f} per CPU-s)  durable {figures['rate']:6.0f}/s "
                f"({figures['cpu_rate']:5.0f} per CPU-s)  x{ratio:.2f}"
            )
            if "p50" in figures:
                line += (
                    f"  request->handler p50 {figures['p50']:.0f} ms p99 "
                    f"{figures['p99']:.0f} ms ({figures['latency_samples']} events)"
                )
            if figures["errors"]:
                line += f"  {figures['errors']} errors"
            print(line, flush=True)
    for kind, values in ratios.items():
        print(f"{what} {kind}: durable / baseline median x{statistics.median(values):.2f}")


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--latency-concurrency", type=int, default=4)
    parser.add_argument("--store", default="sqlite,postgres")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--api", default="invoke,putevents", help="invoke, putevents or both")
    parser.add_argument("--entries", type=int, default=1, help="entries per PutEvents call")
    parser.add_argument("--load", help=argparse.SUPPRESS)
    parser.add_argument("--stamp", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load:
        result = asyncio.run(
            load(args.load, args.seconds, args.concurrency, args.stamp, args.api, args.entries)
        )
        print(json.dumps(result))
        return
    asyncio.run(main(args))


if __name__ == "__main__":
    cli()
