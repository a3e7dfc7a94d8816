"""The message rollups keep a row's latencies as a histogram (``latencies``), not a row per latency.

``report_message_counts`` and ``report_message_daily`` had ``latency_ms`` in their key: every distinct queue-to-sent
time of an hour's ``sent`` events was a row of its own (720,000 of the 1.57 million counter rows a rebuild wrote at
ten million ledger events, each a unique key of seven columns to check and extend: issue 18). Now a row per key
holds them all: ``latencies`` ``{"milliseconds": count}`` (NULL for outcomes other than ``sent``); ``n`` still counts
every event of the row, a ``sent`` without a ``queued`` step (no latency) included.

**Deploy**: code before and after this revision cannot read the other's rollups (``latency_ms`` or ``latencies``):
stop every server and worker, migrate, start the new code (README, "Production"). Only reports are affected meanwhile.

- **Upgrade**: both tables locked (``ACCESS EXCLUSIVE``, waited for 5 s at most: behind a long reader the upgrade
  fails and is run again, nothing changed); each table's rows merged per key into a temporary table (``n`` summed,
  the latencies of its ``sent`` rows collected), the table emptied (``TRUNCATE``: a ``DELETE`` left every old row
  for the new key's index build to step over, and the table 8.5 times its size: hostile review), ``latency_ms`` and
  the old key dropped, the new key (without it) added and the merged rows put back. Reports read the same numbers
  before and after.
- **Downgrade**: the reverse: a row per latency, and the events of a key without a latency (``n`` minus the
  histogram's total) as a row with ``latency_ms`` NULL.

Revision ID: 0049
Revises: 0048
Create Date: 2026-12-06 21:30:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0049"
down_revision: str | None = "0048"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: (table, its time column)
_TABLES = (("report_message_counts", "hour"), ("report_message_daily", "day"))
_KEY = "workspace_id, {at}, channel, provider, purpose_id, outcome, campaign"


def upgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.execute(f"LOCK TABLE {', '.join(t for t, _ in _TABLES)} IN ACCESS EXCLUSIVE MODE")
    op.execute("SET LOCAL lock_timeout = 0")
    for table, at in _TABLES:
        key = _KEY.format(at=at)
        op.execute(
            f"""
            CREATE TEMPORARY TABLE merged ON COMMIT DROP AS
            SELECT {key}, sum(n)::bigint AS n,
                   jsonb_object_agg(latency_ms, n) FILTER (WHERE latency_ms IS NOT NULL) AS latencies
              FROM (SELECT {key}, latency_ms, sum(n)::bigint AS n FROM {table} GROUP BY {key}, latency_ms) r
             GROUP BY {key}
            """  # noqa: S608  # constant names
        )
        op.execute(f"TRUNCATE {table}")
        op.execute(f"ALTER TABLE {table} DROP CONSTRAINT uq_{table}_key")
        op.execute(f"ALTER TABLE {table} DROP COLUMN latency_ms")
        op.execute(f"ALTER TABLE {table} ADD COLUMN latencies jsonb")
        op.execute(f"ALTER TABLE {table} ADD CONSTRAINT uq_{table}_key UNIQUE NULLS NOT DISTINCT ({key})")
        op.execute(f"INSERT INTO {table} ({key}, n, latencies) SELECT * FROM merged ORDER BY {key}")  # noqa: S608
        op.execute("DROP TABLE merged")


def downgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.execute(f"LOCK TABLE {', '.join(t for t, _ in _TABLES)} IN ACCESS EXCLUSIVE MODE")
    op.execute("SET LOCAL lock_timeout = 0")
    for table, at in _TABLES:
        key = _KEY.format(at=at)
        op.execute(
            f"""
            CREATE TEMPORARY TABLE split ON COMMIT DROP AS
            SELECT {key}, l.latency_ms, l.n
              FROM {table} r
             CROSS JOIN LATERAL (
                   SELECT ms::bigint, c::bigint FROM jsonb_each_text(r.latencies) j (ms, c)
                   UNION ALL
                   SELECT NULL, r.n - coalesce((SELECT sum(c::bigint) FROM jsonb_each_text(r.latencies) j (ms, c)), 0)
                   ) l (latency_ms, n)
             WHERE l.n > 0
            """  # noqa: S608  # constant names
        )
        op.execute(f"TRUNCATE {table}")
        op.execute(f"ALTER TABLE {table} DROP CONSTRAINT uq_{table}_key")
        op.execute(f"ALTER TABLE {table} DROP COLUMN latencies")
        op.execute(f"ALTER TABLE {table} ADD COLUMN latency_ms bigint")
        columns = key.replace("outcome, ", "outcome, latency_ms, ")
        op.execute(f"ALTER TABLE {table} ADD CONSTRAINT uq_{table}_key UNIQUE NULLS NOT DISTINCT ({columns})")
        op.execute(f"INSERT INTO {table} ({key}, latency_ms, n) SELECT * FROM split ORDER BY {key}")  # noqa: S608
        op.execute("DROP TABLE split")
