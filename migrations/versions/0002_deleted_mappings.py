"""Mappings the YAML deleted, remembered by name, so that a mapping declared again under
that name takes back its identity (uuid), checkpoints and stats.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "deleted_mappings",
        sa.Column("name", sa.String(255), primary_key=True),
        sa.Column("uuid", sa.String(36), nullable=False),
        sa.Column("source_type", sa.String(64), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("uuid", name="uq_deleted_mappings_uuid"),
    )


def downgrade() -> None:
    op.drop_table("deleted_mappings")
