"""Store setup on both databases: URLs, the schema check, migrations, error classification,
and the PostgreSQL change feed surviving a dropped connection."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import sqlalchemy as sa

from router.errors import ConfigError, SchemaOutdatedError, StoreError
from router.store import SQLStore, display_url, normalize_url
from router.store.migrate import (
    SCHEMA_LOCK_KEY,
    alembic_config,
    current_revision,
    head_revision,
    upgrade,
    upgrade_async,
)
from tests.fixtures.postgres import PG_HOST, PG_PORT, PG_USER
from tests.fixtures.procs import free_port
from tests.helpers import eventually, router_command
from tests.store.helpers import collect_until, external_execute, make_row, primed_feed


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("sqlite:///router.db", "sqlite+aiosqlite:///router.db"),
        ("sqlite:////var/lib/router.db", "sqlite+aiosqlite:////var/lib/router.db"),
        ("sqlite+aiosqlite:///x.db", "sqlite+aiosqlite:///x.db"),
        ("sqlite+pysqlite:///x.db", "sqlite+aiosqlite:///x.db"),
        ("data/router.db", "sqlite+aiosqlite:///data/router.db"),
        ("postgresql://u@db/router", "postgresql+asyncpg://u@db/router"),
        ("postgres://u:p%40ss@db:5433/router", "postgresql+asyncpg://u:p%40ss@db:5433/router"),
        ("postgresql+psycopg2://u@db/r", "postgresql+asyncpg://u@db/r"),
        ("postgresql+asyncpg://u@db/r", "postgresql+asyncpg://u@db/r"),
        ("postgresql://u@db/r?sslmode=require", "postgresql+asyncpg://u@db/r?ssl=require"),
    ],
)
def test_normalize_url(given: str, expected: str) -> None:
    assert normalize_url(given) == expected


def test_unknown_scheme_is_a_config_error_without_password() -> None:
    with pytest.raises(ConfigError, match="unsupported store URL scheme 'mysql'") as info:
        normalize_url("mysql://root:hunter2@db/x")
    assert "hunter2" not in str(info.value)


def test_store_url_attribute_hides_the_password() -> None:
    store = SQLStore("postgresql://router:hunter2@db.internal/router")
    assert store.url == "postgresql://router:***@db.internal/router"


@pytest.mark.parametrize(
    ("typed", "shown"),
    [
        ("sqlite:///router.db", "sqlite:///router.db"),
        ("sqlite+aiosqlite:///router.db", "sqlite:///router.db"),
        ("data/router.db", "sqlite:///data/router.db"),
        ("postgresql://router:hunter2@db/router", "postgresql://router:***@db/router"),
        ("postgres://router:hunter2@db/router", "postgresql://router:***@db/router"),
        ("postgresql+asyncpg://router:hunter2@db/router", "postgresql://router:***@db/router"),
    ],
)
def test_a_store_url_is_shown_one_way_however_it_was_typed(typed: str, shown: str) -> None:
    assert display_url(typed) == shown
    assert SQLStore(typed).url == shown
    assert display_url(sa.make_url(normalize_url(typed))) == shown


@pytest.fixture(
    params=[pytest.param("sqlite", id="sqlite"), pytest.param("postgres", id="postgres")]
)
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database without the router's schema, on each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'fresh.db'}"
    url: str = request.getfixturevalue("empty_pg_url")
    # trust auth ignores the password; it is there to prove messages never show it
    return url.replace("postgres@", "postgres:hunter2@")


async def test_start_refuses_an_empty_store(empty_url: str) -> None:
    store = SQLStore(empty_url)
    with pytest.raises(SchemaOutdatedError) as info:
        await store.start()
    message = str(info.value)
    assert "router db upgrade" in message
    assert "empty database" in message
    assert "hunter2" not in message
    assert info.value.retriable is False
    await store.aclose()


async def test_upgrade_is_idempotent_and_start_checks_revision(empty_url: str) -> None:
    assert await current_revision(empty_url) is None
    assert await upgrade_async(empty_url) == head_revision()
    assert await upgrade_async(empty_url) == head_revision()  # no-op the second time
    async with SQLStore(empty_url) as store:
        await store.create_mapping(make_row("kept"))
    # the blocking form works from inside a running loop too (runs on a helper thread)
    assert upgrade(empty_url) == head_revision()
    async with SQLStore(empty_url) as store:
        assert [m.name for m in await store.list_mappings()] == ["kept"]


async def test_migrations_create_every_column_the_code_declares(empty_url: str) -> None:
    """A new mapping setting (declared on MappingConfig) or any other new column needs a
    migration: the migrated schema has exactly the columns of router.store.tables."""
    from sqlalchemy.ext.asyncio import create_async_engine

    from router.store import tables

    await upgrade_async(empty_url)
    engine = create_async_engine(normalize_url(empty_url))

    def columns(conn: sa.Connection) -> dict[str, set[str]]:
        inspector = sa.inspect(conn)
        present = set(inspector.get_table_names())
        return {
            name: {column["name"] for column in inspector.get_columns(name)}
            for name in tables.metadata.tables
            if name in present
        }

    try:
        async with engine.connect() as conn:
            found = await conn.run_sync(columns)
    finally:
        await engine.dispose()
    declared = {name: set(t.columns.keys()) for name, t in tables.metadata.tables.items()}
    # mapping_versions serves SQLite's change feed only.
    assert set(declared) - set(found) <= {"mapping_versions"}
    assert found == {name: declared[name] for name in found}


async def test_start_refuses_an_old_or_unknown_revision(empty_url: str) -> None:
    from alembic import command
    from sqlalchemy.ext.asyncio import create_async_engine

    await upgrade_async(empty_url)
    engine = create_async_engine(normalize_url(empty_url))
    try:
        async with engine.begin() as conn:
            await conn.execute(sa.text("UPDATE alembic_version SET version_num = 'f00d'"))
        with pytest.raises(SchemaOutdatedError, match=r"f00d.*cannot downgrade"):
            await SQLStore(empty_url).start()

        # Back to an old schema (base): refused, and the message names the upgrade command.
        def downgrade(sync_conn: sa.Connection) -> None:
            config = alembic_config(empty_url)
            config.attributes["connection"] = sync_conn
            command.downgrade(config, "base")

        async with engine.begin() as conn:
            await conn.execute(
                sa.text(f"UPDATE alembic_version SET version_num = '{head_revision()}'")
            )
            await conn.run_sync(downgrade)
            tables = await conn.run_sync(lambda c: sa.inspect(c).get_table_names())
    finally:
        await engine.dispose()
    assert set(tables) <= {"alembic_version"}
    with pytest.raises(SchemaOutdatedError, match="router db upgrade"):
        await SQLStore(empty_url).start()
    assert await upgrade_async(empty_url) == head_revision()  # and back up again


async def _db_upgrade(url: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *router_command(),
        "db",
        "upgrade",
        "--store",
        url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_replicas_upgrading_one_postgres_store_at_once_take_turns(
    empty_pg_url: str,
) -> None:
    """Replicas that each run `router db upgrade` as they start: while one holds the schema
    lock the others wait for it, then find the schema current; all of them succeed."""
    import asyncpg

    database = empty_pg_url.rsplit("/", 1)[1]

    async def connect() -> asyncpg.Connection:
        return await asyncpg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, database=database)

    holder, watcher = await connect(), await connect()
    try:
        # Stand in for an upgrade in progress: take the lock, then start the replicas.
        transaction = holder.transaction()
        await transaction.start()
        await holder.execute("SELECT pg_advisory_xact_lock($1)", SCHEMA_LOCK_KEY)
        upgrades = [asyncio.create_task(_db_upgrade(empty_pg_url)) for _ in range(3)]
        try:

            async def waiting() -> bool:
                count = await watcher.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 "
                    "AND wait_event_type = 'Lock' AND wait_event = 'advisory'",
                    database,
                )
                return bool(count == len(upgrades))

            await eventually(waiting, timeout=60, what="every upgrade waiting for the lock")
        finally:
            await transaction.rollback()
            results = await asyncio.gather(*upgrades)
    finally:
        await holder.close()
        await watcher.close()
    for code, output in results:
        assert code == 0, output
        assert f"schema at revision {head_revision()}" in output
    assert await current_revision(empty_pg_url) == head_revision()


async def test_unreachable_postgres_is_a_temporary_error() -> None:
    store = SQLStore(f"postgresql://postgres:hunter2@127.0.0.1:{free_port()}/nowhere")
    with pytest.raises(StoreError) as info:
        await store.start()
    assert info.value.retriable is True
    assert "hunter2" not in str(info.value)
    assert "connecting" in str(info.value)
    await store.aclose()


async def test_missing_postgres_database_is_not_temporary(pg_url: str) -> None:
    store = SQLStore(pg_url.rsplit("/", 1)[0] + "/router_no_such_database")
    with pytest.raises(StoreError, match="router_no_such_database") as info:
        await store.start()
    assert info.value.retriable is False


async def test_sqlite_logic_errors_are_permanent(tmp_path: Path) -> None:
    store = SQLStore(f"sqlite:///{tmp_path / 'missing-dir' / 'x.db'}")
    with pytest.raises(StoreError, match="missing-dir of the SQLite file does not exist") as info:
        await store.start()
    assert info.value.retriable is False
    with pytest.raises(StoreError, match="does not exist"):
        await upgrade_async(f"sqlite:///{tmp_path / 'missing-dir' / 'x.db'}")

    # A file that is not a database: a logic error, not worth retrying.
    (tmp_path / "garbage.db").write_bytes(b"not a database" * 100)
    garbage = SQLStore(f"sqlite:///{tmp_path / 'garbage.db'}")
    with pytest.raises(StoreError, match="not a database") as info:
        await garbage.start()
    assert info.value.retriable is False


async def test_store_errors_hide_row_secrets(store: SQLStore) -> None:
    """A failing statement's message carries the driver's reason, not the parameters."""
    await store.create_mapping(make_row("dup", source_config={"password": "hunter2"}))
    with pytest.raises(StoreError) as info:
        await store.create_mapping(make_row("dup", source_config={"password": "hunter2"}))
    assert "hunter2" not in str(info.value)
    assert "hunter2" not in str(info.value.__cause__).split("[SQL")[0]


async def test_pg_feed_reconnects_after_the_connection_is_killed(pg_store: SQLStore) -> None:
    row = make_row("m")
    await pg_store.create_mapping(row)
    feed = await primed_feed(pg_store)
    try:
        database = pg_store.engine.url.database
        await external_execute(
            pg_store,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE datname = '{database}' AND query LIKE 'LISTEN%'",
        )
        # After reconnecting the feed says "reload all", then reports changes again.
        assert await asyncio.wait_for(feed.__anext__(), 10) == set()
        await external_execute(
            pg_store, f"UPDATE event_source_mappings SET batch_size = 3 WHERE uuid = '{row.uuid}'"
        )
        await collect_until(feed, lambda s: row.uuid in s)
    finally:
        await feed.aclose()


async def test_pg_truncate_means_reload_all(pg_store: SQLStore) -> None:
    await pg_store.create_mapping(make_row("m"))
    feed = await primed_feed(pg_store)
    try:
        await external_execute(pg_store, "TRUNCATE event_source_mappings")
        assert await asyncio.wait_for(feed.__anext__(), 5) == set()
    finally:
        await feed.aclose()
