"""All SQL of the Twilio webhooks: the inbound messages they delivered (idempotency), per workspace."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
from sqlalchemy import select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from app.ledger.models import ContactPoint
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


# --- an inbound STOP on the driver connection (a STOP flood's path, where a sealer runs) ---


@dataclass(frozen=True, slots=True)
class ClaimedStop:
    """What :func:`claim_stop` found besides the claim: the number, its contact's locale, the message it answers."""

    claim_id: uuid.UUID
    point: ContactPoint | None
    """The number as a transient object (not in the session: its id, contact, channel, value and reachability)."""
    locale: str | None
    attributed: tuple[uuid.UUID, uuid.UUID | None, str | None] | None
    """(message id, purpose id, campaign) of the last message sent to the number in the attribution window."""


#: :func:`claim_inbound`, the number by its value (``ledger.find_contact_point``), its contact's locale and the last
#: message sent to it on its channel in ``($8, $9]`` (``messages.repository.last_sent_to``), in one round trip: a
#: STOP's reads. No row when the message was claimed before (the claim waits for a concurrent duplicate's end).
#: The reads of the ledger's and the messages' tables are here because one statement is the point (STYLE.md rule
#: 7; ``sent_at`` below reads the deliveries so too); they must stay the same as the functions they fold.
_CLAIM_STOP_SQL = """
WITH claim AS (
    INSERT INTO inbound_messages (id, workspace_id, provider, message_sid, channel, intent, reply, received_at)
    VALUES ($1, $2, $3, $4, 'unknown', 'pending', '', $5)
    ON CONFLICT (workspace_id, provider, message_sid) DO NOTHING
    RETURNING id
)
SELECT claim.id, cp.id, cp.contact_id, cp.reachability, cp.reachability_changed_at, c.locale,
       a.message_id, a.purpose_id, a.campaign
  FROM claim
  LEFT JOIN contact_points cp ON cp.workspace_id = $2 AND cp.channel = $6 AND cp.value = $7
  LEFT JOIN contacts c ON c.id = cp.contact_id
  LEFT JOIN LATERAL (
        SELECT e.message_id, m.purpose_id, m.campaign
          FROM deliveries d
          JOIN message_events e ON e.message_id = d.message_id AND e.delivery_id = d.id AND e.status = 'sent'
          JOIN messages m ON m.id = d.message_id AND m.workspace_id = $2
         WHERE d.workspace_id = $2 AND d.contact_point_id = cp.id AND d.channel = $6
           AND e.at > $8 AND e.at <= $9
         ORDER BY e.at DESC LIMIT 1) a ON true
"""


async def claim_stop(  # noqa: PLR0917  # the statement's parameters
    session: AsyncSession,
    driver: Any | None,
    workspace_id: uuid.UUID,
    provider: str,
    message_sid: str,
    received_at: datetime,
    channel: str,
    number: str,
    since: datetime,
) -> ClaimedStop | None:
    """Claim ``message_sid`` and read what a STOP needs, in one statement (``None``: claimed before).

    On ``driver``, the asyncpg connection of the session's transaction; ``None`` when the session has not begun its
    transaction on the connection yet: then through the session's connection (it sends BEGIN first).
    """
    args = (uuid7(), workspace_id, provider, message_sid, received_at, channel, number, since, received_at)
    if driver is not None:
        row = await _on_driver(driver.fetchrow, _CLAIM_STOP_SQL, *args)
    else:
        row = (await (await session.connection()).exec_driver_sql(_CLAIM_STOP_SQL, args)).first()
    if row is None:
        return None
    point = None
    if row[1] is not None:
        point = ContactPoint(
            id=row[1], workspace_id=workspace_id, contact_id=row[2], channel=channel, value=number, reachability=row[3]
        )
        point.reachability_changed_at = row[4]
    return ClaimedStop(row[0], point, row[5], (row[6], row[7], row[8]) if row[6] is not None else None)


_FINISH_SQL = """
UPDATE inbound_messages SET channel = $3, contact_point_id = $4, intent = $5, reply = $6
 WHERE workspace_id = $1 AND id = $2
"""


async def finish_inbound_on_driver(
    driver: Any,
    workspace_id: uuid.UUID,
    claim_id: uuid.UUID,
    *,
    channel: str,
    point_id: uuid.UUID | None,
    intent: str,
    reply: str,
) -> None:
    """:func:`finish_inbound` on the driver connection of the caller's transaction."""
    await _on_driver(driver.execute, _FINISH_SQL, workspace_id, claim_id, channel, point_id, intent, reply)


async def _on_driver(call: Callable[..., Awaitable[Any]], statement: str, *args: Any) -> Any:
    """A statement on the driver; its database error raised as SQLAlchemy's (``again_if_raced`` reads its SQLSTATE)."""
    try:
        return await call(statement, *args)
    except asyncpg.PostgresError as error:
        raise DBAPIError(statement, None, error) from error
