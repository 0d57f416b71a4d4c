"""What the benchmarks share: a helper server started and stopped by PID, a router running
one YAML configuration on a throwaway store (SQLite, or a fresh PostgreSQL database), a count
of the store's writes, this process's RSS, and percentiles."""

from __future__ import annotations

import collections
import functools
import os
import resource
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from router.app import Router
from router.config import apply_config, load_config_text
from router.store import SQLStore
from router.store.migrate import upgrade_async
from tests.fixtures.postgres import create_pg_database, drop_pg_database, pg_database_url
from tests.fixtures.procs import background, free_port

WRITES = (
    "put_checkpoints",
    "delete_checkpoints",
    "claim_fire",
    "claim_fires",
    "update_checkpoints",
    "acquire_lease",
    "release_lease",
    "add_stats",
    "set_mapping_status",
    "add_failed_event",
    "enqueue_events",
    "claim_events",
    "renew_events",
    "release_events",
    "delete_events",
)
"""The store's methods that write (each one call = one write, whatever rows it touches)."""


@contextmanager
def server(argv: Sequence[str], port: int, timeout: float = 60.0) -> Iterator[None]:
    """Run ``argv`` (listening on 127.0.0.1:``port``) for the duration of the block."""
    try:
        with background(argv, port=port, timeout=timeout):
            yield
    except (RuntimeError, TimeoutError) as e:
        raise SystemExit(f"{argv[0]} did not start: {e}") from e


def count_writes(
    store: SQLStore, counts: collections.Counter[str] | None = None
) -> collections.Counter[str]:
    """Count the calls of the store's writing methods (``WRITES``) from now on, by name,
    into ``counts`` (a new counter by default)."""
    counts = collections.Counter() if counts is None else counts

    def counted(name: str, method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        @functools.wraps(method)
        async def call(*args: Any, **kwargs: Any) -> Any:
            counts[name] += 1
            return await method(*args, **kwargs)

        return call

    for name in WRITES:
        setattr(store, name, counted(name, getattr(store, name)))
    return counts


@asynccontextmanager
async def store_at(backend: str = "sqlite") -> AsyncIterator[str]:
    """The URL of a fresh store at the current schema: a SQLite file in a temporary folder, or
    (``postgres``) a new database on 127.0.0.1:5432, dropped when the block ends."""
    if backend == "sqlite":
        with tempfile.TemporaryDirectory() as folder:
            url = f"sqlite:///{Path(folder) / 'bench.db'}"
            await upgrade_async(url)
            yield url
        return
    name = await create_pg_database()
    try:
        url = pg_database_url(name)
        await upgrade_async(url)
        yield url
    finally:
        await drop_pg_database(name)


@asynccontextmanager
async def running_router(
    yaml_text: str, url: str | None = None, writes: collections.Counter[str] | None = None
) -> AsyncIterator[Router]:
    """A Router running ``yaml_text`` on the store at ``url`` (default: a fresh SQLite
    store), stopped when the block ends. With ``writes``, the store's writes made while the
    router runs are counted into it (by method name)."""
    async with _given_or_fresh(url) as where:
        store = SQLStore(where)
        await store.start()
        try:
            config = load_config_text(yaml_text, "bench.yaml")
            await apply_config(config, store)
            if writes is not None:
                count_writes(store, writes)
            router = Router(config, store, shutdown_timeout=10)
            await router.start()
            try:
                yield router
            finally:
                await router.stop()
        finally:
            await store.aclose()


@asynccontextmanager
async def _given_or_fresh(url: str | None) -> AsyncIterator[str]:
    if url is not None:
        yield url
        return
    async with store_at("sqlite") as fresh:
        yield fresh


def fake_aws_credentials(region: str) -> None:
    """Credentials and region for an emulator (moto), unless the environment has its own."""
    for key, value in {
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": region,
    }.items():
        os.environ.setdefault(key, value)


def rss_mb() -> float:
    """This process's resident set size now, in MB (from /proc), or its peak elsewhere."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values``, nearest rank; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered) + 0.5) - 1))]


def load() -> str:
    """The machine's load averages (1, 5, 15 minutes), to print beside a figure."""
    try:
        return "load " + " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "load ?"


__all__ = [
    "count_writes",
    "fake_aws_credentials",
    "free_port",
    "load",
    "percentile",
    "rss_mb",
    "running_router",
    "server",
    "store_at",
]


def filter_yaml(patterns: Sequence[str]) -> str:
    """The ``filter_criteria`` lines of a mapping (indented for a list item's keys) with
    ``patterns``; nothing without any."""
    if not patterns:
        return ""
    return "    filter_criteria:\n      filters:\n" + "".join(
        f"        - pattern: '{p}'\n" for p in patterns
    )
