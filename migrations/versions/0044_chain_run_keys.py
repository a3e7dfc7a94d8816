"""Runs started in batches may carry the caller's key (``POST /v1/chains/{id}/runs/batch``, issue 20).

``chain_runs.key`` (NULL for runs started one at a time) with a unique partial index on ``(workspace_id, chain_id,
key)``: an item's key names one run of the chain version, so a retried batch (a new ``Idempotency-Key``, the same
item keys) starts nothing twice and answers the existing runs. The key lives exactly as long as its run (erased
with the contact, deleted with the chain's workspace); the form of an ``Idempotency-Key`` value is checked.

Downgrading drops every item key: a batch retried after a downgrade (and a later upgrade) starts its runs again.

Revision ID: 0044
Revises: 0043
Create Date: 2026-12-06 09:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0044"
down_revision: str | None = "0043"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("chain_runs", sa.Column("key", sa.Text(), nullable=True))
    op.create_check_constraint(op.f("ck_chain_runs_key_format"), "chain_runs", "key ~ '^[!-~]{1,255}$'")
    op.create_index(
        "uq_chain_runs_key",
        "chain_runs",
        ["workspace_id", "chain_id", "key"],
        unique=True,
        postgresql_where=sa.text("key IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("uq_chain_runs_key", table_name="chain_runs")
    op.drop_constraint(op.f("ck_chain_runs_key_format"), "chain_runs", type_="check")
    op.drop_column("chain_runs", "key")
