"""Contact points record when and how they were verified (``verified_at``, ``verified_via``).

Transactional messages go only to verified addresses from now on (issue 16, finding 21): a form's ``signup`` key
could attach any address to an existing contact by ``external_id``, and order mails then went there. An address
is verified by its own channel's proof (``confirmed``: the email confirmation link; ``start_word``: a start word
texted from the number; ``permission``: the OS or browser permission of a push installation or subscription) or
by the tenant's own records (``api``: an import or a call of a key that may write consents).

Backfill, from what the database knows:

- an address with a ``confirm``, ``start_word``, ``permission_granted`` or ``import`` event in the ledger is
  verified by the earliest of them, at the time it was recorded (the ledger is append-only, so every
  confirmation ever made is still there, also for addresses opted out since);
- postal addresses (``print``) are verified (``api``): only keys that may write consents create them (contacts,
  objections, the Robinson import);
- web push subscriptions are verified (``permission``): the browser made them after the person allowed
  notifications;
- an address whose first event was recorded by a key that may write consents (``consents:write`` or ``admin``)
  for anything but a ``signup`` is verified (``api``): that key attached it, not a form.

Everything else stays unverified: email, SMS and WhatsApp addresses that only ever had a ``signup`` (never
confirmed, no start word, not imported), and app installations reported by a ``signup`` key without a permission
the ledger recorded (apps report their installation at every start, and a report with a permission verifies it).
**Transactional messages to those addresses stop** (eligibility answers ``unverified_address``; a queued message
ends ``blocked_at_send``) until the person confirms, texts the start word, or the tenant imports the address with
a ``consents:write`` key (``POST /v1/imports/consents``, one line per address). Which of them belong to their
contacts is unknowable from the data, and treating them as verified would keep exactly the hole this closes
open for every address a form attached before the upgrade. README ("Eligibility: the send gate") says so too.

The backfill writes each verified address once (one UPDATE per rule; their row locks are held until the
migration commits: reachability updates of those addresses wait, new addresses and consents do not).

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-04 21:20:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: ``app.domain.model.Verification`` as it was when this migration was written.
_VIA = ("confirmed", "start_word", "permission", "api")


def upgrade() -> None:
    op.add_column("contact_points", sa.Column("verified_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("contact_points", sa.Column("verified_via", sa.Text(), nullable=True))
    op.add_column(
        "contact_points",
        sa.Column("attached_by_form", sa.Boolean(), server_default=sa.text("false"), nullable=False),
    )
    listed = ", ".join(f"'{value}'" for value in _VIA)
    op.create_check_constraint(
        op.f("ck_contact_points_verified_known"),
        "contact_points",
        f"(verified_at IS NULL AND verified_via IS NULL) OR (verified_at IS NOT NULL AND verified_via IN ({listed}))",
    )
    op.execute(
        """
        UPDATE contact_points cp SET verified_at = v.at, verified_via = v.via
          FROM (SELECT DISTINCT ON (e.contact_point_id) e.contact_point_id, e.recorded_at AS at,
                       CASE e.trigger WHEN 'confirm' THEN 'confirmed' WHEN 'start_word' THEN 'start_word'
                                      WHEN 'permission_granted' THEN 'permission' ELSE 'api' END AS via
                  FROM consent_events e
                 WHERE e.trigger IN ('confirm', 'start_word', 'permission_granted', 'import')
                 ORDER BY e.contact_point_id, e.recorded_at, e.seq) v
         WHERE cp.id = v.contact_point_id
        """
    )
    op.execute(
        """
        UPDATE contact_points SET verified_at = created_at,
                                  verified_via = CASE channel WHEN 'print' THEN 'api' ELSE 'permission' END
         WHERE verified_at IS NULL AND channel IN ('print', 'web_push')
        """
    )
    op.execute(
        """
        UPDATE contact_points cp SET verified_at = first.recorded_at, verified_via = 'api'
          FROM (SELECT DISTINCT ON (e.contact_point_id) e.contact_point_id, e.recorded_at, e.trigger, e.actor_id
                  FROM consent_events e
                 ORDER BY e.contact_point_id, e.seq) first
          JOIN api_keys k ON k.id::text = first.actor_id
         WHERE cp.id = first.contact_point_id AND cp.verified_at IS NULL AND first.trigger <> 'signup'
           AND k.scopes && ARRAY['consents:write', 'admin']::text[]
        """
    )


def downgrade() -> None:
    op.drop_constraint(op.f("ck_contact_points_verified_known"), "contact_points", type_="check")
    op.drop_column("contact_points", "attached_by_form")
    op.drop_column("contact_points", "verified_via")
    op.drop_column("contact_points", "verified_at")
