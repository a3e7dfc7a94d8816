"""Workspaces by API (issue 19 item 4): operator keys, the export/tombstone columns, deletion records, and the one
way the append-only ledger may lose rows: with its whole workspace.

- ``operator_keys``: the service operator's keys (scope ``operator``), tied to no workspace;
- ``workspaces.exported_at`` and ``exported_seq`` (the last export the operator took, and how far into the ledger) and ``workspaces.deleted_at`` (a tombstone that
  keeps only the suppression keys);
- ``workspace_deletions``: the record of each workspace deleted for good (no personal data);
- ``consent_events_append_only()`` now lets a DELETE through when the transaction names the row's workspace in
  ``consent.deleting_workspace`` *and* that workspace is marked deleted: only the workspace deletion does both.
  UPDATE (beyond erasing the personal part) and TRUNCATE stay refused.

Revision ID: 0026
Revises: 0024
Create Date: 2026-12-04 23:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0026"
down_revision: str | None = "0024"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_APPEND_ONLY = """
CREATE OR REPLACE FUNCTION consent_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'DELETE'
     AND current_setting('consent.deleting_workspace', true) = OLD.workspace_id::text
     AND EXISTS (SELECT 1 FROM workspaces w WHERE w.id = OLD.workspace_id AND w.deleted_at IS NOT NULL) THEN
    RETURN OLD;  -- the whole workspace is being deleted (workspace deletion by the operator)
  END IF;
  IF TG_OP <> 'UPDATE' THEN
    RAISE EXCEPTION 'consent_events is append-only: % is not allowed', TG_OP
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  IF NEW.personal IS NOT NULL
     OR (to_jsonb(NEW) - 'personal') IS DISTINCT FROM (to_jsonb(OLD) - 'personal') THEN
    RAISE EXCEPTION 'consent_events is append-only: only erasure of the personal part is allowed'
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  RETURN NEW;
END $$;
"""

_APPEND_ONLY_BEFORE = """
CREATE OR REPLACE FUNCTION consent_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP <> 'UPDATE' THEN
    RAISE EXCEPTION 'consent_events is append-only: % is not allowed', TG_OP
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  IF NEW.personal IS NOT NULL
     OR (to_jsonb(NEW) - 'personal') IS DISTINCT FROM (to_jsonb(OLD) - 'personal') THEN
    RAISE EXCEPTION 'consent_events is append-only: only erasure of the personal part is allowed'
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  RETURN NEW;
END $$;
"""


def upgrade() -> None:
    op.create_table(
        "operator_keys",
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("display_prefix", sa.String(length=12), nullable=False),
        sa.Column("secret_hash", sa.LargeBinary(), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("octet_length(secret_hash) = 32", name=op.f("ck_operator_keys_secret_hash_sha256")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_operator_keys")),
        sa.UniqueConstraint("secret_hash", name=op.f("uq_operator_keys_secret_hash")),
    )
    op.create_table(
        "workspace_deletions",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("operator_key_id", sa.Uuid(), nullable=True),
        sa.Column("exported_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("report", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workspace_deletions")),
    )
    op.add_column("workspaces", sa.Column("exported_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("workspaces", sa.Column("exported_seq", sa.BigInteger(), nullable=True))
    op.add_column("workspaces", sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True))
    op.execute(_APPEND_ONLY)


def downgrade() -> None:
    op.execute(_APPEND_ONLY_BEFORE)
    op.drop_column("workspaces", "deleted_at")
    op.drop_column("workspaces", "exported_seq")
    op.drop_column("workspaces", "exported_at")
    op.drop_table("workspace_deletions")
    op.drop_table("operator_keys")
