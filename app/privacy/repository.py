"""All SQL of the privacy package: erasure records, and what an erasure must find before the rows go."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.messages.models import Delivery, Message
from app.privacy.models import Erasure, ErasureRequest


async def add_erasure(session: AsyncSession, erasure: Erasure) -> None:
    """Keep the record of an erasure."""
    session.add(erasure)
    await session.flush()


async def find_erasure(session: AsyncSession, workspace_id: uuid.UUID, contact_id: uuid.UUID) -> Erasure | None:
    """The record of the erasure of this contact in the workspace, if there was one."""
    return await session.scalar(
        select(Erasure).where(Erasure.workspace_id == workspace_id, Erasure.contact_id == contact_id)
    )


async def delivery_ids_of_contact(
    session: AsyncSession, workspace_id: uuid.UUID, contact_id: uuid.UUID
) -> list[uuid.UUID]:
    """The ids of every delivery of the contact's messages (the names of their outbox files and batch lines)."""
    return list(
        (
            await session.scalars(
                select(Delivery.id)
                .join(Message, Message.id == Delivery.message_id)
                .where(Message.workspace_id == workspace_id, Message.contact_id == contact_id)
            )
        ).all()
    )


async def add_request(session: AsyncSession, request: ErasureRequest) -> None:
    """Keep an erasure request (also a changed one: its decision)."""
    session.add(request)
    await session.flush()


async def pending_request(
    session: AsyncSession, workspace_id: uuid.UUID, contact_id: uuid.UUID
) -> ErasureRequest | None:
    """The contact's open erasure request, if one is pending."""
    return await session.scalar(
        select(ErasureRequest).where(
            ErasureRequest.workspace_id == workspace_id,
            ErasureRequest.contact_id == contact_id,
            ErasureRequest.status == "pending",
        )
    )


async def lock_request(session: AsyncSession, workspace_id: uuid.UUID, request_id: uuid.UUID) -> ErasureRequest | None:
    """The workspace's erasure request, locked for the rest of the transaction (a decision is made once)."""
    return await session.scalar(
        select(ErasureRequest)
        .where(ErasureRequest.workspace_id == workspace_id, ErasureRequest.id == request_id)
        .with_for_update()
    )


async def list_requests(
    session: AsyncSession, workspace_id: uuid.UUID, status: str | None, limit: int
) -> Sequence[ErasureRequest]:
    """The workspace's erasure requests, the most urgent (earliest due) first."""
    query = select(ErasureRequest).where(ErasureRequest.workspace_id == workspace_id)
    if status is not None:
        query = query.where(ErasureRequest.status == status)
    return (await session.scalars(query.order_by(ErasureRequest.due_at, ErasureRequest.id).limit(limit))).all()


async def close_requests_of(
    session: AsyncSession, workspace_id: uuid.UUID, contact_id: uuid.UUID, now: datetime
) -> int:
    """An erasure's part: the contact's requests lose their evidence, and a pending one is done with it."""
    scope = (ErasureRequest.workspace_id == workspace_id, ErasureRequest.contact_id == contact_id)
    await session.execute(
        update(ErasureRequest).where(*scope, ErasureRequest.status == "pending").values(status="done", decided_at=now)
    )
    result = await session.execute(
        update(ErasureRequest).where(*scope, ErasureRequest.evidence.is_not(None)).values(evidence=None)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]  # CursorResult of an UPDATE


async def requests_of(
    session: AsyncSession, workspace_id: uuid.UUID, contact_id: uuid.UUID
) -> Sequence[ErasureRequest]:
    """The contact's erasure requests, oldest first."""
    return (
        await session.scalars(
            select(ErasureRequest)
            .where(ErasureRequest.workspace_id == workspace_id, ErasureRequest.contact_id == contact_id)
            .order_by(ErasureRequest.requested_at, ErasureRequest.id)
        )
    ).all()
