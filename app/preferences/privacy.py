"""The preference centre's part of a data-subject request: the person's preference links."""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy.ext.asyncio import AsyncSession

from app.lib.privacy import PrivacyHook, Subject
from app.preferences import repository


async def _erase(session: AsyncSession, subject: Subject) -> Mapping[str, int]:
    count = await repository.erase_links(session, subject.workspace_id, subject.contact_id, subject.point_ids)
    return {"preference_links": count}


HOOK = PrivacyHook(
    package="preferences",
    tables={"preference_links": "deleted (hashed link tokens: an erased person's link must open nothing)"},
    erase=_erase,
)
