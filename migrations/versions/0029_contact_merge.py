"""Identity merge (issue 19): ``contacts.merged_into`` and ``merged_at``.

A merged duplicate stays as a stub pointing at its survivor, so its id and external id answer 409
``contact_merged`` naming it; it is deleted with the survivor (an erasure of the person erases both).

Revision ID: 0029
Revises: 0027
Create Date: 2026-12-04 23:55:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0029"
down_revision: str | None = "0027"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("contacts", sa.Column("merged_into", sa.Uuid(), nullable=True))
    op.add_column("contacts", sa.Column("merged_at", sa.DateTime(timezone=True), nullable=True))
    op.create_foreign_key(
        op.f("fk_contacts_merged_into_contacts"), "contacts", "contacts", ["merged_into"], ["id"], ondelete="CASCADE"
    )
    op.create_check_constraint(
        op.f("ck_contacts_merged_both"), "contacts", "(merged_into IS NULL) = (merged_at IS NULL)"
    )
    op.create_check_constraint(op.f("ck_contacts_merged_elsewhere"), "contacts", "merged_into <> id")
    op.create_index(
        op.f("ix_contacts_merged_into"),
        "contacts",
        ["merged_into"],
        postgresql_where=sa.text("merged_into IS NOT NULL"),
    )


def downgrade() -> None:
    op.execute("DELETE FROM contacts WHERE merged_into IS NOT NULL")
    op.drop_index(op.f("ix_contacts_merged_into"), table_name="contacts")
    op.drop_constraint(op.f("ck_contacts_merged_elsewhere"), "contacts", type_="check")
    op.drop_constraint(op.f("ck_contacts_merged_both"), "contacts", type_="check")
    op.drop_constraint(op.f("fk_contacts_merged_into_contacts"), "contacts", type_="foreignkey")
    op.drop_column("contacts", "merged_at")
    op.drop_column("contacts", "merged_into")
