"""The initial schema: mappings, checkpoints, schedule fires, leases, stats, failed events.

Also creates the change notification machinery (PostgreSQL: ``pg_notify('router_changes',
<mapping uuid>)`` triggers; SQLite: triggers bumping ``mapping_versions``), the
``mapping_overview`` view for operators, and server defaults that let an operator INSERT a
mapping in plain SQL.

Revision ID: 0001
Revises:
Create Date: 2024-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Columns the router writes on its own (status); changing only these never notifies.
STATUS_COLUMNS = ("state", "state_transition_reason", "last_processing_result", "updated_at")
# Every other column of event_source_mappings, as of this revision (SQLite trigger WHEN).
CONFIG_COLUMNS = (
    "uuid",
    "name",
    "function_name",
    "source_type",
    "source_config",
    "enabled",
    "batch_size",
    "maximum_batching_window",
    "starting_position",
    "starting_position_timestamp",
    "filter_criteria",
    "maximum_retry_attempts",
    "maximum_record_age",
    "bisect_batch_on_function_error",
    "function_response_types",
    "parallelization_factor",
    "maximum_concurrency",
    "destination_config",
    "origin",
    "config_hash",
    "created_at",
)

SQLITE_NOW = "(strftime('%Y-%m-%d %H:%M:%f', 'now'))"
# A random version-4 UUID in its usual text form, so plain-SQL INSERTs get one.
SQLITE_UUID = (
    "(lower(hex(randomblob(4))) || '-' || lower(hex(randomblob(2))) || '-4' || "
    "substr(lower(hex(randomblob(2))), 2) || '-' || "
    "substr('89ab', 1 + (abs(random()) % 4), 1) || substr(lower(hex(randomblob(2))), 2) || '-' || "
    "lower(hex(randomblob(6))))"
)


def upgrade() -> None:
    pg = op.get_context().dialect.name == "postgresql"
    now = sa.text("now()") if pg else sa.text(SQLITE_NOW)
    json_type: sa.types.TypeEngine[object] = postgresql.JSONB() if pg else sa.JSON()
    ts = sa.DateTime(timezone=True)

    op.create_table(
        "event_source_mappings",
        sa.Column(
            "uuid",
            sa.String(36),
            primary_key=True,
            server_default=sa.text("gen_random_uuid()::text" if pg else SQLITE_UUID),
        ),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("function_name", sa.String(255), nullable=False),
        sa.Column("source_type", sa.String(64), nullable=False),
        sa.Column("source_config", json_type, nullable=False, server_default=sa.text("'{}'")),
        sa.Column("enabled", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("batch_size", sa.Integer),
        sa.Column("maximum_batching_window", sa.Float),
        sa.Column("starting_position", sa.String(32)),
        sa.Column("starting_position_timestamp", ts),
        sa.Column("filter_criteria", json_type),
        sa.Column("maximum_retry_attempts", sa.Integer),
        sa.Column("maximum_record_age", sa.Float),
        sa.Column("bisect_batch_on_function_error", sa.Boolean),
        sa.Column("function_response_types", json_type),
        sa.Column("parallelization_factor", sa.Integer),
        sa.Column("maximum_concurrency", sa.Integer),
        sa.Column("destination_config", json_type),
        sa.Column("state", sa.String(32), nullable=False, server_default="Creating"),
        sa.Column("state_transition_reason", sa.Text, nullable=False, server_default=""),
        sa.Column(
            "last_processing_result",
            sa.Text,
            nullable=False,
            server_default="No records processed",
        ),
        sa.Column("origin", sa.String(8), nullable=False, server_default="sql"),
        sa.Column("config_hash", sa.String(128), nullable=False, server_default=""),
        sa.Column("created_at", ts, nullable=False, server_default=now),
        sa.Column("updated_at", ts, nullable=False, server_default=now),
        sa.UniqueConstraint("name", name="uq_event_source_mappings_name"),
        sa.CheckConstraint("origin IN ('yaml', 'sql')", name="ck_event_source_mappings_origin"),
    )
    op.create_table(
        "checkpoints",
        sa.Column("mapping_uuid", sa.String(36), primary_key=True),
        sa.Column("key", sa.String(512), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
        sa.Column("updated_at", ts, nullable=False, server_default=now),
    )
    op.create_table(
        "schedule_fires",
        sa.Column("schedule_key", sa.String(512), primary_key=True),
        sa.Column("scheduled_time", ts, primary_key=True),
        sa.Column("fired_at", ts, nullable=False, server_default=now),
        sa.Column("owner", sa.String(255), nullable=False),
    )
    op.create_table(
        "leases",
        sa.Column("key", sa.String(512), primary_key=True),
        sa.Column("owner", sa.String(255), nullable=False),
        sa.Column("expires_at", ts, nullable=False),
    )
    op.create_table(
        "mapping_stats",
        sa.Column("mapping_uuid", sa.String(36), primary_key=True),
        sa.Column("records_in", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("filtered", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("invoked", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("failed", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("last_invoke_at", ts),
        sa.Column("updated_at", ts, nullable=False, server_default=now),
    )
    op.create_table(
        "failed_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("mapping_uuid", sa.String(36), nullable=False),
        sa.Column("function_name", sa.String(255), nullable=False),
        sa.Column("condition", sa.String(255), nullable=False),
        sa.Column("payload", json_type, nullable=False),
        sa.Column("created_at", ts, nullable=False, server_default=now),
        sa.Column("replayed_at", ts),
    )
    op.create_index("ix_failed_events_mapping", "failed_events", ["mapping_uuid", "replayed_at"])
    op.execute(OVERVIEW_VIEW)
    if pg:
        for statement in PG_TRIGGERS:
            op.execute(statement)
    else:
        op.create_table(
            "mapping_versions",
            sa.Column("uuid", sa.String(36), primary_key=True),
            sa.Column("version", sa.BigInteger, nullable=False),
        )
        for statement in sqlite_triggers():
            op.execute(statement)


def downgrade() -> None:
    pg = op.get_context().dialect.name == "postgresql"
    op.execute("DROP VIEW IF EXISTS mapping_overview")
    if pg:
        for statement in PG_DROP:
            op.execute(statement)
    else:
        op.drop_table("mapping_versions")  # its triggers go with the tables below
    for table in (
        "failed_events",
        "mapping_stats",
        "leases",
        "schedule_fires",
        "checkpoints",
        "event_source_mappings",
    ):
        op.drop_table(table)


OVERVIEW_VIEW = """
CREATE VIEW mapping_overview AS
SELECT
    m.name,
    m.uuid,
    m.function_name,
    m.source_type,
    m.state,
    m.enabled,
    m.batch_size,
    m.last_processing_result,
    m.state_transition_reason,
    m.origin,
    COALESCE(s.records_in, 0) AS records_in,
    COALESCE(s.filtered, 0) AS filtered,
    COALESCE(s.invoked, 0) AS invoked,
    COALESCE(s.failed, 0) AS failed,
    s.last_invoke_at,
    (SELECT count(*) FROM failed_events f
      WHERE f.mapping_uuid = m.uuid AND f.replayed_at IS NULL) AS failed_events,
    m.updated_at
