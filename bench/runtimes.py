"""Managed execution environments: what the hosted Runtime API costs per invocation.

Run by hand: ``python bench/runtimes.py [--invocations 5000] [--rounds 5] [--cold-starts 10]
[--event-loop asyncio|uvloop]``.

In the same run, each round invokes a no-op handler ``--invocations`` times, with
``--concurrency`` callers (2 by default):

* baseline: the ``python`` invoker, the handler called in-process (a worker thread);
* runtime-api: the same handler under awslambdaric, in ``--concurrency`` warm managed
  environments (provisioned), through the hosted Runtime API (each invocation is a ``/next``
  answer and a ``/response`` over loopback HTTP, START/END/REPORT lines and a ``/proc``
  memory sample);
* isolation: process: the ``python`` invoker with the handler in ``--concurrency`` warm
  worker processes (the router's own runtime loop under the same hosted Runtime API, no
  START/END/REPORT lines).

It prints invocations/s of each, their ratios to the baseline (runtime-api's target is
>= 0.25), p50/p99 of the latency each invocation adds (the whole ``invoke`` call: for a
no-op handler, all of it is overhead), and the CPU time each invocation took in the router's
process and in the runtimes' (far less sensitive than the rates to what else runs on the
machine: a rate on a loaded machine is mostly the wait for a CPU at each hand-off between
processes). Then the cold start of an awslambdaric environment:
from the invocation that finds no environment to its answer, and the init duration (spawn
to first ``/next``).

The router's console logging is set up as ``router run`` does, writing to /dev/null, so the
log lines cost what they cost in production (three per invocation: START, END, REPORT;
``--system-log-level WARN`` leaves them out, as the function setting does).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import os
import resource
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Literal, cast

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from router import logs
from router.abc import Invoker, InvokerContext, Store
from router.app import tune_gc
from router.cli import EVENT_LOOPS, run_loop
from router.invokers.python import PythonInvoker, PythonInvokerSettings
from router.invokers.runtime_api import (
    RuntimeApiInvoker,
    RuntimeApiInvokerSettings,
    RuntimeSettings,
)
from router.models import FunctionConfig, Invocation, Outcome, PluginSettings

HANDLER = "def handler(event, context):\n    return None\n"
EVENT = {"Records": [{"messageId": str(i), "body": "x"} for i in range(10)]}


def context() -> InvokerContext:
    return InvokerContext(store=cast(Store, None), report_init_error=lambda _: None)


def function(invoker: str, settings: PluginSettings) -> FunctionConfig:
    return FunctionConfig(name="noop", invoker=invoker, timeout=30.0, settings=settings)


def call() -> Invocation:
    return Invocation(
        function="noop", event=EVENT, request_id=str(uuid.uuid4()), deadline=time.time() + 30
    )


def _cpu_seconds(pid: int | None = None) -> float:
    """CPU time (user + system) of this process, or of process ``pid`` (from ``/proc``)."""
    if pid is None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


CPU: dict[str, float] = {}
"""CPU microseconds per invocation of the last measured run: ``router`` (this process) and
``runtimes`` (the environments' processes, hosted runs only)."""


async def drive(
    invoker: Invoker, total: int, concurrency: int, pids: list[int] | None = None
) -> tuple[float, list[float]]:
    """(invocations/s, per-invocation latencies in seconds); the CPU it took goes to
    :data:`CPU` (``pids``: the runtimes' processes)."""
    latencies: list[float] = []
    left = total

    async def caller() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            invocation = call()
            started = time.perf_counter()
            result = await invoker.invoke(invocation)
            latencies.append(time.perf_counter() - started)
            if result.outcome is not Outcome.SUCCESS:
                raise SystemExit(f"invocation failed: {result}")

    pids = pids or []
    cpu = _cpu_seconds()
    runtimes = sum(_cpu_seconds(pid) for pid in pids)
    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    rate = total / (time.perf_counter() - started)
    CPU.clear()
    CPU["router"] = (_cpu_seconds() - cpu) * 1e6 / total
    if pids:
        CPU["runtimes"] = (sum(_cpu_seconds(pid) for pid in pids) - runtimes) * 1e6 / total
    return rate, latencies


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def in_process(folder: Path, total: int, concurrency: int) -> tuple[float, list[float]]:
    settings = PythonInvokerSettings(handler="noop_app.handler", path=str(folder))
    invoker = PythonInvoker(function("python", settings), context())
    await invoker.start()
    try:
        await drive(invoker, min(total, 500), concurrency)  # warm-up
        return await drive(invoker, total, concurrency)
    finally:
        await invoker.aclose()


async def isolated(folder: Path, total: int, concurrency: int) -> tuple[float, list[float]]:
    """The ``python`` invoker with ``isolation: process``: the handler in ``concurrency``
    worker processes (the router's own runtime loop under the hosted Runtime API)."""
    settings = PythonInvokerSettings(
        handler="noop_app.handler", path=str(folder), isolation="process", max_processes=concurrency
    )
    invoker = PythonInvoker(function("python", settings), context())
    await invoker.start()
    try:
        # The first worker starts with the function; the warm-up starts the others.
        await drive(invoker, min(total, 500), concurrency)
        assert invoker.isolation is not None
        await invoker.isolation.wait_idle(concurrency)
        return await drive(invoker, total, concurrency)
    finally:
        await invoker.aclose()


SystemLogLevel = Literal["DEBUG", "INFO", "WARN"]


def managed_settings(
    folder: Path, warm: int, system_log_level: SystemLogLevel = "INFO"
) -> RuntimeApiInvokerSettings:
    return RuntimeApiInvokerSettings(
        reserved_concurrency=max(warm, 1),
        provisioned_concurrency=warm,
        system_log_level=system_log_level,
        runtime=RuntimeSettings(
            command=[sys.executable, "-m", "awslambdaric", "noop_app.handler"], cwd=str(folder)
        ),
    )


async def hosted(
    folder: Path, total: int, concurrency: int, system_log_level: SystemLogLevel = "INFO"
) -> tuple[float, list[float]]:
    invoker = RuntimeApiInvoker(
        function("runtime-api", managed_settings(folder, concurrency, system_log_level)),
        context(),
    )
    await invoker.start()
    try:
        await invoker.wait_idle(concurrency)
        await drive(invoker, min(total, 500), concurrency)  # warm-up
        assert invoker.pool is not None
        pids = [env.process.pid for env in invoker.pool.environments if env.process is not None]
        return await drive(invoker, total, concurrency, pids)
    finally:
        await invoker.aclose()


async def cold_starts(folder: Path, count: int) -> tuple[list[float], list[float]]:
    """(first-invocation latencies, init durations), seconds."""
    firsts: list[float] = []
    inits: list[float] = []
    for _ in range(count):
        invoker = RuntimeApiInvoker(function("runtime-api", managed_settings(folder, 0)), context())
        await invoker.start()
        try:
            started = time.perf_counter()
            result = await invoker.invoke(call())
            firsts.append(time.perf_counter() - started)
            if result.outcome is not Outcome.SUCCESS:
                raise SystemExit(f"cold invocation failed: {result}")
            assert invoker.pool is not None
            [env] = invoker.pool.environments
            assert env.init_duration is not None
            inits.append(env.init_duration)
        finally:
            await invoker.aclose()
    return firsts, inits


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def quiet_logging(level: str) -> None:
    """The router's console logging, as ``router run`` sets it up, into /dev/null."""
    logs.setup("console", level)
    null = open(os.devnull, "w")  # noqa: SIM115 - for the life of the process
    for handler in logging.getLogger().handlers:
        cast(logging.StreamHandler[Any], handler).setStream(null)


async def main(args: argparse.Namespace) -> None:
    tune_gc()
    quiet_logging(args.log_level)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "noop_app.py").write_text(HANDLER)
        ratios: list[float] = []
        isolated_ratios: list[float] = []
        print(
            f"{args.invocations} no-op invocations per run, {args.concurrency} callers, "
            f"log level {args.log_level}, system_log_level {args.system_log_level}, "
            f"event loop {args.event_loop}"
        )
        for n in range(1, args.rounds + 1):
            runs: list[tuple[str, Callable[..., Awaitable[tuple[float, list[float]]]]]] = [
                ("python in-process", in_process),
                (
                    f"runtime-api, {args.concurrency} warm awslambdaric environments",
                    functools.partial(hosted, system_log_level=args.system_log_level),
                ),
                (f"python isolation: process, {args.concurrency} workers", isolated),
            ]
            rates = []
            for name, run in runs:
                rate, latencies = await run(folder, args.invocations, args.concurrency)
                rates.append(rate)
                cpu = f"router CPU {CPU['router']:.0f} us"
                if "runtimes" in CPU:
                    cpu += f", runtimes' CPU {CPU['runtimes']:.0f} us"
                print(
                    f"round {n}: {name}: {rate:,.0f} invocations/s, "
                    f"p50 {ms(percentile(latencies, 0.5))}, p99 {ms(percentile(latencies, 0.99))}; "
                    f"{cpu} per invocation"
                )
            ratios.append(rates[1] / rates[0])
            isolated_ratios.append(rates[2] / rates[0])
            print(
                f"round {n}: runtime-api / in-process = {ratios[-1]:.2f}, "
                f"isolation: process / in-process = {isolated_ratios[-1]:.2f}"
            )
        print(
            f"median ratios over {args.rounds} rounds: runtime-api "
            f"{statistics.median(ratios):.2f}, isolation: process "
            f"{statistics.median(isolated_ratios):.2f}"
        )
        if args.cold_starts:
            firsts, inits = await cold_starts(folder, args.cold_starts)
            print(
                f"cold start of an awslambdaric environment ({args.cold_starts} starts): "
                f"first invocation p50 {ms(statistics.median(firsts))} "
                f"(min {ms(min(firsts))}, max {ms(max(firsts))}); "
                f"init duration p50 {ms(statistics.median(inits))} "
                f"(min {ms(min(inits))}, max {ms(max(inits))})"
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--invocations", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--cold-starts", type=int, default=10)
    parser.add_argument("--log-level", default="INFO", choices=["INFO", "WARNING"])
    parser.add_argument(
        "--system-log-level",
        default="INFO",
        choices=["INFO", "WARN"],
        help="the function's system_log_level (WARN: no START/END/REPORT lines)",
    )
    parser.add_argument(
        "--event-loop",
        default="asyncio",
        choices=EVENT_LOOPS,
        help="the event loop every run of the round uses (router run --event-loop)",
    )
    args = parser.parse_args()
    run_loop(args.event_loop, main(args))
