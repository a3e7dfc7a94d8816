"""Pauses: a suppression with an end (``suppressions.until``, reason ``paused``; issue 17).

The preference centre's "pause all marketing for 1 / 4 / 12 weeks" is an ``all_marketing`` suppression of the
address's keys that holds while ``until`` is in the future: every reader (send gate, eligibility, audiences, the
dispatcher) compares ``until`` with the time it decides for, so a pause ends by itself without a sweep. Only a
pause has an end, and a pause never has scope ``all`` (transactional messages are not paused).

Revision ID: 0022
Revises: 0028
Create Date: 2026-12-04 23:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0022"
down_revision: str | None = "0028"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_REASONS = ("unsubscribe", "objection_art21", "complaint", "hard_bounce", "erasure", "provider_block", "robinson")


def _reasons(values: Sequence[str]) -> str:
    return f"reason IN ({', '.join(repr(v) for v in values)})"


def upgrade() -> None:
    op.add_column("suppressions", sa.Column("until", sa.DateTime(timezone=True), nullable=True))
    op.drop_constraint(op.f("ck_suppressions_reason_known"), "suppressions", type_="check")
    op.create_check_constraint(op.f("ck_suppressions_reason_known"), "suppressions", _reasons((*_REASONS, "paused")))
    op.create_check_constraint(
        op.f("ck_suppressions_until_iff_paused"),
        "suppressions",
        "(reason = 'paused') = (until IS NOT NULL) AND (until IS NULL OR scope <> 'all')",
    )


def downgrade() -> None:
    op.execute("DELETE FROM suppressions WHERE reason = 'paused'")
    op.drop_constraint(op.f("ck_suppressions_until_iff_paused"), "suppressions", type_="check")
    op.drop_constraint(op.f("ck_suppressions_reason_known"), "suppressions", type_="check")
    op.create_check_constraint(op.f("ck_suppressions_reason_known"), "suppressions", _reasons(_REASONS))
    op.drop_column("suppressions", "until")