FROM event_source_mappings m
LEFT JOIN mapping_stats s ON s.mapping_uuid = m.uuid
"""

_STATUS_ARRAY = "ARRAY[" + ", ".join(f"'{c}'" for c in STATUS_COLUMNS) + "]::text[]"

PG_TRIGGERS = (
    """
    CREATE FUNCTION router_notify_mapping_change() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'DELETE' THEN
            PERFORM pg_notify('router_changes', OLD.uuid);
        ELSE
            PERFORM pg_notify('router_changes', NEW.uuid);
            IF TG_OP = 'UPDATE' AND OLD.uuid IS DISTINCT FROM NEW.uuid THEN
                PERFORM pg_notify('router_changes', OLD.uuid);
            END IF;
        END IF;
        RETURN NULL;
    END $$
    """,
    """
    CREATE FUNCTION router_notify_checkpoint_change() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'DELETE' THEN
            PERFORM pg_notify('router_changes', OLD.mapping_uuid);
        ELSE
            PERFORM pg_notify('router_changes', NEW.mapping_uuid);
            IF TG_OP = 'UPDATE' AND OLD.mapping_uuid IS DISTINCT FROM NEW.mapping_uuid THEN
                PERFORM pg_notify('router_changes', OLD.mapping_uuid);
            END IF;
        END IF;
        RETURN NULL;
    END $$
    """,
    # An empty payload means "reload everything".
    """
    CREATE FUNCTION router_notify_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM pg_notify('router_changes', '');
        RETURN NULL;
    END $$
    """,
    # Keeps updated_at right for plain-SQL changes by operators.
    """
    CREATE FUNCTION router_touch_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        NEW.updated_at := now();
        RETURN NEW;
    END $$
    """,
    """
    CREATE TRIGGER event_source_mappings_touch BEFORE UPDATE ON event_source_mappings
    FOR EACH ROW WHEN (NEW.updated_at IS NOT DISTINCT FROM OLD.updated_at)
    EXECUTE FUNCTION router_touch_updated_at()
    """,
    """
    CREATE TRIGGER event_source_mappings_notify_insert_delete
    AFTER INSERT OR DELETE ON event_source_mappings
    FOR EACH ROW EXECUTE FUNCTION router_notify_mapping_change()
    """,
    # Status writes by the router (state, results, updated_at) must not wake the router.
    f"""
    CREATE TRIGGER event_source_mappings_notify_update AFTER UPDATE ON event_source_mappings
    FOR EACH ROW WHEN (
        (to_jsonb(NEW) - {_STATUS_ARRAY}) IS DISTINCT FROM (to_jsonb(OLD) - {_STATUS_ARRAY})
    )
    EXECUTE FUNCTION router_notify_mapping_change()
    """,
    """
    CREATE TRIGGER event_source_mappings_notify_truncate AFTER TRUNCATE ON event_source_mappings
    FOR EACH STATEMENT EXECUTE FUNCTION router_notify_truncate()
    """,
    """
    CREATE TRIGGER checkpoints_notify_insert_delete AFTER INSERT OR DELETE ON checkpoints
    FOR EACH ROW EXECUTE FUNCTION router_notify_checkpoint_change()
    """,
    # Re-writing the same value (updated_at only) is not a change.
    """
    CREATE TRIGGER checkpoints_notify_update AFTER UPDATE ON checkpoints
    FOR EACH ROW WHEN (
        (NEW.mapping_uuid, NEW.key, NEW.value)
        IS DISTINCT FROM (OLD.mapping_uuid, OLD.key, OLD.value)
    )
    EXECUTE FUNCTION router_notify_checkpoint_change()
    """,
    """
    CREATE TRIGGER checkpoints_notify_truncate AFTER TRUNCATE ON checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION router_notify_truncate()
    """,
)

PG_DROP = (
    "DROP TRIGGER IF EXISTS checkpoints_notify_truncate ON checkpoints",
    "DROP TRIGGER IF EXISTS checkpoints_notify_update ON checkpoints",
    "DROP TRIGGER IF EXISTS checkpoints_notify_insert_delete ON checkpoints",
    "DROP TRIGGER IF EXISTS event_source_mappings_notify_truncate ON event_source_mappings",
    "DROP TRIGGER IF EXISTS event_source_mappings_notify_update ON event_source_mappings",
    "DROP TRIGGER IF EXISTS event_source_mappings_notify_insert_delete ON event_source_mappings",
    "DROP TRIGGER IF EXISTS event_source_mappings_touch ON event_source_mappings",
    "DROP FUNCTION IF EXISTS router_touch_updated_at()",
    "DROP FUNCTION IF EXISTS router_notify_truncate()",
    "DROP FUNCTION IF EXISTS router_notify_checkpoint_change()",
    "DROP FUNCTION IF EXISTS router_notify_mapping_change()",
)


def _bump(uuid: str) -> str:
    # Not INSERT OR IGNORE: inside a trigger, the conflict policy of the statement that fired
    # it (e.g. an upsert) would override the IGNORE.
    return (
        f"INSERT INTO mapping_versions (uuid, version) SELECT {uuid}, 0 "
        f"WHERE NOT EXISTS (SELECT 1 FROM mapping_versions WHERE uuid = {uuid}); "
        f"UPDATE mapping_versions SET version = version + 1 WHERE uuid = {uuid};"
    )


def sqlite_triggers() -> list[str]:
    """Triggers that bump ``mapping_versions`` (polled by the SQLite change feed)."""
    config_changed = " OR ".join(f"NEW.{c} IS NOT OLD.{c}" for c in CONFIG_COLUMNS)
    checkpoint_changed = (
        "NEW.mapping_uuid IS NOT OLD.mapping_uuid OR NEW.key IS NOT OLD.key "
        "OR NEW.value IS NOT OLD.value"
    )
    return [
        "CREATE TRIGGER event_source_mappings_version_insert AFTER INSERT ON "
        f"event_source_mappings BEGIN {_bump('NEW.uuid')} END",
        "CREATE TRIGGER event_source_mappings_version_delete AFTER DELETE ON "
        f"event_source_mappings BEGIN {_bump('OLD.uuid')} END",
        "CREATE TRIGGER event_source_mappings_version_update AFTER UPDATE ON "
        f"event_source_mappings WHEN {config_changed} "
        f"BEGIN {_bump('OLD.uuid')} {_bump('NEW.uuid')} END",
        # Keeps updated_at right for plain-SQL changes by operators (recursive triggers are
        # off, so the inner UPDATE does not fire this trigger again).
        "CREATE TRIGGER event_source_mappings_touch AFTER UPDATE ON event_source_mappings "
        "WHEN NEW.updated_at IS OLD.updated_at BEGIN "
        f"UPDATE event_source_mappings SET updated_at = {SQLITE_NOW} WHERE uuid = NEW.uuid; END",
        f"CREATE TRIGGER checkpoints_version_insert AFTER INSERT ON checkpoints "
        f"BEGIN {_bump('NEW.mapping_uuid')} END",
        f"CREATE TRIGGER checkpoints_version_delete AFTER DELETE ON checkpoints "
        f"BEGIN {_bump('OLD.mapping_uuid')} END",
        f"CREATE TRIGGER checkpoints_version_update AFTER UPDATE ON checkpoints "
        f"WHEN {checkpoint_changed} "
        f"BEGIN {_bump('OLD.mapping_uuid')} {_bump('NEW.mapping_uuid')} END",
    ]
