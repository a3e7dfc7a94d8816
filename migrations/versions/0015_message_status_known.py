"""Message, delivery and history statuses are checked by the database (``status_known``).

The values are those of ``app.messages.status`` (``MessageStatus``, ``DeliveryStatus``, ``Step``), written out
here so that this migration keeps meaning what it meant when later code changes. Every value written so far is
among them, so existing rows pass.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-04 18:45:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_KNOWN = {
    "messages": ("queued", "no_eligible_channel"),
    "deliveries": ("queued", "sending", "sent", "delivered", "failed", "blocked_at_send"),
    "message_events": (
        "queued",
        "sending",
        "sent",
        "delivered",
        "failed",
        "blocked_at_send",
        "retry_scheduled",
        "waiting_for_send_window",
        "no_eligible_channel",
    ),
}


def upgrade() -> None:
    for table, values in _KNOWN.items():
        listed = ", ".join(f"'{value}'" for value in values)
        op.create_check_constraint(op.f(f"ck_{table}_status_known"), table, f"status IN ({listed})")


def downgrade() -> None:
    for table in reversed(list(_KNOWN)):
        op.drop_constraint(op.f(f"ck_{table}_status_known"), table, type_="check")
