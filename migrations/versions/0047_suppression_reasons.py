"""Suppressions record their sources: ``reasons`` (and a pause kept under a permanent row, ``paused_until``).

One suppression row stands for a key, scope and purpose whatever wrote it, and kept the first writer's label
(``reason``): a withdrawn Art. 21 objection could not lift its own block without lifting an erasure's, a sticker's
or a pause recorded on the same key (docs/security.md, 2026-12-06). From this revision on every writer adds its
reason to ``reasons``; the objection's withdrawal takes ``objection_art21`` away and deletes a row left without any.

- **Upgrade**: ``reasons text[] NOT NULL``. A row that exists now cannot know who else wrote its key: it gets
  ``ARRAY[reason, 'unrecorded']`` (``unrecorded``: possibly other sources), so lifting one reason never empties it
  and such an address stays out of mailings (the safe side). A pause's own row gets ``{paused}``: every permanent
  writer replaced a pause rather than joining it, so a pause row has no other source. ``paused_until`` (NULL
  everywhere) keeps the end of a pause that meets a permanent row from now on. Checks: every element of
  ``reasons`` is a known reason or ``unrecorded`` (one at least); ``paused_until`` only on a permanent row. The
  column's default is ``{unrecorded}``: a row inserted by a writer that does not name its source (a hand-written
  ``INSERT``, a ``COPY`` of generated data, code of a branch older than this revision) is never lifted either; the
  service's own writers always name theirs.
  The backfill is one rewrite of the table (``ALTER COLUMN … TYPE … USING``) under the ``ACCESS EXCLUSIVE`` lock
  of ``ALTER TABLE``, held to the commit: every read and write of ``suppressions`` (the send gate's, eligibility's)
  waits meanwhile: 0.8 to 2.1 s at 200,000 suppressions (docs/benchmarks.md); plan a short window on a large table.
  The lock is waited for 5 s at most (``lock_timeout``, as 0045): behind a long open read of ``suppressions`` the
  upgrade fails with "canceling statement due to lock timeout" instead of queueing every read of it behind itself;
  nothing has changed then, and it is run again when the reader is done.
- **Downgrade**: the columns and checks go; the rows stay as they are (a row a withdrawal lifted stays lifted, a
  pause kept in ``paused_until`` is forgotten: before this revision the permanent row stopped it anyway).

Revision ID: 0047
Revises: 0046
Create Date: 2026-12-06 16:30:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0047"
down_revision: str | None = "0046"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_SOURCES = (
    "unsubscribe",
    "objection_art21",
    "objection_sticker",
    "complaint",
    "hard_bounce",
    "erasure",
    "provider_block",
    "robinson",
    "paused",
    "unrecorded",
)


def upgrade() -> None:
    # one rewrite of the table and its indexes, no dead row version per row (as an UPDATE of every row leaves, at
    # 3.5x the time, docs/benchmarks.md): the column comes in with an empty default (no rewrite), then its type is
    # "changed" to itself with the backfill as the USING expression (the rewrite), the checks validated with it
    known = ", ".join(repr(v) for v in _SOURCES)
    # not queued behind a long reader (an export, a rebuild) with every send gate's and eligibility read of
    # suppressions queued behind it: after 5 s waiting for the lock the upgrade fails (nothing changed; run it again)
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.execute(
        """
        ALTER TABLE suppressions
          ADD COLUMN reasons text[] NOT NULL DEFAULT '{}',
          ADD COLUMN paused_until timestamp with time zone
        """
    )
    op.execute("SET LOCAL lock_timeout = 0")  # the lock is held from here to the commit
    op.execute(
        f"""
        ALTER TABLE suppressions
          ALTER COLUMN reasons TYPE text[]
                USING CASE WHEN until IS NULL THEN ARRAY[reason, 'unrecorded'] ELSE ARRAY[reason] END,
          ALTER COLUMN reasons SET DEFAULT '{{unrecorded}}',
          ADD CONSTRAINT ck_suppressions_reasons_known
                CHECK (cardinality(reasons) > 0 AND reasons <@ ARRAY[{known}]::text[]),
          ADD CONSTRAINT ck_suppressions_paused_until_if_permanent CHECK (paused_until IS NULL OR until IS NULL)
        """
    )


def downgrade() -> None:
    op.drop_constraint(op.f("ck_suppressions_paused_until_if_permanent"), "suppressions", type_="check")
    op.drop_constraint(op.f("ck_suppressions_reasons_known"), "suppressions", type_="check")
    op.drop_column("suppressions", "paused_until")
    op.drop_column("suppressions", "reasons")
