"""The purchases' part of a data-subject request: the sales made with the person's addresses."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.lib.privacy import PrivacyHook, Subject
from app.purchases import repository
from app.purchases.schemas import ExportedPurchase


async def _export(session: AsyncSession, subject: Subject) -> Mapping[str, Any]:
    found = await repository.of_points(session, subject.workspace_id, subject.point_ids)
    return {
        "purchases": [
            ExportedPurchase(
                id=p.id,
                contact_point_id=p.contact_point_id,
                reference=p.reference,
                purchased_at=p.purchased_at,
                category=p.category,
                objection_notice_version=p.objection_notice_version,
                event_id=p.event_id,
                created_at=p.created_at,
            )
            for p in found
        ]
    }


async def _erase(session: AsyncSession, subject: Subject) -> Mapping[str, int]:
    return {"purchases": await repository.erase_of_points(session, subject.workspace_id, subject.point_ids)}


HOOK = PrivacyHook(
    package="purchases",
    tables={"purchases": "deleted (order references, dates and categories of the person's addresses)"},
    erase=_erase,
    export=_export,
)
