"""The lifecycle's part of a data-subject request: the person's re-permission links."""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy.ext.asyncio import AsyncSession

from app.lib.privacy import PrivacyHook, Subject
from app.lifecycle import repository


async def _erase(session: AsyncSession, subject: Subject) -> Mapping[str, int]:
    return {"repermissions": await repository.erase_links(session, subject.workspace_id, subject.point_ids)}


HOOK = PrivacyHook(
    package="lifecycle",
    tables={"repermissions": 'deleted (hashed "keep me subscribed" link tokens; the renewals stay in the ledger)'},
    erase=_erase,
)
