"""The SMS/WhatsApp part of a data-subject request: inbound messages lose the address they came from."""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy.ext.asyncio import AsyncSession

from app.lib.privacy import PrivacyHook, Subject
from app.twilio import repository


async def _erase(session: AsyncSession, subject: Subject) -> Mapping[str, int]:
    return {
        "inbound_messages_unlinked": await repository.unlink_points(session, subject.workspace_id, subject.point_ids)
    }


HOOK = PrivacyHook(
    package="twilio",
    tables={
        "inbound_messages": "kept by provider message id, so a retried webhook is answered and not applied again; "
        "the link to the address is removed (the keyword and our reply are not personal)"
    },
    erase=_erase,
)
