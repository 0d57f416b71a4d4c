"""``mapping_lag``: each replica's last measure of how far behind a mapping it runs is (the
source's lag metric: records, messages, files, milliseconds or seconds), and the ``lag`` and
``lag_unit`` columns of ``mapping_overview`` (counts summed over replicas, ages the oldest).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

AGES = "('ms behind', 's fire delay')"
"""Units of lags that are ages: the oldest counts, not the sum."""

LAG_COLUMNS = f"""    (SELECT CASE WHEN max(l.unit) IN {AGES} THEN max(l.lag) ELSE sum(l.lag) END
       FROM mapping_lag l WHERE l.mapping_uuid = m.uuid) AS lag,
    (SELECT max(l.unit) FROM mapping_lag l WHERE l.mapping_uuid = m.uuid) AS lag_unit,
"""

OVERVIEW_VIEW = f"""
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
{LAG_COLUMNS}    m.updated_at
FROM event_source_mappings m
LEFT JOIN mapping_stats s ON s.mapping_uuid = m.uuid
"""


def upgrade() -> None:
    op.create_table(
        "mapping_lag",
        sa.Column("mapping_uuid", sa.String(36), primary_key=True),
        sa.Column("replica_id", sa.String(255), primary_key=True),
        sa.Column("lag", sa.Float, nullable=False),
        sa.Column("unit", sa.String(40), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.execute("DROP VIEW IF EXISTS mapping_overview")
    op.execute(OVERVIEW_VIEW)


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS mapping_overview")
    op.execute(OVERVIEW_VIEW.replace(LAG_COLUMNS, ""))
    op.drop_table("mapping_lag")
