"""The webhook outbox: which events there are, and forgetting deliveries that ended.

Deliveries are queued by triggers in the transaction of the change itself, whoever writes it: ``consent.changed``
on ``consent_events`` (migration 0014), ``message.status`` on ``message_events`` (0013). A change that commits
has its deliveries queued; one that rolls back has none.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from app.webhooks import repository

CONSENT_CHANGED = "consent.changed"
MESSAGE_STATUS = "message.status"
#: Queued by the merge itself (:mod:`app.ledger.merge`), in its transaction.
CONTACT_MERGED = "contact.merged"
#: The event types a subscription may ask for.
EVENT_TYPES = (CONSENT_CHANGED, MESSAGE_STATUS, CONTACT_MERGED)


async def prune_deliveries(session: AsyncSession) -> int:
    """Forget deliveries that ended: delivered ones after a week, failed ones after a month (to look into)."""
    return await repository.prune_ended(session)
