"""Erasure requests from the preference centre (issue 17, "My data"): executed at once or queued for review.

A pending request is due one month after it was made (Art. 12(3)); an ``admin`` key executes or rejects it. The
contact is named by its id only (no foreign key: the contact goes with the erasure, the request stays as the
record of how it was asked for). At most one request per contact is pending.

Revision ID: 0024
Revises: 0029
Create Date: 2026-12-04 23:20:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0024"
down_revision: str | None = "0029"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "erasure_requests",
        sa.Column("workspace_id", sa.Uuid(), nullable=False),
        sa.Column("contact_id", sa.Uuid(), nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("link_id", sa.Uuid(), nullable=True),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("decided_by", sa.Uuid(), nullable=True),
        sa.Column("erasure_id", sa.Uuid(), nullable=True),
        sa.Column("evidence", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.CheckConstraint("status IN ('pending', 'done', 'rejected')", name=op.f("ck_erasure_requests_status")),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f("fk_erasure_requests_workspace_id_workspaces"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_erasure_requests")),
    )
    op.create_index(op.f("ix_erasure_requests_contact_id"), "erasure_requests", ["contact_id"], unique=False)
    op.create_index(
        "ix_erasure_requests_workspace_id_status_due_at",
        "erasure_requests",
        ["workspace_id", "status", "due_at"],
        unique=False,
    )
    op.create_index(
        "uq_erasure_requests_pending",
        "erasure_requests",
        ["workspace_id", "contact_id"],
        unique=True,
        postgresql_where=sa.text("status = 'pending'"),
    )


def downgrade() -> None:
    op.drop_index(
        "uq_erasure_requests_pending", table_name="erasure_requests", postgresql_where=sa.text("status = 'pending'")
    )
    op.drop_index("ix_erasure_requests_workspace_id_status_due_at", table_name="erasure_requests")
    op.drop_index(op.f("ix_erasure_requests_contact_id"), table_name="erasure_requests")
    op.drop_table("erasure_requests")
