"""All SQL about purposes."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.purposes.models import Purpose


async def insert_purpose(
    session: AsyncSession, workspace_id: uuid.UUID, key: str, name: str, kind: str
) -> Purpose | None:
    """Insert; ``None`` when the workspace already has a purpose with this key."""
    return (
        await session.execute(
            insert(Purpose)
            .values(workspace_id=workspace_id, key=key, name=name, kind=kind)
            .on_conflict_do_nothing(index_elements=["workspace_id", "key"])
            .returning(Purpose)
        )
    ).scalar_one_or_none()


async def list_purposes(session: AsyncSession, workspace_id: uuid.UUID) -> Sequence[Purpose]:
    """The workspace's purposes by key."""
    return (
        await session.scalars(select(Purpose).where(Purpose.workspace_id == workspace_id).order_by(Purpose.key))
    ).all()


async def get_by_key(session: AsyncSession, workspace_id: uuid.UUID, key: str) -> Purpose | None:
    """A purpose of the workspace by key."""
    return await session.scalar(select(Purpose).where(Purpose.workspace_id == workspace_id, Purpose.key == key))
