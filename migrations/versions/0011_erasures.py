"""Erasures: one record per erased contact (GDPR Art. 17), kept as accountability evidence.

It holds the report the erasure was answered with (counts of what was deleted and kept) and the caller's
reference of the request; no personal data. The contact id it keeps points to nothing once the contact is gone.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-22 22:59:12.666660
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "erasures",
        sa.Column("workspace_id", sa.Uuid(), nullable=False),
        sa.Column("contact_id", sa.Uuid(), nullable=False),
        sa.Column("erased_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor_type", sa.Text(), nullable=False),
        sa.Column("actor_id", sa.Text(), nullable=True),
        sa.Column("request_ref", sa.Text(), nullable=True),
        sa.Column("received_via", sa.Text(), nullable=True),
        sa.Column("report", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["workspace_id"], ["workspaces.id"], name=op.f("fk_erasures_workspace_id_workspaces"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_erasures")),
        sa.UniqueConstraint("workspace_id", "contact_id", name=op.f("uq_erasures_workspace_id_contact_id")),
    )


def downgrade() -> None:
    op.drop_table("erasures")
