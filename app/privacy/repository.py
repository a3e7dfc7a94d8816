"""All SQL of the privacy package: erasure records, and what an erasure must find before the rows go."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.messages.models import Delivery, Message
from app.privacy.models import Erasure


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
