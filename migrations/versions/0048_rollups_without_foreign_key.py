"""The aggregator's counters lose their foreign key to ``workspaces``; the watermark's lock stands for it.

A rebuild that finds a workspace's rollups lost writes every counter again (1.5 million rows at ten million
ledger events), and the foreign key's check per row (a lookup and a ``KEY SHARE`` lock of the workspace row, the
same row each time) was about 30 % of writing them (docs/benchmarks.md, issue 18). The counters are derived data,
written only by a catch-up or a rebuild of their own workspace under its watermark's lock
(``app.reports.repository.lock_watermark``): a workspace's deletion deletes them in its rounds and, once it holds
the workspace row ``FOR UPDATE``, again in its last step before the row, so none outlives it. The ``ON DELETE
CASCADE`` that did that is what goes; ``report_watermarks``, ``report_message_queue`` and
``report_standing_daily`` keep theirs.

- **Upgrade**: the five tables are locked first (``ACCESS EXCLUSIVE``, waited for 5 s at most: behind a long
  reader of one of them the upgrade fails and is run again, nothing changed), then the constraints dropped, each
  of which takes ``ACCESS EXCLUSIVE`` on ``workspaces`` too: in that order ``workspaces`` (every request's key
  lookup reads it) is locked only for the milliseconds of the drops, not while the upgrade waits for a reader.
  Nothing is rewritten.
- **Downgrade**: delete counters whose workspace is gone (none, unless written by hand), then add the constraints
  again (validated: a scan of each table).

Revision ID: 0048
Revises: 0047
Create Date: 2026-12-06 19:00:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0048"
down_revision: str | None = "0047"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TABLES = (
    "report_consent_counts",
    "report_consent_daily",
    "report_doi",
    "report_message_counts",
    "report_message_daily",
)


def upgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    # the counters first: a drop waiting for a reader of its table would hold workspaces meanwhile
    op.execute(f"LOCK TABLE {', '.join(_TABLES)} IN ACCESS EXCLUSIVE MODE")
    for table in _TABLES:
        op.execute(f"ALTER TABLE {table} DROP CONSTRAINT fk_{table}_workspace_id_workspaces")
    op.execute("SET LOCAL lock_timeout = 0")


def downgrade() -> None:
    for table in _TABLES:
        op.execute(
            f"DELETE FROM {table} r WHERE NOT EXISTS (SELECT FROM workspaces w WHERE w.id = r.workspace_id)"  # noqa: S608  # constant names
        )
        op.execute(
            f"ALTER TABLE {table} ADD CONSTRAINT fk_{table}_workspace_id_workspaces"
            " FOREIGN KEY (workspace_id) REFERENCES workspaces (id) ON DELETE CASCADE"
        )
