"""Reports: an index for each workspace's last standing snapshot (hostile review of 2026-12-05).

Every process asks once a minute which workspaces' snapshots are due (``max(taken_at)`` per workspace); without an
index that read every snapshot row of every workspace (a year at 100 purposes: 219,000 rows, 38 ms a call).

Revision ID: 0038
Revises: 0037
Create Date: 2026-12-05 23:40:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0038"
down_revision: str | None = "0037"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_report_standing_daily_workspace_id_taken_at", "report_standing_daily", ["workspace_id", "taken_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_report_standing_daily_workspace_id_taken_at", table_name="report_standing_daily")
