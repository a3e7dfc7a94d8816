"""The SMS/WhatsApp part of a data-subject request: inbound messages lose the address they came from."""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from app.lib.privacy import PrivacyHook, Subject
from app.twilio.models import InboundMessage


async def _erase(session: AsyncSession, subject: Subject) -> Mapping[str, int]:
    result = await session.execute(
        update(InboundMessage)
        .where(
            InboundMessage.workspace_id == subject.workspace_id,
            InboundMessage.contact_point_id.in_(subject.point_ids),
        )
        .values(contact_point_id=None)
    )
    return {"inbound_messages_unlinked": result.rowcount}  # type: ignore[attr-defined]


HOOK = PrivacyHook(
    package="twilio",
    tables={
        "inbound_messages": "kept by provider message id, so a retried webhook is answered and not applied again; "
        "the link to the address is removed (the keyword and our reply are not personal)"
    },
    erase=_erase,
)
