"""Where a webhook delivery stands."""

from __future__ import annotations

import enum


class WebhookStatus(enum.StrEnum):
    """A delivery's status: queued → sending → delivered, or back to queued (retry) until failed."""

    QUEUED = "queued"
    """Waiting for its (next) attempt; also the status the outbox triggers insert."""
    SENDING = "sending"
    """Claimed by a sender under a lease; claimed again once the lease runs out."""
    DELIVERED = "delivered"
    FAILED = "failed"
    """Given up after the last attempt."""


#: Statuses a sender still has work for.
PENDING = (WebhookStatus.QUEUED, WebhookStatus.SENDING)
