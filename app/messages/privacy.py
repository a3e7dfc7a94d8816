"""The messages' part of a data-subject request: every message to the person, with its deliveries and history."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.lib.privacy import PrivacyHook, Subject
from app.messages.models import Delivery, Message, MessageEvent
from app.messages.schemas import ExportedMessage
from app.messages.service import delivery_out, status_entry


async def _export(session: AsyncSession, subject: Subject) -> Mapping[str, Any]:
    messages = (
        await session.scalars(
            select(Message)
            .where(Message.workspace_id == subject.workspace_id, Message.contact_id == subject.contact_id)
            .order_by(Message.id)
        )
    ).all()
    ids = [m.id for m in messages]
    deliveries = (
        (await session.scalars(select(Delivery).where(Delivery.message_id.in_(ids)).order_by(Delivery.id))).all()
        if ids
        else []
    )
    history = (
        (
            await session.scalars(
                select(MessageEvent).where(MessageEvent.message_id.in_(ids)).order_by(MessageEvent.at, MessageEvent.id)
            )
        ).all()
        if ids
        else []
    )
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
                deliveries=[delivery_out(d) for d in deliveries if d.message_id == m.id],
                history=[status_entry(e) for e in history if e.message_id == m.id],
            )
            for m in messages
        ]
    }


async def _erase(session: AsyncSession, subject: Subject) -> Mapping[str, int]:
    result = await session.execute(
        delete(Message).where(Message.workspace_id == subject.workspace_id, Message.contact_id == subject.contact_id)
    )
    return {"messages": result.rowcount}  # type: ignore[attr-defined]


HOOK = PrivacyHook(
    package="messages",
    tables={
        "messages": "deleted (content and routing decision)",
        "deliveries": "deleted with their message",
        "message_events": "deleted with their message",
    },
    erase=_erase,
    export=_export,
)
