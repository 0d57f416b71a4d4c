"""The SQL store: SQLite (embedded default) or PostgreSQL (shared by replicas).

``open_store(url)`` builds a :class:`SQLStore` (not connected yet): ``async with
open_store(url) as store`` or ``await store.start()``; :func:`connect` opens one to run on.
``router db upgrade`` runs :func:`router.store.migrate.upgrade`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from router.errors import SchemaOutdatedError, SetupError, StoreError
from router.secrets import redact
from router.store.engine import (
    DEFAULT_URL,
    PermanentStoreError,
    TemporaryStoreError,
    display_url,
    normalize_url,
)
from router.store.sql import SQLStore


def open_store(url: str = DEFAULT_URL, *, poll_interval: float = 1.0) -> SQLStore:
    """A store for ``url`` (short forms accepted, see :func:`normalize_url`); not started."""
    return SQLStore(url, poll_interval=poll_interval)


async def connect(url: str) -> SQLStore:
    """The store at ``url``, started. An embedded SQLite store is created or upgraded on the
    spot; any other store must be upgraded with ``router db upgrade`` (an older schema raises
    :class:`SchemaOutdatedError`). A store that cannot be opened raises :class:`SetupError`."""
    from router.store.migrate import upgrade_async

    with setup_errors():
        if normalize_url(url).startswith("sqlite"):
            await upgrade_async(url)
        store = open_store(url)
        await store.start()
    return store


@contextlib.contextmanager
def setup_errors() -> Iterator[None]:
    """A store that cannot be opened is a setup problem (:class:`SetupError`) whose message
    says where the URL comes from; an outdated schema keeps its own message."""
    try:
        yield
    except SchemaOutdatedError:
        raise
    except StoreError as e:
        message = redact(str(e))
        if "--store" not in message:
            message += (
                "; check that the store is reachable and the URL (from --store, "
                "$ROUTER_STORE_URL or router.store)"
            )
        raise SetupError(message) from e


__all__ = [
    "DEFAULT_URL",
    "PermanentStoreError",
    "SQLStore",
    "TemporaryStoreError",
    "connect",
    "display_url",
    "normalize_url",
    "open_store",
    "setup_errors",
]
