"""The store's schema as SQLAlchemy Core tables.

This module is what the store's queries are written against. The setting columns of
``event_source_mappings`` come from the mapping's declaration
(:data:`router.models.MAPPING_FIELDS`). The migrations in ``migrations/versions`` are frozen
snapshots that create the same schema (plus triggers and the ``mapping_overview`` view); a
change here, or a new setting, needs a new migration.

Timestamps are timezone-aware UTC everywhere: :class:`UTCDateTime` converts on the way in
and attaches UTC on the way out, because SQLite stores them as naive text.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine.interfaces import Dialect

from router.models import MAPPING_FIELDS, SETTING_COLUMNS, Column


class UTCDateTime(sa.TypeDecorator[datetime]):
    """``TIMESTAMP WITH TIME ZONE`` on PostgreSQL, ISO text on SQLite; always aware UTC."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            # Naive values are taken as UTC (what the router writes everywhere).
            value = value.replace(tzinfo=UTC)
        value = value.astimezone(UTC)
        # SQLite's DATETIME ignores tzinfo; PostgreSQL keeps the instant either way.
        return value if dialect.name == "postgresql" else value.replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):  # a view column or raw text on SQLite
            value = datetime.fromisoformat(value)
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)  # type: ignore[no-any-return]
        return value.astimezone(UTC)  # type: ignore[no-any-return]


JSONType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
"""JSON on SQLite, JSONB on PostgreSQL (so operators can use ``@>`` and equality works)."""

_SQL_TYPES: dict[Column, Any] = {
    Column.INTEGER: sa.Integer,
    Column.FLOAT: sa.Float,
    Column.BOOLEAN: sa.Boolean,
    Column.KEYWORD: sa.String(32),
    Column.TIMESTAMP: UTCDateTime,
    Column.JSON: JSONType,
}
"""The SQL type of each kind of setting column (:class:`router.models.Column`)."""

metadata = sa.MetaData()

event_source_mappings = sa.Table(
    "event_source_mappings",
    metadata,
    sa.Column("uuid", sa.String(36), primary_key=True),
    sa.Column("name", sa.String(255), nullable=False, unique=True),
    sa.Column("function_name", sa.String(255), nullable=False),
    sa.Column("source_type", sa.String(64), nullable=False),
    sa.Column("source_config", JSONType, nullable=False),
    sa.Column("enabled", sa.Boolean, nullable=False),
    *(sa.Column(f.key, _SQL_TYPES[f.column]) for f in MAPPING_FIELDS),
    sa.Column("state", sa.String(32), nullable=False),
    sa.Column("state_transition_reason", sa.Text, nullable=False),
    sa.Column("last_processing_result", sa.Text, nullable=False),
    sa.Column("origin", sa.String(8), nullable=False),
    sa.Column("config_hash", sa.String(128), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)

CONFIG_COLUMNS: tuple[str, ...] = (
    "name",
    "function_name",
    "source_type",
    "source_config",
    "enabled",
    *SETTING_COLUMNS,
    "origin",
    "config_hash",
)
"""What ``update_mapping`` writes; changes to these (not to the status columns) notify."""

STATUS_COLUMNS: tuple[str, ...] = (
    "state",
    "state_transition_reason",
    "last_processing_result",
    "updated_at",
)
"""Written by the router itself; changes to only these never notify."""

checkpoints = sa.Table(
    "checkpoints",
    metadata,
    sa.Column("mapping_uuid", sa.String(36), primary_key=True),
    sa.Column("key", sa.String(512), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)

schedule_fires = sa.Table(
    "schedule_fires",
    metadata,
    # The primary key is the unique (schedule, time) pair that decides which replica fires.
    sa.Column("schedule_key", sa.String(512), primary_key=True),
    sa.Column("scheduled_time", UTCDateTime, primary_key=True),
    sa.Column("fired_at", UTCDateTime, nullable=False),
    sa.Column("owner", sa.String(255), nullable=False),
)

leases = sa.Table(
    "leases",
    metadata,
    sa.Column("key", sa.String(512), primary_key=True),
    sa.Column("owner", sa.String(255), nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=False),
)

mapping_stats = sa.Table(
    "mapping_stats",
    metadata,
    sa.Column("mapping_uuid", sa.String(36), primary_key=True),
    sa.Column("records_in", sa.BigInteger, nullable=False),
    sa.Column("filtered", sa.BigInteger, nullable=False),
    sa.Column("invoked", sa.BigInteger, nullable=False),
    sa.Column("failed", sa.BigInteger, nullable=False),
    sa.Column("last_invoke_at", UTCDateTime),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)

mapping_lag = sa.Table(
    "mapping_lag",
    metadata,
    sa.Column("mapping_uuid", sa.String(36), primary_key=True),
    sa.Column("replica_id", sa.String(255), primary_key=True),
    sa.Column("lag", sa.Float, nullable=False),
    sa.Column("unit", sa.String(40), nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)

failed_events = sa.Table(
    "failed_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("mapping_uuid", sa.String(36), nullable=False),
    sa.Column("function_name", sa.String(255), nullable=False),
    sa.Column("condition", sa.String(255), nullable=False),
    sa.Column("payload", JSONType, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("replayed_at", UTCDateTime),
    sa.Index("ix_failed_events_mapping", "mapping_uuid", "replayed_at"),
)

deleted_mappings = sa.Table(
    "deleted_mappings",
    metadata,
    sa.Column("name", sa.String(255), primary_key=True),
    sa.Column("uuid", sa.String(36), nullable=False, unique=True),
    sa.Column("source_type", sa.String(64), nullable=False),
    sa.Column("deleted_at", UTCDateTime, nullable=False),
)
"""Mappings the YAML deleted whose checkpoints and stats are kept (under their uuid) until a
mapping of the same name takes them back or the retention passes."""

async_events = sa.Table(
    "async_events",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("target", sa.String(300), nullable=False),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("attributes", JSONType, nullable=False),
    sa.Column("enqueued_at", UTCDateTime, nullable=False),
    sa.Column("deliveries", sa.Integer, nullable=False),
    sa.Column("lease_owner", sa.String(255)),
    sa.Column("lease_expires_at", UTCDateTime),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("retry_at", UTCDateTime),
    sa.Index("ix_async_events_target", "target", "enqueued_at"),
)
"""The durable asynchronous-invocation queue: events accepted (committed before the caller
got its 202) and not yet delivered. A replica claims an event by writing its lease; the row
is deleted once the event was delivered (or handed to a destination). ``attempts`` counts the
function errors the event met (its retries used); ``retry_at``, when set, is the earliest
time it may be claimed again (the backoff before its next retry)."""

mapping_versions = sa.Table(
    "mapping_versions",
    metadata,
    sa.Column("uuid", sa.String(36), primary_key=True),
    sa.Column("version", sa.BigInteger, nullable=False),
)
"""SQLite only: bumped by triggers on every configuration or checkpoint change, polled by
the change feed (PostgreSQL uses LISTEN/NOTIFY instead)."""

alembic_version = sa.Table(
    "alembic_version",
    sa.MetaData(),
    sa.Column("version_num", sa.String(32), primary_key=True),
)
"""Alembic's own table (kept out of ``metadata``), read by the schema check."""
