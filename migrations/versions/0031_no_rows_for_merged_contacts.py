"""No address, consent or message for a merged contact (hostile review of the identity merge, issue 19).

A writer that read the duplicate before a merge committed (it waited on the contact's row lock) would add its
address, consent or message to the stub after the merge had moved everything to the survivor: invisible there, and
deleted without a suppression key when the survivor is erased. A trigger refuses such a row with SQLSTATE CM001,
which the API answers 409 ``contact_merged``; the caller asks again with the survivor.

Revision ID: 0031
Revises: 0030
Create Date: 2026-12-05 00:40:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0031"
down_revision: str | None = "0030"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TABLES = ("contact_points", "consents", "messages")


def upgrade() -> None:
    op.execute(
        """
        CREATE FUNCTION refuse_merged_contact() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE
            survivor uuid;
        BEGIN
            -- FOR KEY SHARE waits for a merge that holds the contact's row, then reads the row it committed (no
            -- condition on merged_into here: a row that did not match before the wait would not be waited for)
            SELECT merged_into INTO survivor FROM contacts WHERE id = NEW.contact_id FOR KEY SHARE;
            IF survivor IS NOT NULL THEN
                RAISE EXCEPTION 'contact % was merged into another contact', NEW.contact_id USING ERRCODE = 'CM001';
            END IF;
            RETURN NEW;
        END $$
        """
    )
    for table in _TABLES:
        op.execute(
            f"CREATE TRIGGER {table}_not_for_merged BEFORE INSERT OR UPDATE OF contact_id ON {table}"
            " FOR EACH ROW EXECUTE FUNCTION refuse_merged_contact()"
        )


def downgrade() -> None:
    for table in _TABLES:
        op.execute(f"DROP TRIGGER {table}_not_for_merged ON {table}")
    op.execute("DROP FUNCTION refuse_merged_contact()")
