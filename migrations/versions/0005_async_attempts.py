"""The asynchronous queue remembers the retries an event used (``attempts``) and when it may
be tried next (``retry_at``), so that a restart, or ``kill -9``, neither resets Lambda's
retry budget nor skips the backoff.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    ts = sa.DateTime(timezone=True)
    with op.batch_alter_table("async_events") as batch:
        batch.add_column(
            sa.Column("attempts", sa.Integer, nullable=False, server_default=sa.text("0"))
        )
        batch.add_column(sa.Column("retry_at", ts))


def downgrade() -> None:
    with op.batch_alter_table("async_events") as batch:
        batch.drop_column("retry_at")
        batch.drop_column("attempts")
