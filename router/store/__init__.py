"""The SQL store: SQLite (embedded default) or PostgreSQL (shared by replicas).

``open_store(url)`` builds a :class:`SQLStore` (not connected yet): ``async with
open_store(url) as store`` or ``await store.start()``. ``router db upgrade`` runs
:func:`router.store.migrate.upgrade`.
"""

from __future__ import annotations

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


__all__ = [
    "DEFAULT_URL",
    "PermanentStoreError",
    "SQLStore",
    "TemporaryStoreError",
    "display_url",
    "normalize_url",
    "open_store",
]
