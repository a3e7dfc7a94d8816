"""The webhooks' part of an erasure: queued and past deliveries whose payload names the person."""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy.ext.asyncio import AsyncSession

from app.lib.privacy import PrivacyHook, Subject
from app.webhooks import repository


async def _erase(session: AsyncSession, subject: Subject) -> Mapping[str, int]:
    # the erasure's own events still go out, so the systems that hold the person too learn of it
    deleted = 0
    for contact_id in subject.contact_ids:  # a merged duplicate's deliveries name its own id
        deleted += await repository.erase_payloads_naming(
            session, subject.workspace_id, contact_id, keep_events=subject.keep_event_ids
        )
    return {"webhook_deliveries": deleted}


HOOK = PrivacyHook(
    package="webhooks",
    tables={"webhook_deliveries": "deleted where the payload names the contact, but the erasure's own events"},
    erase=_erase,
)
