"""All SQL of purchases."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.purchases.models import Purchase


async def by_reference(session: AsyncSession, workspace_id: uuid.UUID, reference: str) -> Purchase | None:
    """The workspace's purchase with this reference."""
    return await session.scalar(
        select(Purchase).where(Purchase.workspace_id == workspace_id, Purchase.reference == reference)
    )


async def insert_purchase(
    session: AsyncSession,
    workspace_id: uuid.UUID,
    *,
    contact_point_id: uuid.UUID,
    reference: str,
    purchased_at: datetime,
    category: str,
    objection_notice_version: str | None,
    event_id: uuid.UUID,
) -> Purchase | None:
    """Insert; ``None`` when the workspace already has a purchase with this reference."""
    return (
        await session.execute(
            insert(Purchase)
            .values(
                workspace_id=workspace_id,
                contact_point_id=contact_point_id,
                reference=reference,
                purchased_at=purchased_at,
                category=category,
                objection_notice_version=objection_notice_version,
                event_id=event_id,
            )
            .on_conflict_do_nothing(index_elements=["workspace_id", "reference"])
            .returning(Purchase)
        )
    ).scalar_one_or_none()


async def of_points(
    session: AsyncSession, workspace_id: uuid.UUID, point_ids: Sequence[uuid.UUID]
) -> Sequence[Purchase]:
    """The purchases made with these addresses, oldest first."""
    if not point_ids:
        return []
    return (
        await session.scalars(
            select(Purchase)
            .where(Purchase.workspace_id == workspace_id, Purchase.contact_point_id.in_(list(point_ids)))
            .order_by(Purchase.purchased_at, Purchase.id)
        )
    ).all()


async def erase_of_points(session: AsyncSession, workspace_id: uuid.UUID, point_ids: Sequence[uuid.UUID]) -> int:
    """Delete the purchases made with these addresses; answers how many."""
    if not point_ids:
        return 0
    result = await session.execute(
        delete(Purchase).where(Purchase.workspace_id == workspace_id, Purchase.contact_point_id.in_(list(point_ids)))
    )
    return int(result.rowcount)  # type: ignore[attr-defined]
