"""Message events: a person's engagement signal recorded apart from a mail scanner's (hostile review 2026-12-05).

``uq_message_events_signal`` allowed one ``opened`` / ``clicked`` / ``converted`` per message: a security gateway
that fetched a mail's links first took the place of the person's later click, so reports undercounted clicks and
inactivity never saw the person engage. Now one per message for a person's signal and one for a scanner's (an
event whose ``detail`` carries ``scanner_signals``). Every existing row satisfies both (there was one at most).

Revision ID: 0039
Revises: 0038
Create Date: 2026-12-05 23:45:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0039"
down_revision: str | None = "0038"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_SIGNALS = "status IN ('opened', 'clicked', 'converted')"
_SCANNED = "coalesce(detail ? 'scanner_signals', false)"


def upgrade() -> None:
    op.drop_index("uq_message_events_signal", table_name="message_events")
    op.create_index(
        "uq_message_events_signal",
        "message_events",
        ["message_id", "status"],
        unique=True,
        postgresql_where=sa.text(f"{_SIGNALS} AND NOT {_SCANNED}"),
    )
    op.create_index(
        "uq_message_events_scanner_signal",
        "message_events",
        ["message_id", "status"],
        unique=True,
        postgresql_where=sa.text(f"{_SIGNALS} AND {_SCANNED}"),
    )


def downgrade() -> None:
    op.drop_index("uq_message_events_scanner_signal", table_name="message_events")
    op.drop_index("uq_message_events_signal", table_name="message_events")
    # one signal per message and status again: the later of a scanner's and a person's goes
    op.execute(
        "DELETE FROM message_events e USING message_events p WHERE e.message_id = p.message_id"
        " AND e.status = p.status AND e.status IN ('opened', 'clicked', 'converted') AND e.id > p.id"
    )
    op.create_index(
        "uq_message_events_signal",
        "message_events",
        ["message_id", "status"],
        unique=True,
        postgresql_where=sa.text(_SIGNALS),
    )
