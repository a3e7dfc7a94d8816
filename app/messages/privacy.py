"""The messages' part of a data-subject request: every message to the person, with its deliveries and history."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.lib.privacy import PrivacyHook, Subject
from app.messages import repository
from app.messages.schemas import ExportedMessage
from app.messages.service import delivery_out, status_entry


async def _export(session: AsyncSession, subject: Subject) -> Mapping[str, Any]:
    found = await repository.messages_of_contact(session, subject.workspace_id, subject.contact_id)
    return {
        "messages": [
            ExportedMessage(
                id=m.id,
                purpose=subject.purpose_keys.get(m.purpose_id),
                status=m.status,
                created_at=m.created_at,
                send_at=m.send_at,
                route=list(m.route),
                content=dict(m.content),
                decision=dict(m.decision),
                deliveries=[delivery_out(d) for d in found.deliveries if d.message_id == m.id],
                history=[status_entry(e) for e in found.events if e.message_id == m.id],
            )
            for m in found.messages
        ]
    }


async def _erase(session: AsyncSession, subject: Subject) -> Mapping[str, int]:
    return {"messages": await repository.delete_messages_of_contact(session, subject.workspace_id, subject.contact_id)}


HOOK = PrivacyHook(
    package="messages",
    tables={
        "messages": "deleted (content and routing decision)",
        "deliveries": "deleted with their message",
        "message_events": "deleted with their message",
        "message_tokens": "deleted with their message (token hashes and the tracked links' URLs)",
    },
    erase=_erase,
    export=_export,
)
