"""Existing customers (issue 19 item 2, UWG §7(3)): ``purchases``, ``purposes.similar_products_of``, and a partial
index of the ledger's withdrawals and objections.

A purchase made with an email address, recorded with the objection notice shown at collection, makes the purposes
whose ``similar_products_of`` names its category eligible by email without consent until the person objects; the
index lets eligibility ask "was this address ever withdrawn or objected to?" with one probe.

Revision ID: 0033
Revises: 0031
Create Date: 2026-12-05 04:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0033"
down_revision: str | None = "0031"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "purposes",
        sa.Column("similar_products_of", sa.ARRAY(sa.Text()), server_default=sa.text("'{}'::text[]"), nullable=False),
    )
    op.create_check_constraint(
        op.f("ck_purposes_similar_products_of_size"), "purposes", "cardinality(similar_products_of) <= 50"
    )
    op.create_table(
        "purchases",
        sa.Column("workspace_id", sa.Uuid(), nullable=False),
        sa.Column("contact_point_id", sa.Uuid(), nullable=False),
        sa.Column("reference", sa.Text(), nullable=False),
        sa.Column("purchased_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("category", sa.Text(), nullable=False),
        sa.Column("objection_notice_version", sa.Text(), nullable=True),
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("length(reference) BETWEEN 1 AND 200", name=op.f("ck_purchases_reference_length")),
        sa.CheckConstraint("category ~ '^[a-z0-9][a-z0-9_-]{0,62}$'", name=op.f("ck_purchases_category_format")),
        sa.CheckConstraint(
            "objection_notice_version IS NULL OR length(objection_notice_version) BETWEEN 1 AND 200",
            name=op.f("ck_purchases_notice_version_length"),
        ),
        sa.ForeignKeyConstraint(
            ["contact_point_id"],
            ["contact_points.id"],
            name=op.f("fk_purchases_contact_point_id_contact_points"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["workspace_id"], ["workspaces.id"], name=op.f("fk_purchases_workspace_id_workspaces"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_purchases")),
        sa.UniqueConstraint("workspace_id", "reference", name=op.f("uq_purchases_workspace_id_reference")),
    )
    op.create_index(
        "ix_purchases_contact_point_id_category", "purchases", ["contact_point_id", "category", "purchased_at"]
    )
    op.create_index(
        "ix_consent_events_withdrawals",
        "consent_events",
        ["contact_point_id", "purpose_id"],
        postgresql_where=sa.text("to_state IN ('opted_out', 'objected')"),
    )


def downgrade() -> None:
    op.drop_index("ix_consent_events_withdrawals", table_name="consent_events")
    op.drop_index("ix_purchases_contact_point_id_category", table_name="purchases")
    op.drop_table("purchases")
    op.drop_constraint(op.f("ck_purposes_similar_products_of_size"), "purposes", type_="check")
    op.drop_column("purposes", "similar_products_of")
