"""Webhook delivery statuses are checked by the database (``ck_webhook_deliveries_status_known``).

The values are those of ``app.webhooks.status.WebhookStatus``, written out here so that this migration keeps
meaning what it meant when later code changes. The outbox triggers insert ``queued``; senders write the others.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-04 19:20:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_KNOWN = ("queued", "sending", "delivered", "failed")


def upgrade() -> None:
    listed = ", ".join(f"'{value}'" for value in _KNOWN)
    op.create_check_constraint(
        op.f("ck_webhook_deliveries_status_known"), "webhook_deliveries", f"status IN ({listed})"
    )


def downgrade() -> None:
    op.drop_constraint(op.f("ck_webhook_deliveries_status_known"), "webhook_deliveries", type_="check")
