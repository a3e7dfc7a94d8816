"""All SQL of the privacy package: erasure records."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

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
