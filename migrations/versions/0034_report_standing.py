"""Reports: standing totals taken as daily snapshots (eligible addresses, suppressions in force) — issue 18.

The send gate's eligible total depends on reachability and suppressions, which no ledger event dates, so it
cannot be replayed from the ledger: the service counts it (the audience export's count) and the suppressions in
force every few minutes per workspace and keeps each UTC day's last count. Nothing here names a person.

Revision ID: 0034
Revises: 0032
Create Date: 2026-12-05 22:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0034"
down_revision: str | None = "0032"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "report_standing_daily",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("workspace_id", sa.Uuid(), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.Column("day", sa.DateTime(timezone=True), nullable=False),
        sa.Column("metric", sa.Text(), nullable=False),
        sa.Column("channel", sa.Text(), nullable=False),
        sa.Column("purpose_id", sa.Uuid(), nullable=True),
        sa.Column("taken_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f("fk_report_standing_daily_workspace_id_workspaces"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_report_standing_daily")),
        sa.UniqueConstraint(
            "workspace_id",
            "day",
            "metric",
            "channel",
            "purpose_id",
            name=op.f("uq_report_standing_daily_key"),
            postgresql_nulls_not_distinct=True,
        ),
    )


def downgrade() -> None:
    op.drop_table("report_standing_daily")
