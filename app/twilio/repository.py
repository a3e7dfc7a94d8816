"""All SQL of the Twilio webhooks: the inbound messages they delivered (idempotency), per workspace."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.lib.ids import uuid7
from app.twilio.models import InboundMessage


async def claim_inbound(
    session: AsyncSession, workspace_id: uuid.UUID, provider: str, message_sid: str, received_at: datetime
) -> uuid.UUID | None:
    """Claim a message id for this delivery (the row's id); ``None`` when it was claimed before.

    A concurrent duplicate waits on the claim until the first delivery's transaction ends.
    """
    return await session.scalar(
        insert(InboundMessage)
        .values(
            id=uuid7(),
            workspace_id=workspace_id,
            provider=provider,
            message_sid=message_sid,
            channel="unknown",
            intent="pending",
            reply="",
            received_at=received_at,
        )
        .on_conflict_do_nothing(index_elements=["workspace_id", "provider", "message_sid"])
        .returning(InboundMessage.id)
    )


async def stored_reply(session: AsyncSession, workspace_id: uuid.UUID, provider: str, message_sid: str) -> str | None:
    """The reply the first delivery of a message got."""
    return await session.scalar(
        select(InboundMessage.reply).where(
            InboundMessage.workspace_id == workspace_id,
            InboundMessage.provider == provider,
            InboundMessage.message_sid == message_sid,
        )
    )


async def finish_inbound(
    session: AsyncSession,
    workspace_id: uuid.UUID,
    claim_id: uuid.UUID,
    *,
    channel: str,
    point_id: uuid.UUID | None,
    intent: str,
    reply: str,
) -> None:
    """Record what a claimed message was and the reply it got."""
    await session.execute(
        update(InboundMessage)
        .where(InboundMessage.workspace_id == workspace_id, InboundMessage.id == claim_id)
        .values(channel=channel, contact_point_id=point_id, intent=intent, reply=reply)
    )


async def unlink_points(session: AsyncSession, workspace_id: uuid.UUID, point_ids: Sequence[uuid.UUID]) -> int:
    """Remove the link from the workspace's inbound messages to these addresses (erasure); returns how many."""
    result = await session.execute(
        update(InboundMessage)
        .where(InboundMessage.workspace_id == workspace_id, InboundMessage.contact_point_id.in_(point_ids))
        .values(contact_point_id=None)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]  # CursorResult of an UPDATE


async def sent_at(session: AsyncSession, workspace_id: uuid.UUID, provider_message_id: str) -> datetime | None:
    """When the workspace's delivery Twilio knows as ``provider_message_id`` went out (``None``: not ours, or unsent).

    The time of its ``sent`` step (the provider accepted it), else of the first attempt in flight.
    """
    found: datetime | None = await session.scalar(
        text(
            """
            SELECT coalesce((SELECT min(e.at) FROM message_events e
                              WHERE e.delivery_id = d.id AND e.status = 'sent'), d.in_flight_at)
              FROM deliveries d
             WHERE d.workspace_id = :ws AND d.provider_message_id = :sid
             LIMIT 1
            """
        ),
        {"ws": workspace_id, "sid": provider_message_id},
    )
    return found
