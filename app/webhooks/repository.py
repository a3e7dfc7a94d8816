"""All SQL of the webhooks package: subscriptions and their deliveries (the outbox).

Every function that touches a workspace's rows takes its id; the sender's claim is the one statement that reads
across workspaces, because senders serve every workspace from one queue (``SKIP LOCKED`` over the due index).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Row, delete, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from app.webhooks.models import WebhookDelivery, WebhookSubscription
from app.webhooks.status import WebhookStatus

#: How long deliveries are kept after they ended (their payloads name contacts by id and external id).
DELIVERED_KEPT = "7 days"
FAILED_KEPT = "30 days"

# The status literals below are WebhookStatus values; they stay literals so that the claim matches the partial
# index ix_webhook_deliveries_due, whose predicate names them. The locked rows are updated through
# ``id = ANY(ARRAY(...))``, the ids looked up in the primary key: written ``id IN (SELECT ...)`` the planner joined
# them to a sequential scan of the whole table (as the dispatcher's claim did, docs/benchmarks.md).
_CLAIM = text(
    """
    UPDATE webhook_deliveries d
       SET status = 'sending', attempts = d.attempts + 1, next_attempt_at = now() + make_interval(secs => :lease)
     WHERE d.id = ANY(ARRAY(SELECT id FROM webhook_deliveries
                             WHERE status IN ('queued', 'sending') AND next_attempt_at <= now()
                             ORDER BY next_attempt_at LIMIT :batch FOR UPDATE SKIP LOCKED))
    RETURNING d.id, d.subscription_id, d.event_id, d.event_type, d.payload, d.attempts
    """
)
_TARGETS = text("SELECT id, url, secret_sealed FROM webhook_subscriptions WHERE id = ANY(:ids)")
_DELIVERED = text(
    "UPDATE webhook_deliveries SET status = 'delivered', delivered_at = now(), last_status = :status, last_error = NULL"
    " WHERE id = :id AND status = 'sending' AND attempts = :attempts"
)
_RETRY = text(
    "UPDATE webhook_deliveries SET status = CASE WHEN :give_up THEN 'failed' ELSE 'queued' END,"
    " next_attempt_at = now() + make_interval(secs => :delay), last_status = :status, last_error = :error"
    " WHERE id = :id AND status = 'sending' AND attempts = :attempts"
)
_PRUNE = text(
    f"""
    DELETE FROM webhook_deliveries
     WHERE (status = 'delivered' AND created_at < now() - interval '{DELIVERED_KEPT}')
        OR (status = 'failed' AND created_at < now() - interval '{FAILED_KEPT}')
    """  # noqa: S608  # constants
)


async def add_subscription(session: AsyncSession, row: WebhookSubscription) -> WebhookSubscription:
    """Store a new subscription; answers it with its creation time."""
    session.add(row)
    await session.flush()
    await session.refresh(row, ["created_at"])
    return row


async def subscriptions_of(session: AsyncSession, workspace_id: uuid.UUID) -> Sequence[WebhookSubscription]:
    """The workspace's subscriptions, oldest first."""
    return (
        await session.scalars(
            select(WebhookSubscription)
            .where(WebhookSubscription.workspace_id == workspace_id)
            .order_by(WebhookSubscription.created_at)
        )
    ).all()


async def open_counts(session: AsyncSession, workspace_id: uuid.UUID) -> Mapping[tuple[uuid.UUID, str], int]:
    """How many deliveries of the workspace are in each status but delivered, per subscription."""
    rows = await session.execute(
        select(WebhookDelivery.subscription_id, WebhookDelivery.status, func.count())
        .where(WebhookDelivery.workspace_id == workspace_id, WebhookDelivery.status != WebhookStatus.DELIVERED)
        .group_by(WebhookDelivery.subscription_id, WebhookDelivery.status)
    )
    return {(subscription_id, status): count for subscription_id, status, count in rows.all()}


async def delete_subscription(session: AsyncSession, workspace_id: uuid.UUID, subscription_id: uuid.UUID) -> bool:
    """Remove the workspace's subscription (its deliveries go with it); ``False`` when it has none of this id."""
    result = await session.execute(
        delete(WebhookSubscription).where(
            WebhookSubscription.workspace_id == workspace_id, WebhookSubscription.id == subscription_id
        )
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]  # CursorResult of a DELETE


@dataclass(frozen=True, slots=True)
class ClaimedDelivery:
    """A delivery a sender holds under a lease; ``attempts`` counts this one."""

    id: uuid.UUID
    subscription_id: uuid.UUID
    event_id: uuid.UUID
    event_type: str
    payload: dict[str, Any]
    attempts: int


async def claim_due(session: AsyncSession, *, lease_seconds: float, batch: int) -> list[ClaimedDelivery]:
    """Claim up to ``batch`` due deliveries of any workspace for ``lease_seconds`` (counting the attempt)."""
    rows = await session.execute(_CLAIM, {"lease": lease_seconds, "batch": batch})
    return [ClaimedDelivery(**mapping) for mapping in rows.mappings()]


async def targets(session: AsyncSession, subscription_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Row[Any]]:
    """Url and sealed secret of each subscription still there, by id (of claimed deliveries only)."""
    if not subscription_ids:
        return {}
    return {row.id: row for row in await session.execute(_TARGETS, {"ids": list(subscription_ids)})}


async def mark_delivered(session: AsyncSession, delivery_id: uuid.UUID, attempts: int, status: int | None) -> None:
    """Record the delivery as delivered, unless another sender's later claim owns it now."""
    await session.execute(_DELIVERED, {"id": delivery_id, "attempts": attempts, "status": status})


async def schedule_retry(
    session: AsyncSession,
    delivery_id: uuid.UUID,
    attempts: int,
    *,
    status: int | None,
    error: str | None,
    delay: float,
    give_up: bool,
) -> None:
    """Record a failed attempt: queued again after ``delay`` seconds, or failed for good."""
    await session.execute(
        _RETRY,
        {"id": delivery_id, "attempts": attempts, "status": status, "error": error, "delay": delay, "give_up": give_up},
    )


async def prune_ended(session: AsyncSession) -> int:
    """Forget deliveries that ended: delivered ones after a week, failed ones after a month (to look into)."""
    result = await session.execute(_PRUNE)
    return int(result.rowcount)  # type: ignore[attr-defined]  # CursorResult of a DELETE


async def erase_payloads_naming(
    session: AsyncSession, workspace_id: uuid.UUID, contact_id: uuid.UUID, *, keep_events: Sequence[uuid.UUID]
) -> int:
    """Delete the workspace's deliveries whose payload names the contact, but those of the events in ``keep_events``."""
    result = await session.execute(
        text(
            "DELETE FROM webhook_deliveries WHERE workspace_id = :workspace_id"
            " AND payload -> 'data' ->> 'contact_id' = :contact_text AND NOT (event_id = ANY(:keep))"
        ),
        {"workspace_id": workspace_id, "contact_text": str(contact_id), "keep": list(keep_events)},
    )
    return int(result.rowcount)  # type: ignore[attr-defined]  # CursorResult of a DELETE
