"""A double opt-in confirmation records when its pending state started (issue 18, the rebuild's DOI read).

``consent_events.doi_started_at``: on a confirmation (``trigger = 'confirm'``, or the start word that completes a
pending SMS/WhatsApp signup: ``app.reports.repository._CONFIRMS``), the ``occurred_at`` of the signup that started
its pending state, paired exactly as the rebuild's window pairing did (the newest signup of the same contact,
address and purpose before it in the chain: ``trigger = 'signup'``, ``from_state <> 'pending'``,
``to_state = 'pending'``); NULL on every other event and on a confirmation without such a signup. A rebuild then
reads the DOI cohorts from the confirmations alone, without sorting every signup (docs/benchmarks.md).

- **Written by the database in the same insert**: a ``BEFORE INSERT`` row trigger (``consent_events_doi_start``,
  only for rows whose trigger is ``confirm`` or ``start_word`` or that bring a value: the ``WHEN`` clause spares
  every other row the call) sets it on every writer's path alike (the session's inserts, the batch ``unnest`` insert, the driver's
  statement) and overwrites whatever a writer passed, so it cannot be given a value of the caller's. "Before it":
  a confirmation inserted sealed (``seq`` given, under the chain head's lock, which seals what waits first) takes
  the newest sealed signup with a lower ``seq``; one inserted unsealed (the sealer chains in ``intake`` order, after
  every sealed event) the newest of the unsealed signups with a lower ``intake``, else the newest sealed one. Each
  is one probe that stops at the first start it meets: the unsealed ones through ``ix_consent_events_unsealed``,
  the sealed ones walked back through ``ix_consent_events_contact_id_seq`` (the hostile review found a first
  version, one query sorting the contact's whole history, at 6-12 ms per confirmation for a contact of
  20,000-100,000 events, and quadratic in a batch insert on a ledger without statistics). The consent row's lock,
  which every writer of an address and purpose holds, orders one address's events.
- No check constraint ties it to confirmations (a tampering test of the chain changes a ``start_word`` into a
  ``stop_word`` with the triggers bypassed and expects the verification to find it); a value on another event
  is never read: the rebuild reads it only on confirmations.
- **Not in the chain's hash** (derived data, like ``intake``); the append-only trigger already refuses any later
  change of it (only the personal part may be erased, and sealing changes only the three chain columns). An erasure
  leaves it: it is the time of another event of the same pseudonymous ids, which an erasure keeps as well.
- **Backfill**: every existing confirmation gets the value of the window pairing the rebuild used (numbered per
  workspace, contact, address and purpose in chain order; unsealed events after the sealed ones, by ``intake``).
  The append-only trigger refuses updates, so this migration lets through, for its own transaction only, an update
  that sets the column from NULL and changes nothing else, and restores migration 0043's function before it ends.

Downgrading drops the trigger, its function and the column.

Revision ID: 0045
Revises: 0044
Create Date: 2026-12-06 12:00:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0045"
down_revision: str | None = "0044"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: What starts a pending state; what confirms one (the rebuild's ``_CONFIRMS``, app/reports/repository.py).
_STARTS = "s.trigger = 'signup' AND s.from_state <> 'pending' AND s.to_state = 'pending'"
_CONFIRMS = (
    "(e.trigger = 'confirm' OR (e.trigger = 'start_word' AND e.from_state = 'pending' AND e.to_state = 'opted_in'))"
)

_DOI_START = f"""
CREATE OR REPLACE FUNCTION consent_events_doi_start() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  NEW.doi_started_at := NULL;
  IF NEW.contact_id IS NULL
     OR NOT (NEW.trigger = 'confirm'
             OR (NEW.trigger = 'start_word' AND NEW.from_state = 'pending' AND NEW.to_state = 'opted_in')) THEN
    RETURN NEW;
  END IF;
  IF NEW.seq IS NULL THEN
    -- unsealed: the unsealed events (few: the sealer's lag) come after every sealed one, in intake order
    SELECT s.occurred_at INTO NEW.doi_started_at
      FROM consent_events s
     WHERE s.workspace_id = NEW.workspace_id AND s.seq IS NULL AND s.intake < NEW.intake
       AND s.contact_id = NEW.contact_id AND s.contact_point_id = NEW.contact_point_id
       AND s.purpose_id IS NOT DISTINCT FROM NEW.purpose_id AND {_STARTS}
     ORDER BY s.intake DESC
     LIMIT 1;
    IF FOUND THEN
      RETURN NEW;
    END IF;
  END IF;
  -- sealed: the contact's events walked back from this one through (contact_id, seq), stopping at the first start
  SELECT s.occurred_at INTO NEW.doi_started_at
    FROM consent_events s
   WHERE s.contact_id = NEW.contact_id AND s.seq IS NOT NULL AND (NEW.seq IS NULL OR s.seq < NEW.seq)
     AND s.workspace_id = NEW.workspace_id AND s.contact_point_id = NEW.contact_point_id
     AND s.purpose_id IS NOT DISTINCT FROM NEW.purpose_id AND {_STARTS}
   ORDER BY s.seq DESC
   LIMIT 1;
  RETURN NEW;
END $$;
"""  # noqa: S608  # constants

#: Migration 0043's append-only function, and the same letting through the backfill's update (this migration only).
_APPEND_ONLY_HEAD = """
CREATE OR REPLACE FUNCTION consent_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'DELETE'
     AND current_setting('consent.deleting_workspace', true) = OLD.workspace_id::text
     AND EXISTS (SELECT 1 FROM workspaces w WHERE w.id = OLD.workspace_id AND w.deleted_at IS NOT NULL) THEN
    RETURN OLD;  -- the whole workspace is being deleted (workspace deletion by the operator)
  END IF;
  IF TG_OP <> 'UPDATE' THEN
    RAISE EXCEPTION 'consent_events is append-only: % is not allowed', TG_OP
      USING ERRCODE = 'insufficient_privilege';
  END IF;
"""
_APPEND_ONLY_TAIL = """
  IF OLD.seq IS NULL AND NEW.seq IS NOT NULL
     AND (to_jsonb(NEW) - 'seq' - 'prev_hash' - 'hash') IS NOT DISTINCT FROM (to_jsonb(OLD) - 'seq' - 'prev_hash' - 'hash')
  THEN
    RETURN NEW;  -- sealing: the event takes its place in the chain, once (app/ledger/sealer.py)
  END IF;
  IF NEW.personal IS NOT NULL
     OR (to_jsonb(NEW) - 'personal') IS DISTINCT FROM (to_jsonb(OLD) - 'personal') THEN
    RAISE EXCEPTION 'consent_events is append-only: only erasure of the personal part is allowed'
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  RETURN NEW;
END $$;
"""
_BACKFILLING = """
  IF OLD.doi_started_at IS NULL AND NEW.doi_started_at IS NOT NULL
     AND (to_jsonb(NEW) - 'doi_started_at') IS NOT DISTINCT FROM (to_jsonb(OLD) - 'doi_started_at') THEN
    RETURN NEW;  -- migration 0045's backfill, in its own transaction
  END IF;
"""

#: Every confirmation paired as the rebuild's window paired them (app/reports/repository.py, ``_ALL_DOI_CONFIRMED``
#: before this migration), per workspace; unsealed events after the sealed ones, in ``intake`` order.
_BACKFILL = f"""
UPDATE consent_events t SET doi_started_at = p.started_at
  FROM (SELECT id, recorded_at, started_at
          FROM (SELECT id, recorded_at, confirms, run,
                       first_value(occurred_at) OVER (PARTITION BY workspace_id, contact_id, contact_point_id,
                                                                   purpose_id, run
                                                      ORDER BY seq IS NULL, seq, intake) AS started_at
                  FROM (SELECT e.id, e.recorded_at, e.workspace_id, e.seq, e.intake, {_CONFIRMS} AS confirms,
                               e.occurred_at, e.purpose_id, e.contact_id, e.contact_point_id,
                               count(*) FILTER (WHERE e.trigger = 'signup')
                                   OVER (PARTITION BY e.workspace_id, e.contact_id, e.contact_point_id, e.purpose_id
                                         ORDER BY e.seq IS NULL, e.seq, e.intake ROWS UNBOUNDED PRECEDING) AS run
                          FROM consent_events e
                         WHERE e.contact_id IS NOT NULL
                           AND ({_CONFIRMS} OR ({_STARTS.replace("s.", "e.")}))) numbered) paired
         WHERE confirms AND run > 0) p
 WHERE t.id = p.id AND t.recorded_at = p.recorded_at
"""  # noqa: S608  # constants


def upgrade() -> None:
    # not queued behind a long reader (a rebuild, an export) with every ledger read and write queued behind it
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.execute("ALTER TABLE consent_events ADD COLUMN doi_started_at timestamptz")
    op.execute("SET LOCAL lock_timeout = 0")
    op.execute(_DOI_START)
    op.execute(
        "CREATE TRIGGER consent_events_doi_start BEFORE INSERT ON consent_events FOR EACH ROW "
        # every other row only when a writer passed a value, which the function then clears
        "WHEN (NEW.trigger IN ('confirm', 'start_word') OR NEW.doi_started_at IS NOT NULL) "
        "EXECUTE FUNCTION consent_events_doi_start()"
    )
    op.execute(_APPEND_ONLY_HEAD + _BACKFILLING + _APPEND_ONLY_TAIL)
    op.execute(_BACKFILL)
    op.execute(_APPEND_ONLY_HEAD + _APPEND_ONLY_TAIL)


def downgrade() -> None:
    op.execute("DROP TRIGGER consent_events_doi_start ON consent_events")
    op.execute("DROP FUNCTION consent_events_doi_start()")
    op.execute("ALTER TABLE consent_events DROP COLUMN doi_started_at")
