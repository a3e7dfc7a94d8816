"""All SQL of the email channel: its confirmation tokens.

Every function that reaches a workspace's tokens takes its id, except the two that cannot know it: a link's
token is looked up by its hash (the token in the URL is the capability and names no workspace), and the lapse
sweep serves every workspace at once.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.emails.models import ConfirmationToken


async def add_token(
    session: AsyncSession,
    workspace_id: uuid.UUID,
    *,
    point_id: uuid.UUID,
    purpose_id: uuid.UUID,
    notice_id: uuid.UUID | None,
    digest: bytes,
    locale: str,
    expires_at: datetime,
) -> ConfirmationToken:
    """Insert a confirmation token (only its hash)."""
    row = ConfirmationToken(
        workspace_id=workspace_id,
        contact_point_id=point_id,
        purpose_id=purpose_id,
        notice_id=notice_id,
        token_hash=digest,
        locale=locale,
        expires_at=expires_at,
    )
    session.add(row)
    await session.flush()
    return row


async def record_mail(
    session: AsyncSession,
    workspace_id: uuid.UUID,
    token_id: uuid.UUID,
    *,
    message_id: str | None,
    sent_at: datetime | None,
    response: str,
) -> None:
    """Keep the mail's proof with its token: Message-ID, send time (None: not accepted), the relay's answer."""
    await session.execute(
        update(ConfirmationToken)
        .where(ConfirmationToken.workspace_id == workspace_id, ConfirmationToken.id == token_id)
        .values(mail_message_id=message_id, mail_sent_at=sent_at, mail_response=response)
    )


#: A token that was neither used, replaced nor lapsed.
_OPEN = (
    ConfirmationToken.used_at.is_(None),
    ConfirmationToken.superseded_at.is_(None),
    ConfirmationToken.lapsed_at.is_(None),
)


async def supersede_open(
    session: AsyncSession, workspace_id: uuid.UUID, point_id: uuid.UUID, purpose_id: uuid.UUID, at: datetime
) -> None:
    """Mark the open tokens of one signup (address and purpose) replaced: only a newer mail's link confirms."""
    await session.execute(
        update(ConfirmationToken)
        .where(
            ConfirmationToken.workspace_id == workspace_id,
            ConfirmationToken.contact_point_id == point_id,
            ConfirmationToken.purpose_id == purpose_id,
            *_OPEN,
        )
        .values(superseded_at=at)
    )


async def find_by_hash(session: AsyncSession, digest: bytes, *, lock: bool = False) -> ConfirmationToken | None:
    """The token with this hash, in any workspace (the link names none); ``lock`` holds it until commit."""
    statement = select(ConfirmationToken).where(ConfirmationToken.token_hash == digest)
    return await session.scalar(statement.with_for_update() if lock else statement)


async def lock_expired(session: AsyncSession, now: datetime, limit: int) -> Sequence[ConfirmationToken]:
    """Up to ``limit`` open tokens of every workspace expired by ``now``, oldest first, locked (``SKIP LOCKED``)."""
    return (
        await session.scalars(
            select(ConfirmationToken)
            .where(ConfirmationToken.expires_at <= now, *_OPEN)
            .order_by(ConfirmationToken.expires_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    ).all()


def mark_used(token: ConfirmationToken, at: datetime) -> None:
    """The link confirmed its signup (written with the transaction)."""
    token.used_at = at


def mark_lapsed(token: ConfirmationToken, at: datetime) -> None:
    """The link expired and its signup lapsed (written with the transaction)."""
    token.lapsed_at = at


async def erase_tokens(session: AsyncSession, workspace_id: uuid.UUID, point_ids: Sequence[uuid.UUID]) -> int:
    """Delete the confirmation tokens of these addresses of the workspace (erasure); returns how many."""
    result = await session.execute(
        delete(ConfirmationToken).where(
            ConfirmationToken.workspace_id == workspace_id, ConfirmationToken.contact_point_id.in_(point_ids)
        )
    )
    return int(result.rowcount)  # type: ignore[attr-defined]  # CursorResult of a DELETE


async def attribution_of(session: AsyncSession, workspace_id: uuid.UUID, message_id: uuid.UUID) -> dict[str, str]:
    """What an opt-out by the message's link is attributed to: the message, its purpose and campaign label.

    Empty when the message is gone (erased) or is another workspace's.
    """
    row = (
        await session.execute(
            text("SELECT purpose_id, campaign FROM messages WHERE id = :id AND workspace_id = :ws"),
            {"id": message_id, "ws": workspace_id},
        )
    ).first()
    if row is None:
        return {}
    found = {"attributed_message_id": str(message_id), "attributed_purpose_id": str(row.purpose_id)}
    return found | ({"campaign": row.campaign} if row.campaign is not None else {})
