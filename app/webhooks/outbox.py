"""Queueing change events for the workspace's webhook subscriptions, in the transaction of the change itself.

A change that commits has its deliveries queued; one that rolls back has none (transactional outbox). With no
subscription for the event type, the statement finds nothing and writes nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

CONSENT_CHANGED = "consent.changed"
#: Queued by a trigger on ``message_events`` (migration 0013), whoever writes a message's history.
MESSAGE_STATUS = "message.status"
#: The event types a subscription may ask for.
EVENT_TYPES = (CONSENT_CHANGED, MESSAGE_STATUS)

_QUEUE_CONSENT_CHANGES = text(
    """
    INSERT INTO webhook_deliveries (id, workspace_id, subscription_id, event_id, event_type, payload)
    SELECT gen_random_uuid(), e.workspace_id, s.id, e.id, 'consent.changed',
           jsonb_build_object(
               'id', e.id, 'type', 'consent.changed', 'created_at', e.recorded_at,
               'data', jsonb_build_object(
                   'seq', e.seq, 'contact_id', e.contact_id, 'external_id', c.external_id,
                   'contact_point_id', e.contact_point_id, 'channel', e.channel, 'purpose', p.key,
                   'trigger', e.trigger, 'from_state', e.from_state, 'to_state', e.to_state,
                   'legal_basis', e.legal_basis, 'occurred_at', e.occurred_at))
      FROM webhook_subscriptions s
      JOIN consent_events e ON e.workspace_id = s.workspace_id AND e.id = ANY(:event_ids)
      LEFT JOIN contacts c ON c.id = e.contact_id
      LEFT JOIN purposes p ON p.id = e.purpose_id
     WHERE s.workspace_id = :workspace_id AND 'consent.changed' = ANY(s.events)
    ON CONFLICT (subscription_id, event_id) DO NOTHING
    """
)


async def queue_consent_changes(session: AsyncSession, workspace_id: uuid.UUID, event_ids: Sequence[uuid.UUID]) -> None:
    """A ``consent.changed`` delivery per ledger event and subscription (no address: ids and external id)."""
    if event_ids:
        await session.execute(_QUEUE_CONSENT_CHANGES, {"workspace_id": workspace_id, "event_ids": list(event_ids)})


#: How long deliveries are kept after they ended (their payloads name contacts by id and external id).
DELIVERED_KEPT = "7 days"
FAILED_KEPT = "30 days"

_PRUNE = text(
    f"""
    DELETE FROM webhook_deliveries
     WHERE (status = 'delivered' AND created_at < now() - interval '{DELIVERED_KEPT}')
        OR (status = 'failed' AND created_at < now() - interval '{FAILED_KEPT}')
    """  # noqa: S608  # constants
)


async def prune_deliveries(session: AsyncSession) -> int:
    """Forget deliveries that ended: delivered ones after a week, failed ones after a month (to look into)."""
    result = await session.execute(_PRUNE)
    return int(result.rowcount)  # type: ignore[attr-defined]  # CursorResult of a DELETE
