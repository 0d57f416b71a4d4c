"""Stream sources: the ``tumbling_window`` setting, and ``stream_shards_held`` in
``mapping_overview``: the shards leased by the replicas of a Kinesis / DynamoDB Streams
mapping, summed from their member rows in ``checkpoints`` (key ``replica:<id>``, value
``<epoch seconds> <shards held>``; rows of a replica that died are deleted by the others once
they are older than twice the lease).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_initial = importlib.import_module("migrations.versions.0001_initial")
_previous = importlib.import_module("migrations.versions.0004_mapping_lag")

_MEMBERS = "FROM checkpoints c WHERE c.mapping_uuid = m.uuid AND c.key LIKE 'replica:%'"
# The second word of '<epoch> <held>': split_part, or the integer prefix after the space.
_PG_STREAM = f"(SELECT sum(split_part(c.value, ' ', 2)::bigint) {_MEMBERS})"
_SQLITE_STREAM = (
    f"(SELECT sum(CAST(substr(c.value, instr(c.value, ' ') + 1) AS INTEGER)) {_MEMBERS})"
)


def _view(held: str) -> str:
    view: str = _previous.OVERVIEW_VIEW
    anchor = "    m.updated_at\n"
    assert anchor in view
    return view.replace(anchor, f"    {held} AS stream_shards_held,\n{anchor}")


def _sqlite_update_trigger(columns: Sequence[str]) -> str:
    changed = " OR ".join(f"NEW.{c} IS NOT OLD.{c}" for c in columns)
    bump = _initial._bump
    return (
        "CREATE TRIGGER event_source_mappings_version_update AFTER UPDATE ON "
        f"event_source_mappings WHEN {changed} "
        f"BEGIN {bump('OLD.uuid')} {bump('NEW.uuid')} END"
    )


def upgrade() -> None:
    pg = op.get_context().dialect.name == "postgresql"
    op.add_column("event_source_mappings", sa.Column("tumbling_window", sa.Integer))
    op.execute("DROP VIEW IF EXISTS mapping_overview")
    op.execute(_view(_PG_STREAM if pg else _SQLITE_STREAM))
    if not pg:
        # The change feed notices a changed tumbling_window too.
        op.execute("DROP TRIGGER IF EXISTS event_source_mappings_version_update")
        op.execute(_sqlite_update_trigger((*_initial.CONFIG_COLUMNS, "tumbling_window")))


def downgrade() -> None:
    pg = op.get_context().dialect.name == "postgresql"
    op.execute("DROP VIEW IF EXISTS mapping_overview")
    op.execute(_previous.OVERVIEW_VIEW)
    if not pg:
        op.execute("DROP TRIGGER IF EXISTS event_source_mappings_version_update")
        op.execute(_sqlite_update_trigger(_initial.CONFIG_COLUMNS))
    op.drop_column("event_source_mappings", "tumbling_window")
