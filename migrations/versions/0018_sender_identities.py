"""Sender identities belong to one workspace; mail domains are the operator's list per workspace.

``sender_identities`` holds each sender number, short code, alphanumeric sender and Messaging Service SID a
workspace's settings name, normalised (E.164; ``MG`` + lower-case hex; else upper case without spaces), with the
identity as primary key: one workspace per sender. ``workspaces.mail_domains`` is the operator's list of domains
the workspace's ``email.from_address`` may use (``NULL``: the default).

The senders of existing settings are claimed here; where two workspaces already name one sender, the older
workspace keeps it and the younger one's webhooks for it are refused until the operator sorts it out (its
settings ``PUT`` answers ``409 sender_taken`` for it). The normalisation is written out here (``phonenumbers``
directly), so that this migration keeps meaning what it meant when later code changes.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-04 21:10:00.000000
"""

import re
from collections.abc import Sequence
from typing import Any

import phonenumbers
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_MESSAGING_SERVICE = re.compile(r"^MG[0-9a-fA-F]{32}$")


def _identity(value: Any, region: str) -> str | None:
    text = value.strip() if isinstance(value, str) else ""
    if text.lower().startswith("whatsapp:"):
        text = text[len("whatsapp:") :].strip()
    if not text:
        return None
    if _MESSAGING_SERVICE.match(text):
        return "MG" + text[2:].lower()
    try:
        number = phonenumbers.parse(text, region.upper())
    except phonenumbers.NumberParseException:
        number = None
    if number is not None and phonenumbers.is_valid_number(number):
        return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return "".join(text.split()).upper()


def upgrade() -> None:
    op.add_column("workspaces", sa.Column("mail_domains", postgresql.ARRAY(sa.Text()), nullable=True))
    op.create_table(
        "sender_identities",
        sa.Column("identity", sa.Text(), nullable=False),
        sa.Column("workspace_id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f("fk_sender_identities_workspace_id_workspaces"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("identity", name=op.f("pk_sender_identities")),
    )
    op.create_index("ix_sender_identities_workspace_id", "sender_identities", ["workspace_id"], unique=False)
    bind = op.get_bind()
    rows = bind.execute(sa.text("SELECT id, settings FROM workspaces ORDER BY created_at, id")).all()
    claim = sa.text(
        "INSERT INTO sender_identities (identity, workspace_id) VALUES (:identity, :workspace_id) "
        "ON CONFLICT (identity) DO NOTHING"
    )
    owner = sa.text("SELECT workspace_id FROM sender_identities WHERE identity = :identity")
    release = sa.text(
        "UPDATE workspaces SET settings = jsonb_set(settings, ARRAY['phone', :field], 'null'::jsonb) WHERE id = :id"
    )
    for workspace_id, settings in rows:
        phone = (settings or {}).get("phone") or {}
        region = (settings or {}).get("default_region") or "DE"
        for field in ("sms_from", "whatsapp_from"):
            identity = _identity(phone.get(field), region)
            if identity is None:
                continue
            bind.execute(claim, {"identity": identity, "workspace_id": workspace_id})
            # a sender two workspaces named stays with the older one; the younger stops sending from it at once
            # (its recipients' STOPs could never reach its ledger: the webhooks now take only a holder's senders)
            if bind.execute(owner, {"identity": identity}).scalar_one() != workspace_id:
                bind.execute(release, {"field": field, "id": workspace_id})


def downgrade() -> None:
    op.drop_index("ix_sender_identities_workspace_id", table_name="sender_identities")
    op.drop_table("sender_identities")
    op.drop_column("workspaces", "mail_domains")
