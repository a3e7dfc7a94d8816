"""The mail part of a data-subject request: pending confirmation links of the person's addresses."""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession

from app.emails.models import ConfirmationToken
from app.lib.privacy import PrivacyHook, Subject


async def _erase(session: AsyncSession, subject: Subject) -> Mapping[str, int]:
    result = await session.execute(
        delete(ConfirmationToken).where(
            ConfirmationToken.workspace_id == subject.workspace_id,
            ConfirmationToken.contact_point_id.in_(subject.point_ids),
        )
    )
    return {"confirmation_tokens": result.rowcount}  # type: ignore[attr-defined]


HOOK = PrivacyHook(
    package="emails",
    tables={"confirmation_tokens": "deleted (hashed link tokens and the sign-up's request metadata)"},
    erase=_erase,
)
