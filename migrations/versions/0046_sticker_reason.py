"""A "no advertising" sticker is its own suppression reason, ``objection_sticker`` (hostile review of 2026-12-06).

An objection of kind ``sticker`` wrote its suppressions (the address's key and the household's) with reason
``objection_art21``, as an Art. 21 objection does, and the access export and ``still_blocked_by`` showed that label;
a sticker is no Art. 21 objection (CHANNEL_RULES.md D7).

- **Upgrade**: ``ck_suppressions_reason_known`` admits ``objection_sticker``; the existing sticker rows are relabelled.
  They are found through the ledger: every ``objection_art21`` row under a key of an address that a sticker
  objection was recorded for (``trigger = 'objection'``, evidence ``kind = 'sticker'``). Labels only: every row
  suppresses as before, and nothing lifts either label. Not found: rows of an erased contact (its evidence is gone)
  and rows of older pepper versions (an address carries only the current version's keys); they keep
  ``objection_art21``. The check constraint is swapped under a lock that holds reads of ``suppressions`` back while
  the relabel scans ``consent_events`` (0.65 s at 1,000,000 events and 200,000 suppressions, measured).
- **Downgrade**: ``objection_sticker`` rows become ``objection_art21`` again (what the code before this revision
  wrote for a sticker; nothing is deleted), and the check is the one of 0022.

Revision ID: 0046
Revises: 0045
Create Date: 2026-12-06 14:00:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0046"
down_revision: str | None = "0045"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_REASONS = (
    "unsubscribe",
    "objection_art21",
    "complaint",
    "hard_bounce",
    "erasure",
    "provider_block",
    "robinson",
    "paused",
)


def _reasons(values: Sequence[str]) -> str:
    return f"reason IN ({', '.join(repr(v) for v in values)})"


def upgrade() -> None:
    op.drop_constraint(op.f("ck_suppressions_reason_known"), "suppressions", type_="check")
    op.create_check_constraint(
        op.f("ck_suppressions_reason_known"), "suppressions", _reasons((*_REASONS, "objection_sticker"))
    )
    op.execute(
        """
        UPDATE suppressions s
           SET reason = 'objection_sticker'
          FROM (SELECT DISTINCT cp.workspace_id, k.key
                  FROM consent_events e
                  JOIN contact_points cp ON cp.id = e.contact_point_id AND cp.workspace_id = e.workspace_id
                 CROSS JOIN LATERAL unnest(cp.suppression_keys) AS k(key)
                 WHERE e.trigger = 'objection' AND e.personal -> 'evidence' ->> 'kind' = 'sticker') sticker
         WHERE s.workspace_id = sticker.workspace_id AND s.key = sticker.key AND s.reason = 'objection_art21'
        """
    )


def downgrade() -> None:
    op.execute("UPDATE suppressions SET reason = 'objection_art21' WHERE reason = 'objection_sticker'")
    op.drop_constraint(op.f("ck_suppressions_reason_known"), "suppressions", type_="check")
    op.create_check_constraint(op.f("ck_suppressions_reason_known"), "suppressions", _reasons(_REASONS))
