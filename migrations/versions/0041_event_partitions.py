"""The ledger partitioned by month of ``recorded_at`` (issue 21, item 6; docs/scaling.md).

``consent_events`` becomes a table partitioned by range of ``recorded_at``: one partition a month
(``consent_events_y2027m01``: that month in UTC), a **default** partition so that no insert can fail for want of
one, and the whole history before: the existing table is attached as it is, as ``consent_events_history`` for
everything recorded before the end of the current month (or of its latest event's month, if later), so the
migration copies no row (it rebuilds the primary key, which gains ``recorded_at``, and reads the table for the
bound).

A partitioned table's primary key and unique constraints must include the partition column: the key is
``(id, workspace_id, recorded_at)``. ``(workspace_id, seq)`` is unique in each partition instead, by an index of
the partition's own (the history keeps its constraint; every month and the default partition get one): an index
of the partitioned table would have to include ``recorded_at``, and two events of one seq at different instants
would pass it. Across months a second event of a seq is refused by the chain head (``seq`` is the head's
``last_seq + 1`` under its lock) and found by the chain's verification (it breaks the ``prev_hash`` links).

``consent_events_ensure_partitions(months_ahead)`` creates this month's and the next months' partitions where no
partition covers them yet; the service calls it at start-up and every hour (:mod:`app.ledger.partitions`). A
month whose events are already in the default partition (the service was down for months) is left there: its
partition cannot be made without moving them, and the ledger's rows are not moved; they are read through
``consent_events`` like any other.

Triggers: the row trigger that keeps the ledger append-only and the statement trigger that queues webhooks move
to the partitioned table (the row trigger is cloned onto every partition); ``TRUNCATE`` is refused on the
partitioned table and, by a trigger of its own, on each partition.

Revision ID: 0041
Revises: 0040
Create Date: 2026-12-06 01:20:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0041"
down_revision: str | None = "0040"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: Months ahead of the current one the migration (and the service, :mod:`app.ledger.partitions`) keeps ready.
MONTHS_AHEAD = 2

_ENSURE = r"""
CREATE FUNCTION consent_events_ensure_partitions(months_ahead integer)
RETURNS TABLE (partition_name text, created boolean) LANGUAGE plpgsql AS $$
DECLARE
    this_month constant timestamptz := date_trunc('month', now(), 'UTC');
    starts timestamptz;
    ends timestamptz;
    part text;
BEGIN
    -- one caller at a time (every process calls it); a busy ledger gets 5 s before this round gives up
    PERFORM pg_advisory_xact_lock(hashtext('consent_events_ensure_partitions'));
    PERFORM set_config('lock_timeout', '5s', true);
    FOR month IN 0..months_ahead LOOP
        starts := this_month + make_interval(months => month);
        ends := starts + interval '1 month';
        part := 'consent_events_' || to_char(starts AT TIME ZONE 'UTC', '"y"YYYY"m"MM');
        CONTINUE WHEN EXISTS (  -- a partition covers the month already (this one, or the history)
            SELECT 1
              FROM pg_inherits i
              JOIN pg_class c ON c.oid = i.inhrelid
             CROSS JOIN LATERAL pg_get_expr(c.relpartbound, c.oid) AS b(bound)
             WHERE i.inhparent = 'consent_events'::regclass AND b.bound <> 'DEFAULT'
               AND coalesce(substring(b.bound FROM 'FROM \(''([^'']+)''\)')::timestamptz, '-infinity') < ends
               AND coalesce(substring(b.bound FROM 'TO \(''([^'']+)''\)')::timestamptz, 'infinity') > starts);
        IF EXISTS (SELECT 1 FROM consent_events_default WHERE recorded_at >= starts AND recorded_at < ends) THEN
            partition_name := part;  -- its events wait in the default partition; the ledger's rows are not moved
            created := false;
            RETURN NEXT;
            CONTINUE;
        END IF;
        EXECUTE format('CREATE TABLE %I PARTITION OF consent_events FOR VALUES FROM (%L) TO (%L)', part, starts, ends);
        EXECUTE format('CREATE UNIQUE INDEX %I ON %I (workspace_id, seq)', part || '_workspace_id_seq_key', part);
        EXECUTE format(
            'CREATE TRIGGER consent_events_no_truncate BEFORE TRUNCATE ON %I '
            'FOR EACH STATEMENT EXECUTE FUNCTION consent_events_append_only()', part);
        partition_name := part;
        created := true;
        RETURN NEXT;
    END LOOP;
