"""Campaign labels: ``messages.campaign`` and a ``campaign`` dimension of the report rollups (issue 18).

A message may carry a campaign label; the message rollups count by it, and the consent rollups count the
opt-outs a campaign caused by the label its ledger event names (an unsubscribe link carries its message, a STOP
is attributed to the last SMS or WhatsApp message sent to the number within 7 days: found through the new index
on ``deliveries.contact_point_id``, which also spares an erasure's cascade a scan). Existing rollup rows get no
campaign, as the events they counted named none.

Revision ID: 0027
Revises: 0021
Create Date: 2026-12-04 23:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0027"
down_revision: str | None = "0021"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_KEYS = {
    "report_consent_counts": ("hour", "channel", "purpose_id", "source", "trigger", "from_state", "to_state", "detail"),
    "report_consent_daily": ("day", "channel", "purpose_id", "source", "trigger", "from_state", "to_state", "detail"),
    "report_message_counts": ("hour", "channel", "provider", "purpose_id", "outcome", "latency_ms"),
    "report_message_daily": ("day", "channel", "provider", "purpose_id", "outcome", "latency_ms"),
}


def upgrade() -> None:
    op.add_column("messages", sa.Column("campaign", sa.Text(), nullable=True))
    op.create_check_constraint(
        op.f("ck_messages_campaign_length"), "messages", "char_length(campaign) BETWEEN 1 AND 100"
    )
    op.create_index(op.f("ix_deliveries_contact_point_id"), "deliveries", ["contact_point_id"])
    for table, key in _KEYS.items():
        op.add_column(table, sa.Column("campaign", sa.Text(), nullable=True))
        op.drop_constraint(op.f(f"uq_{table}_key"), table, type_="unique")
        op.create_unique_constraint(
            op.f(f"uq_{table}_key"), table, ["workspace_id", *key, "campaign"], postgresql_nulls_not_distinct=True
        )


def downgrade() -> None:
    for table, key in _KEYS.items():  # fold the campaigns' counters into one per key again
        columns = ", ".join(("workspace_id", *key))
        op.execute(f"CREATE TEMPORARY TABLE folded AS SELECT {columns}, sum(n) AS n FROM {table} GROUP BY {columns}")  # noqa: S608  # constant names
        op.execute(f"DELETE FROM {table}")  # noqa: S608
        op.drop_constraint(op.f(f"uq_{table}_key"), table, type_="unique")
        op.drop_column(table, "campaign")
        op.execute(f"INSERT INTO {table} ({columns}, n) SELECT {columns}, n FROM folded")  # noqa: S608
        op.execute("DROP TABLE folded")
        op.create_unique_constraint(
            op.f(f"uq_{table}_key"), table, ["workspace_id", *key], postgresql_nulls_not_distinct=True
        )
    op.drop_index(op.f("ix_deliveries_contact_point_id"), table_name="deliveries")
    op.drop_constraint(op.f("ck_messages_campaign_length"), "messages", type_="check")
    op.drop_column("messages", "campaign")
