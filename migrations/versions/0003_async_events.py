"""The durable asynchronous-invocation queue (``async_events``): events accepted by the
ingress front-ends (Lambda's Invoke API with InvocationType=Event, EventBridge, SNS) until
they are delivered.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pg = op.get_context().dialect.name == "postgresql"
    json_type: sa.types.TypeEngine[object] = postgresql.JSONB() if pg else sa.JSON()
    ts = sa.DateTime(timezone=True)
    op.create_table(
        "async_events",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("target", sa.String(300), nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("attributes", json_type, nullable=False, server_default=sa.text("'{}'")),
        sa.Column("enqueued_at", ts, nullable=False),
        sa.Column("deliveries", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("lease_owner", sa.String(255)),
        sa.Column("lease_expires_at", ts),
    )
    op.create_index("ix_async_events_target", "async_events", ["target", "enqueued_at"])


def downgrade() -> None:
    op.drop_index("ix_async_events_target", table_name="async_events")
    op.drop_table("async_events")
