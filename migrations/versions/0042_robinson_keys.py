"""A Robinson list's keys in a table of their own (issue 21, item 2; docs/benchmarks.md).

``robinson_keys`` holds the keyed hashes of a workspace's Robinson list entries (print, all marketing, no end,
reason ``robinson``): what ``suppressions`` held for them before, without the columns every such row had alike.
An import loads it with one ``INSERT … SELECT … ORDER BY key`` from the list's temporary table: one B-tree (the
primary key, ``(workspace_id, key)``: the shape the send gate probes ``suppressions`` by) filled in key order, no
generated id and its index, no foreign key checked per row (the import locks the workspace row once instead, see
:func:`app.ledger.repository.add_robinson_keys_from_table`). Every reader of suppressions reads it beside them.

The Robinson suppressions already stored move here (print, ``all_marketing``, no purpose, no end), so that an
import of the same list again still adds nothing.

Revision ID: 0042
Revises: 0041
Create Date: 2026-12-06 03:20:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0042"
down_revision: str | None = "0041"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ROBINSON = (
    "reason = 'robinson' AND channel = 'print' AND scope = 'all_marketing' AND purpose_id IS NULL AND until IS NULL"
)


def upgrade() -> None:
    op.create_table(
        "robinson_keys",
        sa.Column("workspace_id", sa.Uuid(), nullable=False),
        sa.Column("key", sa.LargeBinary(), nullable=False),
        sa.Column("key_version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("workspace_id", "key", name=op.f("pk_robinson_keys")),
    )
    op.execute(
        "INSERT INTO robinson_keys (workspace_id, key, key_version, created_at) "  # noqa: S608  # constants only
        f"SELECT DISTINCT ON (workspace_id, key) workspace_id, key, key_version, created_at FROM suppressions "
        f"WHERE {_ROBINSON} ORDER BY workspace_id, key, created_at"
    )
    op.execute(f"DELETE FROM suppressions WHERE {_ROBINSON}")  # noqa: S608  # constants of this module


def downgrade() -> None:
    # keys of a workspace row deleted by hand (this table has no foreign key): nothing to move them to
    op.execute("DELETE FROM robinson_keys k WHERE NOT EXISTS (SELECT 1 FROM workspaces w WHERE w.id = k.workspace_id)")
    # a pause of a listed key becomes the listing, for good (as the import made it before 0042)
    op.execute(
        "INSERT INTO suppressions (id, workspace_id, key, key_version, channel, scope, purpose_id, reason, created_at) "
        "SELECT gen_random_uuid(), workspace_id, key, key_version, 'print', 'all_marketing', NULL, 'robinson', "
        "created_at FROM robinson_keys "
        "ON CONFLICT ON CONSTRAINT uq_suppressions_workspace_id_key_key_version_scope_purpose_id "
        "DO UPDATE SET reason = EXCLUDED.reason, until = NULL WHERE suppressions.until IS NOT NULL"
    )
    op.drop_table("robinson_keys")
