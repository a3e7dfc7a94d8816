"""The mail part of a data-subject request: pending confirmation links of the person's addresses."""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy.ext.asyncio import AsyncSession

from app.emails import repository
from app.lib.privacy import PrivacyHook, Subject


async def _erase(session: AsyncSession, subject: Subject) -> Mapping[str, int]:
    return {"confirmation_tokens": await repository.erase_tokens(session, subject.workspace_id, subject.point_ids)}


HOOK = PrivacyHook(
    package="emails",
    tables={"confirmation_tokens": "deleted (hashed link tokens and the sign-up's request metadata)"},
    erase=_erase,
)
