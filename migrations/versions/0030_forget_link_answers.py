"""Forget stored answers that hold a login or preference link (hostile review of issue 18).

``POST /v1/console-links`` and ``POST /v1/contacts/{contact}/preference-link`` answered with a token of which only
the hash is meant to be stored, but an ``Idempotency-Key`` kept the whole answer for its replay. They are now
marked as answers holding a secret (never kept; a repeat answers 409 ``idempotency_answer_not_kept``); this deletes
what was kept before.

Revision ID: 0030
Revises: 0022
Create Date: 2026-12-05 00:30:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0030"
down_revision: str | None = "0022"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # the stored answers name no path: recognise them by the link they hold
    op.execute(
        """
        DELETE FROM idempotency_keys
         WHERE body IS NOT NULL
           AND (position(convert_to('/console/login?token=', 'UTF8') in body) > 0
                OR (position(convert_to('"link_id"', 'UTF8') in body) > 0
                    AND position(convert_to('/p/', 'UTF8') in body) > 0))
        """
    )


def downgrade() -> None:
    """Nothing to restore: the answers are gone on purpose."""
