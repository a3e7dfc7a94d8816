"""A delivery's provider call is marked before it starts (``in_flight_at``); a new status ``unknown``.

A worker that dies during a provider call leaves ``in_flight_at`` set: whoever takes the delivery over knows the
provider may have accepted it. Marketing deliveries are then settled ``unknown`` (at most once, never re-sent;
a provider's status callback may still resolve them), transactional ones are sent again (at least once). The
status lists are those of ``app.messages.status`` at this revision, written out like in 0015.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-04 21:10:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_DELIVERIES = ("queued", "sending", "sent", "delivered", "failed", "blocked_at_send")
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
)


def _replace_check(table: str, values: Sequence[str]) -> None:
    listed = ", ".join(f"'{value}'" for value in values)
    op.drop_constraint(op.f(f"ck_{table}_status_known"), table, type_="check")
    op.create_check_constraint(op.f(f"ck_{table}_status_known"), table, f"status IN ({listed})")


def upgrade() -> None:
    op.add_column("deliveries", sa.Column("in_flight_at", sa.DateTime(timezone=True), nullable=True))
    _replace_check("deliveries", (*_DELIVERIES, "unknown"))
    _replace_check("message_events", (*_EVENTS, "unknown"))


def downgrade() -> None:
    op.execute("UPDATE deliveries SET status = 'failed' WHERE status = 'unknown'")
    op.execute("UPDATE message_events SET status = 'failed' WHERE status = 'unknown'")
    _replace_check("message_events", _EVENTS)
    _replace_check("deliveries", _DELIVERIES)
    op.drop_column("deliveries", "in_flight_at")
