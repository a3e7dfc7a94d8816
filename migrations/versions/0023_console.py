"""The console: single-use login links, staff sessions (SHA-256 hashes only) and chain checks (issue 18).

Links and sessions are deleted with the API key they act as (and with their workspace); revoking the key ends
them at the next request, since each request checks the key.

Revision ID: 0023
Revises: 0026
Create Date: 2026-12-04 23:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0023"
down_revision: str | None = "0026"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _owner_keys(table: str) -> list[sa.ForeignKeyConstraint]:
    return [
        sa.ForeignKeyConstraint(
            ["workspace_id"], ["workspaces.id"], name=op.f(f"fk_{table}_workspace_id_workspaces"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["api_key_id"], ["api_keys.id"], name=op.f(f"fk_{table}_api_key_id_api_keys"), ondelete="CASCADE"
        ),
    ]


def upgrade() -> None:
    op.create_table(
        "console_links",
        sa.Column("workspace_id", sa.Uuid(), nullable=False),
        sa.Column("api_key_id", sa.Uuid(), nullable=False),
        sa.Column("token_hash", sa.LargeBinary(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("octet_length(token_hash) = 32", name=op.f("ck_console_links_token_hash_sha256")),
        *_owner_keys("console_links"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_console_links")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_console_links_token_hash")),
    )
    op.create_index(op.f("ix_console_links_api_key_id"), "console_links", ["api_key_id"], unique=False)
    op.create_table(
        "console_sessions",
        sa.Column("workspace_id", sa.Uuid(), nullable=False),
        sa.Column("api_key_id", sa.Uuid(), nullable=False),
        sa.Column("id_hash", sa.LargeBinary(), nullable=False),
        sa.Column("scopes", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("octet_length(id_hash) = 32", name=op.f("ck_console_sessions_id_hash_sha256")),
        *_owner_keys("console_sessions"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_console_sessions")),
        sa.UniqueConstraint("id_hash", name=op.f("uq_console_sessions_id_hash")),
    )
    op.create_index(op.f("ix_console_sessions_api_key_id"), "console_sessions", ["api_key_id"], unique=False)
    op.create_table(
        "console_chain_checks",
        sa.Column("workspace_id", sa.Uuid(), nullable=False),
        sa.Column("checked_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("valid", sa.Boolean(), nullable=False),
        sa.Column("events_checked", sa.Integer(), nullable=False),
        sa.Column("first_broken_seq", sa.Integer(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f("fk_console_chain_checks_workspace_id_workspaces"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_console_chain_checks")),
    )
    op.create_index(
        "ix_console_chain_checks_workspace_id_checked_at",
        "console_chain_checks",
        ["workspace_id", "checked_at"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_console_chain_checks_workspace_id_checked_at", table_name="console_chain_checks")
    op.drop_table("console_chain_checks")
    op.drop_index(op.f("ix_console_sessions_api_key_id"), table_name="console_sessions")
    op.drop_table("console_sessions")
    op.drop_index(op.f("ix_console_links_api_key_id"), table_name="console_links")
    op.drop_table("console_links")