END $$
"""

#: The indexes of the table as it was, and the names they take as the history partition's (index names are
#: unique in the schema: the partitioned table's take the old ones).
_INDEXES = (
    ("ix_consent_events_contact_id_seq", "consent_events_history_contact_id_seq_idx"),
    ("ix_consent_events_workspace_recorded_at", "consent_events_history_workspace_id_recorded_at_idx"),
    ("ix_consent_events_withdrawals", "consent_events_history_withdrawals_idx"),
)


def upgrade() -> None:
    op.execute("ALTER TABLE consent_events RENAME TO consent_events_history")
    # the partitioned table's triggers take over (its row trigger is cloned onto the history); TRUNCATE stays refused
    op.execute("DROP TRIGGER consent_events_no_change ON consent_events_history")
    op.execute("DROP TRIGGER consent_events_webhooks ON consent_events_history")
    op.execute(
        "ALTER TABLE consent_events_history DROP CONSTRAINT pk_consent_events, "
        "ADD CONSTRAINT consent_events_history_pkey PRIMARY KEY (id, workspace_id, recorded_at)"
    )
    op.execute(
        "ALTER TABLE consent_events_history "
        "RENAME CONSTRAINT uq_consent_events_workspace_id_seq TO consent_events_history_workspace_id_seq_key"
    )
    for name, history in _INDEXES:
        op.execute(f"ALTER INDEX {name} RENAME TO {history}")

    op.execute(
        "CREATE TABLE consent_events (LIKE consent_events_history INCLUDING DEFAULTS INCLUDING CONSTRAINTS) "
        "PARTITION BY RANGE (recorded_at)"
    )
    op.execute(
        "ALTER TABLE consent_events ADD CONSTRAINT pk_consent_events PRIMARY KEY (id, workspace_id, recorded_at), "
        "ADD CONSTRAINT fk_consent_events_workspace_id_workspaces FOREIGN KEY (workspace_id) "
        "REFERENCES workspaces (id) ON DELETE CASCADE"
    )
    op.execute("CREATE INDEX ix_consent_events_contact_id_seq ON consent_events (contact_id, seq)")
    op.execute("CREATE INDEX ix_consent_events_workspace_recorded_at ON consent_events (workspace_id, recorded_at)")
    op.execute(
        "CREATE INDEX ix_consent_events_withdrawals ON consent_events (contact_point_id, purpose_id) "
        "WHERE to_state IN ('opted_out', 'objected')"
    )
    # everything recorded before the end of this month (UTC), or of the month of the latest event if that is later
    # (a clock ahead), stays where it is; its indexes and foreign key are taken over as the partitions' (equal
    # definitions), the bound costs a scan
    op.execute(
        """
        DO $$ BEGIN
          EXECUTE format('ALTER TABLE consent_events ATTACH PARTITION consent_events_history '
                         'FOR VALUES FROM (MINVALUE) TO (%L)',
                         date_trunc('month', greatest(now(), (SELECT max(recorded_at) FROM consent_events_history)),
                                    'UTC') + interval '1 month');
        END $$
        """
    )
    op.execute("CREATE TABLE consent_events_default PARTITION OF consent_events DEFAULT")
    op.execute(
        "CREATE UNIQUE INDEX consent_events_default_workspace_id_seq_key ON consent_events_default (workspace_id, seq)"
    )
    op.execute(
        "CREATE TRIGGER consent_events_no_truncate BEFORE TRUNCATE ON consent_events_default "
        "FOR EACH STATEMENT EXECUTE FUNCTION consent_events_append_only()"
    )
    op.execute(
        "CREATE TRIGGER consent_events_no_change BEFORE UPDATE OR DELETE ON consent_events "
        "FOR EACH ROW EXECUTE FUNCTION consent_events_append_only()"
    )
    op.execute(
        "CREATE TRIGGER consent_events_no_truncate BEFORE TRUNCATE ON consent_events "
        "FOR EACH STATEMENT EXECUTE FUNCTION consent_events_append_only()"
    )
    op.execute(
        "CREATE TRIGGER consent_events_webhooks AFTER INSERT ON consent_events REFERENCING NEW TABLE AS added "
        "FOR EACH STATEMENT EXECUTE FUNCTION consent_events_queue_webhooks()"
    )
    op.execute(_ENSURE)
    op.execute(f"SELECT consent_events_ensure_partitions({MONTHS_AHEAD})")


def downgrade() -> None:
    op.execute("DROP FUNCTION consent_events_ensure_partitions(integer)")
    op.execute("ALTER TABLE consent_events DETACH PARTITION consent_events_history")
    op.execute("DROP TRIGGER IF EXISTS consent_events_no_change ON consent_events_history")  # the clone, if kept
    # the months since go back into the one table (no trigger on it queues their webhooks again)
    op.execute("INSERT INTO consent_events_history SELECT * FROM consent_events")
    op.execute("DROP TABLE consent_events")  # its partitions with it
    op.execute("ALTER TABLE consent_events_history RENAME TO consent_events")
    op.execute(
        "ALTER TABLE consent_events DROP CONSTRAINT consent_events_history_pkey, "
        "ADD CONSTRAINT pk_consent_events PRIMARY KEY (id, workspace_id)"
    )
    op.execute(
        "ALTER TABLE consent_events "
        "RENAME CONSTRAINT consent_events_history_workspace_id_seq_key TO uq_consent_events_workspace_id_seq"
    )
    for name, history in _INDEXES:
        op.execute(f"ALTER INDEX {history} RENAME TO {name}")
    op.execute(
        "CREATE TRIGGER consent_events_no_change BEFORE UPDATE OR DELETE ON consent_events "
        "FOR EACH ROW EXECUTE FUNCTION consent_events_append_only()"
    )
    op.execute(
        "CREATE TRIGGER consent_events_webhooks AFTER INSERT ON consent_events REFERENCING NEW TABLE AS added "
        "FOR EACH STATEMENT EXECUTE FUNCTION consent_events_queue_webhooks()"
    )
