"""What the benchmarks share: a helper server started and stopped by PID, and a router
running one YAML configuration on a throwaway SQLite store."""

from __future__ import annotations

import sys
import tempfile
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from router.app import Router
from router.config import apply_config, load_config_text
from router.store import SQLStore
from router.store.migrate import upgrade_async
from tests.fixtures.procs import background, free_port


@contextmanager
def server(argv: Sequence[str], port: int, timeout: float = 60.0) -> Iterator[None]:
    """Run ``argv`` (listening on 127.0.0.1:``port``) for the duration of the block."""
    try:
        with background(argv, port=port, timeout=timeout):
            yield
    except (RuntimeError, TimeoutError) as e:
        raise SystemExit(f"{argv[0]} did not start: {e}") from e


@asynccontextmanager
async def running_router(yaml_text: str) -> AsyncIterator[Router]:
    """A Router running ``yaml_text`` on a fresh SQLite store, stopped when the block ends."""
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{Path(folder) / 'bench.db'}"
        await upgrade_async(url)
        store = SQLStore(url)
        await store.start()
        try:
            config = load_config_text(yaml_text, "bench.yaml")
            await apply_config(config, store)
            router = Router(config, store, shutdown_timeout=10)
            await router.start()
            try:
                yield router
            finally:
                await router.stop()
        finally:
            await store.aclose()


__all__ = ["free_port", "running_router", "server"]
