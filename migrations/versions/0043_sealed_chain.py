"""The ledger's chain sealed after commit (issue 21, item 3; docs/benchmarks.md "Ledger writes under a flood").

A consent change no longer takes its workspace's chain head: it inserts its event *unsealed* (``seq``,
``prev_hash`` and ``hash`` NULL) and commits, so that changes of one workspace commit together instead of one at
a time. The sealer (:mod:`app.ledger.sealer`) then appends the committed events to the chain under the head's
lock, in the order they were taken in (``intake``, a sequence drawn at insert: after the consent rows' locks, so
one address's events keep their order), in batches, by an ``UPDATE`` that sets the three columns once.

- ``seq``, ``prev_hash`` and ``hash`` may be NULL, all three or none (``ck_consent_events_sealed_whole``);
- ``intake``: drawn from ``consent_events_intake_seq`` at insert (the rows before it keep NULL: all are sealed);
- ``ix_consent_events_unsealed`` (``workspace_id, intake WHERE seq IS NULL``): what the sealer reads, empty
  most of the time;
- the append-only trigger lets exactly one more ``UPDATE`` through: sealing an unsealed event (from NULL to a
  position, nothing else changed). A sealed event's position can never change, and no event can be unsealed;
- ``consent.changed`` webhooks are queued when an event is sealed (they carry its ``seq``): the insert trigger
  queues only events inserted sealed (imports, notes, merges, which still append under the head's lock), a new
  statement trigger on ``UPDATE`` those the sealer seals (not those an erasure has emptied meanwhile: they would
  name the erased contact).

Revision ID: 0043
Revises: 0042
Create Date: 2026-12-06 06:00:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0043"
down_revision: str | None = "0042"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_APPEND_ONLY = """
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

_APPEND_ONLY_BEFORE = """
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
  IF NEW.personal IS NOT NULL
     OR (to_jsonb(NEW) - 'personal') IS DISTINCT FROM (to_jsonb(OLD) - 'personal') THEN
    RAISE EXCEPTION 'consent_events is append-only: only erasure of the personal part is allowed'
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  RETURN NEW;
END $$;
"""

#: The delivery a ``consent.changed`` event queues (migrations 0014, 0040), of the events in ``{source}``.
_QUEUE = """
            INSERT INTO webhook_deliveries (id, workspace_id, subscription_id, event_id, event_type, payload)
            SELECT gen_random_uuid(), e.workspace_id, s.id, e.id, 'consent.changed',
                   jsonb_build_object(
                       'id', e.id, 'type', 'consent.changed', 'created_at', e.recorded_at,
                       'data', jsonb_build_object(
                           'seq', e.seq, 'contact_id', e.contact_id, 'external_id', c.external_id,
                           'contact_point_id', e.contact_point_id, 'channel', e.channel, 'purpose', p.key,
                           'trigger', e.trigger, 'from_state', e.from_state, 'to_state', e.to_state,
                           'legal_basis', e.legal_basis, 'occurred_at', e.occurred_at))
              FROM {source}
              JOIN webhook_subscriptions s ON s.workspace_id = e.workspace_id AND 'consent.changed' = ANY(s.events)
              LEFT JOIN contacts c ON c.id = e.contact_id
              LEFT JOIN purposes p ON p.id = e.purpose_id
             {where}
            ON CONFLICT (subscription_id, event_id, workspace_id) DO NOTHING;
"""

_WEBHOOKS = """
CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM webhook_subscriptions WHERE 'consent.changed' = ANY(events)) THEN
        RETURN NULL;  -- the common case costs one look at a small table
    END IF;
{queue}
    RETURN NULL;
END
$$
"""


def _webhooks(name: str, source: str, where: str) -> str:
    return _WEBHOOKS.format(name=name, queue=_QUEUE.format(source=source, where=where))


def upgrade() -> None:
    op.execute("ALTER TABLE consent_events ALTER COLUMN seq DROP NOT NULL")
    op.execute("ALTER TABLE consent_events ALTER COLUMN prev_hash DROP NOT NULL")
    op.execute("ALTER TABLE consent_events ALTER COLUMN hash DROP NOT NULL")
    op.execute(
        "ALTER TABLE consent_events ADD CONSTRAINT ck_consent_events_sealed_whole "
        "CHECK ((seq IS NULL) = (hash IS NULL) AND (seq IS NULL) = (prev_hash IS NULL))"
    )
    op.execute("CREATE SEQUENCE consent_events_intake_seq AS bigint")
    op.execute("ALTER TABLE consent_events ADD COLUMN intake bigint")  # no default yet: no row is rewritten
    op.execute("ALTER TABLE consent_events ALTER COLUMN intake SET DEFAULT nextval('consent_events_intake_seq')")
    op.execute("ALTER SEQUENCE consent_events_intake_seq OWNED BY consent_events.intake")
    op.execute("CREATE INDEX ix_consent_events_unsealed ON consent_events (workspace_id, intake) WHERE seq IS NULL")
    op.execute(_APPEND_ONLY)
    op.execute(_webhooks("consent_events_queue_webhooks", "added e", "WHERE e.seq IS NOT NULL"))
    op.execute(
        _webhooks(
            "consent_events_queue_sealed_webhooks",
            "sealed e JOIN unsealed o ON o.id = e.id AND o.recorded_at = e.recorded_at",
            # an event whose evidence an erasure removed before it was sealed is not announced: it would name the
            # erased contact, whose deliveries the erasure has just forgotten
            "WHERE o.seq IS NULL AND e.seq IS NOT NULL AND e.personal IS NOT NULL",
        )
    )
    op.execute(
        "CREATE TRIGGER consent_events_sealed_webhooks AFTER UPDATE ON consent_events "
        "REFERENCING OLD TABLE AS unsealed NEW TABLE AS sealed "
        "FOR EACH STATEMENT EXECUTE FUNCTION consent_events_queue_sealed_webhooks()"
    )


def downgrade() -> None:
    # what the sealer has not sealed yet cannot be left without a position: seal first (`consent audit verify`
    # seals every workspace's waiting events before it checks)
    op.execute(
        "DO $$ BEGIN IF EXISTS (SELECT 1 FROM consent_events WHERE seq IS NULL) THEN "
        "RAISE EXCEPTION 'unsealed ledger events: run consent audit verify (it seals them) before downgrading'; "
        "END IF; END $$"
    )
    op.execute("DROP TRIGGER consent_events_sealed_webhooks ON consent_events")
    op.execute("DROP FUNCTION consent_events_queue_sealed_webhooks()")
    op.execute(_webhooks("consent_events_queue_webhooks", "added e", ""))
    op.execute(_APPEND_ONLY_BEFORE)
    op.execute("DROP INDEX ix_consent_events_unsealed")
    op.execute("ALTER TABLE consent_events DROP COLUMN intake")  # drops the sequence it owns
    op.execute("ALTER TABLE consent_events DROP CONSTRAINT ck_consent_events_sealed_whole")
    op.execute("ALTER TABLE consent_events ALTER COLUMN hash SET NOT NULL")
    op.execute("ALTER TABLE consent_events ALTER COLUMN prev_hash SET NOT NULL")
    op.execute("ALTER TABLE consent_events ALTER COLUMN seq SET NOT NULL")
