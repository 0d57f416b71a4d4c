"""Schema migrations (Alembic, scripts in the installed ``migrations`` package).

``router db upgrade --store URL`` calls :func:`upgrade`; :meth:`SQLStore.start` refuses a
store whose revision is not :func:`head_revision`. No ``alembic.ini`` is needed.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

import migrations
from router.errors import SchemaOutdatedError
from router.store.engine import (
    backend_of,
    check_driver,
    check_sqlite_location,
    normalize_url,
    store_errors,
)
from router.store.tables import alembic_version

MIGRATIONS_DIR = Path(migrations.__file__).resolve().parent

SCHEMA_LOCK_KEY = 0x726F75746572  # "router"
"""PostgreSQL advisory lock held by an upgrade for its whole transaction."""


def alembic_config(url: str | None = None) -> Config:
    """An Alembic config pointing at the installed migrations (no ini file)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        # Passed as an attribute, not an ini option: a password may contain '%'.
        config.attributes["url"] = normalize_url(url)
    return config


@functools.cache
def head_revision() -> str:
    """The schema revision this router needs."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


@functools.cache
def _known_revisions() -> frozenset[str]:
    script = ScriptDirectory.from_config(alembic_config())
    return frozenset(r.revision for r in script.walk_revisions())


async def read_revision(conn: AsyncConnection) -> str | None:
    """The revision recorded in ``alembic_version``; None for a store without the schema."""

    def read(sync_conn: Connection) -> str | None:
        if not sa.inspect(sync_conn).has_table("alembic_version"):
            return None
        return sync_conn.execute(sa.select(alembic_version.c.version_num)).scalar()

    return await conn.run_sync(read)


def check_revision(revision: str | None, shown_url: str) -> None:
    """Raise :class:`SchemaOutdatedError` unless ``revision`` is the head revision."""
    head = head_revision()
    if revision == head:
        return
    command_hint = f"run `router db upgrade --store {shown_url}`"
    if revision is None:
        raise SchemaOutdatedError(
            f"the store at {shown_url} has no router schema (empty database), this router "
            f"needs schema revision {head}: {command_hint}"
        )
    if revision not in _known_revisions():
        raise SchemaOutdatedError(
            f"the store at {shown_url} has schema revision {revision}, which this router does "
            f"not know (it needs {head}): the store was upgraded by a newer router; run that "
            f"version (`router db upgrade` cannot downgrade)"
        )
    raise SchemaOutdatedError(
        f"the store at {shown_url} has schema revision {revision}, this router needs "
        f"{head}: {command_hint}"
    )


async def current_revision(url: str) -> str | None:
    """The schema revision of the store at ``url`` (None: no schema yet)."""
    url = normalize_url(url)
    check_driver(url)
    check_sqlite_location(url)
    engine = create_async_engine(url, poolclass=pool.NullPool)
    try:
        with store_errors(url, backend_of(url), "reading the schema revision"):
            async with engine.connect() as conn:
                return await read_revision(conn)
    finally:
        await engine.dispose()


async def upgrade_async(url: str, revision: str = "head") -> str | None:
    """Migrate the store at ``url`` to ``revision``; returns the revision it is at after.
    Idempotent: a store already at the head is left as it is.

    On PostgreSQL the upgrade holds an advisory lock for its transaction, so replicas that
    all run ``router db upgrade`` as they start take turns: the first migrates, the others
    then find the schema current and change nothing (without the lock, two concurrent
    ``CREATE TABLE`` fail one of the upgrades)."""
    url = normalize_url(url)
    config = alembic_config(url)

    def run(sync_conn: Connection) -> None:
        config.attributes["connection"] = sync_conn
        command.upgrade(config, revision)

    check_driver(url)
    check_sqlite_location(url)
    engine = create_async_engine(url, poolclass=pool.NullPool)
    try:
        with store_errors(url, backend_of(url), f"upgrading the schema to {revision}"):
            async with engine.begin() as conn:
                if conn.dialect.name == "postgresql":
                    lock = sa.text("SELECT pg_advisory_xact_lock(:key)")
                    await conn.execute(lock, {"key": SCHEMA_LOCK_KEY})
                await conn.run_sync(run)
            async with engine.connect() as conn:
                return await read_revision(conn)
    finally:
        await engine.dispose()


def upgrade(url: str, revision: str = "head") -> str | None:
    """Blocking :func:`upgrade_async`, callable with or without a running event loop (in a
    loop's thread it runs on a helper thread with its own loop)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(upgrade_async(url, revision))
    result: list[str | None] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            result.append(asyncio.run(upgrade_async(url, revision)))
        except BaseException as e:  # noqa: BLE001 - handed to the calling thread
            errors.append(e)

    thread = threading.Thread(target=work, name="router-db-upgrade")
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return result[0]


__all__ = [
    "MIGRATIONS_DIR",
    "alembic_config",
    "check_revision",
    "current_revision",
    "head_revision",
    "read_revision",
    "upgrade",
    "upgrade_async",
]
