"""message.status webhooks: every step of a message's history is queued for the subscriptions that want it.

A statement-level trigger on message_events (with its transition table) writes the deliveries in the same
transaction as the history rows, whoever writes them (the dispatcher, provider callbacks, the API): one INSERT
per statement, however many rows it added, and nothing when no subscription asks for ``message.status``.

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-22 23:50:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        """
        CREATE FUNCTION message_events_queue_webhooks() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NOT EXISTS (SELECT 1 FROM webhook_subscriptions WHERE 'message.status' = ANY(events)) THEN
                RETURN NULL;  -- the common case costs one look at a small table
            END IF;
            INSERT INTO webhook_deliveries (id, workspace_id, subscription_id, event_id, event_type, payload)
            SELECT gen_random_uuid(), m.workspace_id, s.id, a.id, 'message.status',
                   jsonb_build_object(
                       'id', a.id, 'type', 'message.status', 'created_at', a.at,
                       'data', jsonb_build_object(
                           'message_id', a.message_id, 'delivery_id', a.delivery_id, 'contact_id', m.contact_id,
                           'external_id', c.external_id, 'purpose', p.key, 'channel', a.channel,
                           'status', a.status, 'provider_message_id', a.provider_message_id, 'error', a.error,
                           'at', a.at))
              FROM added a
              JOIN messages m ON m.id = a.message_id
              JOIN webhook_subscriptions s ON s.workspace_id = m.workspace_id AND 'message.status' = ANY(s.events)
              LEFT JOIN contacts c ON c.id = m.contact_id
              LEFT JOIN purposes p ON p.id = m.purpose_id
            ON CONFLICT (subscription_id, event_id) DO NOTHING;
            RETURN NULL;
        END
        $$
        """
    )
    op.execute(
        """
        CREATE TRIGGER message_events_webhooks
        AFTER INSERT ON message_events REFERENCING NEW TABLE AS added
        FOR EACH STATEMENT EXECUTE FUNCTION message_events_queue_webhooks()
        """
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER message_events_webhooks ON message_events")
    op.execute("DROP FUNCTION message_events_queue_webhooks()")
