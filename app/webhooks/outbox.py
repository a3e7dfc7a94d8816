"""The webhook outbox: which events there are, and forgetting deliveries that ended.

Deliveries are queued by triggers in the transaction of the change itself, whoever writes it: ``consent.changed``
on ``consent_events`` (migration 0014), ``message.status`` on ``message_events`` (0013). A change that commits
has its deliveries queued; one that rolls back has none.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

CONSENT_CHANGED = "consent.changed"
MESSAGE_STATUS = "message.status"
#: The event types a subscription may ask for.
EVENT_TYPES = (CONSENT_CHANGED, MESSAGE_STATUS)

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
