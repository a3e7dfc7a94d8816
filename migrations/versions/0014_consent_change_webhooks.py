"""consent.changed webhooks queued by a trigger on consent_events, as message.status ones are (0013).

Until now ``apply_changes`` queued them with a statement of its own after every append: one more round trip on
every ledger write (signups, STOP, imports), subscriptions or not. A statement-level trigger with its transition
table writes the same deliveries in the same transaction, whoever appends, and costs one look at the small
subscriptions table when no subscription asks for ``consent.changed``. The payload is unchanged.

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-23 00:40:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        """
        CREATE FUNCTION consent_events_queue_webhooks() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NOT EXISTS (SELECT 1 FROM webhook_subscriptions WHERE 'consent.changed' = ANY(events)) THEN
                RETURN NULL;  -- the common case costs one look at a small table
            END IF;
            INSERT INTO webhook_deliveries (id, workspace_id, subscription_id, event_id, event_type, payload)
            SELECT gen_random_uuid(), e.workspace_id, s.id, e.id, 'consent.changed',
                   jsonb_build_object(
                       'id', e.id, 'type', 'consent.changed', 'created_at', e.recorded_at,
                       'data', jsonb_build_object(
                           'seq', e.seq, 'contact_id', e.contact_id, 'external_id', c.external_id,
                           'contact_point_id', e.contact_point_id, 'channel', e.channel, 'purpose', p.key,
                           'trigger', e.trigger, 'from_state', e.from_state, 'to_state', e.to_state,
                           'legal_basis', e.legal_basis, 'occurred_at', e.occurred_at))
              FROM added e
              JOIN webhook_subscriptions s ON s.workspace_id = e.workspace_id AND 'consent.changed' = ANY(s.events)
              LEFT JOIN contacts c ON c.id = e.contact_id
              LEFT JOIN purposes p ON p.id = e.purpose_id
            ON CONFLICT (subscription_id, event_id) DO NOTHING;
            RETURN NULL;
        END
        $$
        """
    )
    op.execute(
        """
        CREATE TRIGGER consent_events_webhooks
        AFTER INSERT ON consent_events REFERENCING NEW TABLE AS added
        FOR EACH STATEMENT EXECUTE FUNCTION consent_events_queue_webhooks()
        """
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER consent_events_webhooks ON consent_events")
    op.execute("DROP FUNCTION consent_events_queue_webhooks()")
