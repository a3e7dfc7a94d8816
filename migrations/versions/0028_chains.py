"""Action chains (issue 20): versioned chain definitions, their runs, and each run's steps (the runner's rows).

A step is pending until its ``due_at``; runners claim due steps with ``FOR UPDATE SKIP LOCKED`` through the
partial index ``ix_chain_steps_due``. Runs and steps are deleted with their workspace, contact or chain; a step's
message may be erased (its id is then cleared).

Revision ID: 0028
Revises: 0023
Create Date: 2026-12-04 23:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0028"
down_revision: str | None = "0023"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "chains",
        sa.Column("workspace_id", sa.Uuid(), nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("purpose_id", sa.Uuid(), nullable=False),
        sa.Column("steps", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("stop_on_opt_out", sa.Text(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("key ~ '^[a-z][a-z0-9_-]{0,62}$'", name=op.f("ck_chains_key_format")),
        sa.CheckConstraint("version >= 1", name=op.f("ck_chains_version_positive")),
        sa.CheckConstraint("stop_on_opt_out IN ('purpose', 'channel')", name=op.f("ck_chains_stop_on_opt_out_known")),
        sa.ForeignKeyConstraint(
            ["purpose_id"], ["purposes.id"], name=op.f("fk_chains_purpose_id_purposes"), ondelete="RESTRICT"
        ),
        sa.ForeignKeyConstraint(
            ["workspace_id"], ["workspaces.id"], name=op.f("fk_chains_workspace_id_workspaces"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_chains")),
        sa.UniqueConstraint("workspace_id", "key", "version", name=op.f("uq_chains_workspace_id_key_version")),
    )
    op.create_table(
        "chain_runs",
        sa.Column("workspace_id", sa.Uuid(), nullable=False),
        sa.Column("chain_id", sa.Uuid(), nullable=False),
        sa.Column("contact_id", sa.Uuid(), nullable=False),
        sa.Column("variables", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("campaign", sa.Text(), nullable=True),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_by_event_id", sa.Uuid(), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "status IN ('active', 'completed', 'cancelled', 'ended')", name=op.f("ck_chain_runs_status_known")
        ),
        sa.CheckConstraint("char_length(campaign) BETWEEN 1 AND 100", name=op.f("ck_chain_runs_campaign_length")),
        sa.ForeignKeyConstraint(
            ["chain_id"], ["chains.id"], name=op.f("fk_chain_runs_chain_id_chains"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["contact_id"], ["contacts.id"], name=op.f("fk_chain_runs_contact_id_contacts"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["workspace_id"], ["workspaces.id"], name=op.f("fk_chain_runs_workspace_id_workspaces"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_chain_runs")),
    )
    op.create_index(op.f("ix_chain_runs_contact_id"), "chain_runs", ["contact_id"], unique=False)
    op.create_index(op.f("ix_chain_runs_chain_id"), "chain_runs", ["chain_id"], unique=False)
    op.create_table(
        "chain_steps",
        sa.Column("workspace_id", sa.Uuid(), nullable=False),
        sa.Column("run_id", sa.Uuid(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("message_id", sa.Uuid(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("event_id", sa.Uuid(), nullable=True),
        sa.Column("detail", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.CheckConstraint(
            "status IN ('pending', 'sent', 'skipped', 'cancelled', 'ended')", name=op.f("ck_chain_steps_status_known")
        ),
        sa.ForeignKeyConstraint(
            ["message_id"], ["messages.id"], name=op.f("fk_chain_steps_message_id_messages"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["run_id"], ["chain_runs.id"], name=op.f("fk_chain_steps_run_id_chain_runs"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["workspace_id"], ["workspaces.id"], name=op.f("fk_chain_steps_workspace_id_workspaces"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_chain_steps")),
        sa.UniqueConstraint("run_id", "position", name=op.f("uq_chain_steps_run_id_position")),
    )
    op.create_index(
        "ix_chain_steps_due",
        "chain_steps",
        ["due_at"],
        unique=False,
        postgresql_where=sa.text("status = 'pending' AND due_at IS NOT NULL"),
    )
    op.create_index(
        "ix_chain_steps_message_id",
        "chain_steps",
        ["message_id"],
        unique=False,
        postgresql_where=sa.text("message_id IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_chain_steps_message_id", table_name="chain_steps")
    op.drop_index("ix_chain_steps_due", table_name="chain_steps")
    op.drop_table("chain_steps")
    op.drop_index(op.f("ix_chain_runs_chain_id"), table_name="chain_runs")
    op.drop_index(op.f("ix_chain_runs_contact_id"), table_name="chain_runs")
    op.drop_table("chain_runs")
    op.drop_table("chains")
