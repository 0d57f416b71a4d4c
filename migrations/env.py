"""Alembic environment for the router's store.

Runs in three ways:

* from :func:`router.store.migrate.upgrade` (``router db upgrade``): the caller passes an
  open synchronous connection in ``config.attributes["connection"]`` (it comes from an async
  engine through ``run_sync``), so no ini file and no event loop handling is needed here;
* from the ``alembic`` command line (``alembic -c migrations/alembic.ini ...``) with the URL in
  ``-x url=...``, ``sqlalchemy.url`` or the ``ROUTER_STORE`` environment variable;
* offline (``--sql``), printing the DDL.

Logging is left as the application configured it (no ``fileConfig``).
"""

from __future__ import annotations

import asyncio
import os

from alembic import context
from sqlalchemy import pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from router.store.engine import normalize_url
from router.store.tables import metadata

config = context.config
target_metadata = metadata


def _url() -> str:
    url = (
        config.attributes.get("url")
        or context.get_x_argument(as_dictionary=True).get("url")
        or config.get_main_option("sqlalchemy.url")
        or os.environ.get("ROUTER_STORE")
    )
    if not url:
        raise RuntimeError("no store URL: pass -x url=... or set ROUTER_STORE")
    return normalize_url(str(url))


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things; batch mode recreates tables for later revisions.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_async(url: str) -> None:
    engine = create_async_engine(url, poolclass=pool.NullPool)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_run)
    finally:
        await engine.dispose()


def run_offline() -> None:
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
    else:
        asyncio.run(_run_async(_url()))


if context.is_offline_mode():
    run_offline()
else:
    run_online()
