"""Reports: rollup tables, the aggregator's watermark, and a queue of message events fed by a trigger.

Counters per workspace x hour (docs/reporting.md). The ledger is read from a watermark on its ``seq`` (appends
are serialised per workspace, so a seq never commits after a higher one); message events have no such order,
so a statement-level trigger queues their ids, and the aggregator consumes the queue in the transaction that
counts them. Nothing here names a person.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-04 21:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _counter(name: str, *columns: sa.Column, key: Sequence[str]) -> None:  # type: ignore[type-arg]
    op.create_table(
        name,
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("workspace_id", sa.Uuid(), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        *columns,
        sa.ForeignKeyConstraint(
            ["workspace_id"], ["workspaces.id"], name=op.f(f"fk_{name}_workspace_id_workspaces"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f(f"pk_{name}")),
        sa.UniqueConstraint("workspace_id", *key, name=op.f(f"uq_{name}_key"), postgresql_nulls_not_distinct=True),
    )


def upgrade() -> None:
    op.create_table(
        "report_watermarks",
        sa.Column("workspace_id", sa.Uuid(), nullable=False),
        sa.Column("ledger_seq", sa.BigInteger(), server_default="0", nullable=False),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f("fk_report_watermarks_workspace_id_workspaces"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("workspace_id", name=op.f("pk_report_watermarks")),
    )
    _counter(
        "report_consent_counts",
        sa.Column("hour", sa.DateTime(timezone=True), nullable=False),
        sa.Column("channel", sa.Text(), nullable=False),
        sa.Column("purpose_id", sa.Uuid(), nullable=True),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("trigger", sa.Text(), nullable=False),
        sa.Column("from_state", sa.Text(), nullable=False),
        sa.Column("to_state", sa.Text(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        key=("hour", "channel", "purpose_id", "source", "trigger", "from_state", "to_state", "detail"),
    )
    _counter(
        "report_consent_daily",
        sa.Column("day", sa.DateTime(timezone=True), nullable=False),
        sa.Column("channel", sa.Text(), nullable=False),
        sa.Column("purpose_id", sa.Uuid(), nullable=True),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("trigger", sa.Text(), nullable=False),
        sa.Column("from_state", sa.Text(), nullable=False),
        sa.Column("to_state", sa.Text(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        key=("day", "channel", "purpose_id", "source", "trigger", "from_state", "to_state", "detail"),
    )
    _counter(
        "report_doi",
        sa.Column("cohort_day", sa.Date(), nullable=False),
        sa.Column("channel", sa.Text(), nullable=False),
        sa.Column("purpose_id", sa.Uuid(), nullable=True),
        sa.Column("confirm_s", sa.BigInteger(), nullable=True),
        key=("cohort_day", "channel", "purpose_id", "confirm_s"),
    )
    _counter(
        "report_message_counts",
        sa.Column("hour", sa.DateTime(timezone=True), nullable=False),
        sa.Column("channel", sa.Text(), nullable=True),
        sa.Column("provider", sa.Text(), nullable=True),
        sa.Column("purpose_id", sa.Uuid(), nullable=True),
        sa.Column("outcome", sa.Text(), nullable=False),
        sa.Column("latency_ms", sa.BigInteger(), nullable=True),
        key=("hour", "channel", "provider", "purpose_id", "outcome", "latency_ms"),
    )
    _counter(
        "report_message_daily",
        sa.Column("day", sa.DateTime(timezone=True), nullable=False),
        sa.Column("channel", sa.Text(), nullable=True),
        sa.Column("provider", sa.Text(), nullable=True),
        sa.Column("purpose_id", sa.Uuid(), nullable=True),
        sa.Column("outcome", sa.Text(), nullable=False),
        sa.Column("latency_ms", sa.BigInteger(), nullable=True),
        key=("day", "channel", "provider", "purpose_id", "outcome", "latency_ms"),
    )
    op.create_table(
        "report_message_queue",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("workspace_id", sa.Uuid(), nullable=False),
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["event_id"],
            ["message_events.id"],
            name=op.f("fk_report_message_queue_event_id_message_events"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f("fk_report_message_queue_workspace_id_workspaces"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_report_message_queue")),
    )
    op.create_index("ix_report_message_queue_workspace_id", "report_message_queue", ["workspace_id"])
    op.create_index("ix_report_message_queue_event_id", "report_message_queue", ["event_id"])
    # every message event of the past is queued once, so the first catch-up counts the history
    op.execute(
        """
        INSERT INTO report_message_queue (workspace_id, event_id)
        SELECT m.workspace_id, e.id FROM message_events e JOIN messages m ON m.id = e.message_id
         WHERE e.status <> 'sending' ORDER BY e.at, e.id
        """
    )
    op.execute(
        """
        CREATE FUNCTION message_events_queue_reports() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO report_message_queue (workspace_id, event_id)
            SELECT m.workspace_id, a.id FROM added a JOIN messages m ON m.id = a.message_id
             WHERE a.status <> 'sending';
            RETURN NULL;
        END
        $$
        """
    )
    op.execute(
        """
        CREATE TRIGGER message_events_reports
        AFTER INSERT ON message_events REFERENCING NEW TABLE AS added
        FOR EACH STATEMENT EXECUTE FUNCTION message_events_queue_reports()
        """
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER message_events_reports ON message_events")
    op.execute("DROP FUNCTION message_events_queue_reports()")
    op.drop_table("report_message_queue")
    op.drop_table("report_message_daily")
    op.drop_table("report_message_counts")
    op.drop_table("report_doi")
    op.drop_table("report_consent_daily")
    op.drop_table("report_consent_counts")
    op.drop_table("report_watermarks")
