"""Consent validity and re-permission per purpose (issue 19, item 1; CHANNEL_RULES.md E11).

``purposes`` gain ``validity``, ``inactivity`` and ``repermission_before`` (ISO 8601 calendar spans, NULL: not
set); ``repermissions`` holds one "keep me subscribed" link per consent period (only the hash of its token), so a
re-permission message is queued at most once per period.

Revision ID: 0032
Revises: 0035
Create Date: 2026-12-05 03:50:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0032"
down_revision: str | None = "0035"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_SPAN = "^P([0-9]{1,3}Y)?([0-9]{1,4}M)?([0-9]{1,4}W)?([0-9]{1,5}D)?$"
_COLUMNS = ("validity", "inactivity", "repermission_before")


def upgrade() -> None:
    for column in _COLUMNS:
        op.add_column("purposes", sa.Column(column, sa.Text(), nullable=True))
        op.create_check_constraint(
            op.f(f"ck_purposes_{column}_span"), "purposes", sa.text(f"{column} ~ '{_SPAN}' AND {column} <> 'P'")
        )
    op.create_check_constraint(
        op.f("ck_purposes_repermission_needs_an_end"),
        "purposes",
        sa.text("repermission_before IS NULL OR validity IS NOT NULL OR inactivity IS NOT NULL"),
    )
    op.create_table(
        "repermissions",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("workspace_id", sa.Uuid(), nullable=False),
        sa.Column("consent_id", sa.Uuid(), nullable=False),
        sa.Column("contact_point_id", sa.Uuid(), nullable=False),
        sa.Column("purpose_id", sa.Uuid(), nullable=False),
        sa.Column("period_since", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ends_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("token_hash", sa.LargeBinary(), nullable=False),
        sa.Column("message_id", sa.Uuid(), nullable=True),
        sa.Column("renewed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("renewed_event_id", sa.Uuid(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f("fk_repermissions_workspace_id_workspaces"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["consent_id"], ["consents.id"], name=op.f("fk_repermissions_consent_id_consents"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["contact_point_id"],
            ["contact_points.id"],
            name=op.f("fk_repermissions_contact_point_id_contact_points"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["purpose_id"], ["purposes.id"], name=op.f("fk_repermissions_purpose_id_purposes"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["message_id"], ["messages.id"], name=op.f("fk_repermissions_message_id_messages"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_repermissions")),
        sa.UniqueConstraint("consent_id", "period_since", name=op.f("uq_repermissions_consent_id_period_since")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_repermissions_token_hash")),
    )
    op.create_index(op.f("ix_repermissions_contact_point_id"), "repermissions", ["contact_point_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_repermissions_contact_point_id"), table_name="repermissions")
    op.drop_table("repermissions")
    op.drop_constraint(op.f("ck_purposes_repermission_needs_an_end"), "purposes", type_="check")
    for column in reversed(_COLUMNS):
        op.drop_constraint(op.f(f"ck_purposes_{column}_span"), "purposes", type_="check")
        op.drop_column("purposes", column)
