"""Engagement signals (issue 20, item 3): message tokens, and ``opened``/``clicked``/``converted`` history steps.

``message_tokens`` holds the SHA-256 of each token minted at send time (a tracked link with the URL it stands
for, an open pixel, a push message's event token), only for contacts who consented to the workspace's tracking
purpose. The history's status list is that of ``app.messages.status`` at this revision, written out like in 0017.

Revision ID: 0035
Revises: 0033
Create Date: 2026-12-05 04:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0035"
down_revision: str | None = "0033"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_EVENTS = (
    "queued",
    "sending",
    "sent",
    "delivered",
    "failed",
    "blocked_at_send",
    "retry_scheduled",
    "waiting_for_send_window",
    "no_eligible_channel",
    "unknown",
)
_SIGNALS = ("opened", "clicked", "converted")


def _replace_check(values: Sequence[str]) -> None:
    listed = ", ".join(f"'{value}'" for value in values)
    op.drop_constraint(op.f("ck_message_events_status_known"), "message_events", type_="check")
    op.create_check_constraint(op.f("ck_message_events_status_known"), "message_events", f"status IN ({listed})")


def upgrade() -> None:
    op.create_table(
        "message_tokens",
        sa.Column("token_hash", sa.LargeBinary(), nullable=False),
        sa.Column("workspace_id", sa.Uuid(), nullable=False),
        sa.Column("message_id", sa.Uuid(), nullable=False),
        sa.Column("delivery_id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("url", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("kind IN ('link', 'open', 'event')", name=op.f("ck_message_tokens_kind_known")),
        sa.CheckConstraint("(kind = 'link') = (url IS NOT NULL)", name=op.f("ck_message_tokens_url_of_links")),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f("fk_message_tokens_workspace_id_workspaces"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["message_id"], ["messages.id"], name=op.f("fk_message_tokens_message_id_messages"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["delivery_id"],
            ["deliveries.id"],
            name=op.f("fk_message_tokens_delivery_id_deliveries"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("token_hash", name=op.f("pk_message_tokens")),
    )
    op.create_index(op.f("ix_message_tokens_message_id"), "message_tokens", ["message_id"])
    op.create_index(op.f("ix_message_tokens_delivery_id"), "message_tokens", ["delivery_id"])
    _replace_check((*_EVENTS, *_SIGNALS))
    op.create_index(
        "uq_message_events_signal",
        "message_events",
        ["message_id", "status"],
        unique=True,
        postgresql_where=sa.text("status IN ('opened', 'clicked', 'converted')"),
    )


def downgrade() -> None:
    op.drop_index("uq_message_events_signal", table_name="message_events")
    op.execute("DELETE FROM message_events WHERE status IN ('opened', 'clicked', 'converted')")
    _replace_check(_EVENTS)
    op.drop_table("message_tokens")
