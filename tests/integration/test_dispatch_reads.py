"""The dispatcher's one-statement read of a batch answers what its reads one table at a time answered.

``repository.batch_to_send`` replaced five ORM reads (deliveries, messages, contact points, purposes, contacts, each
limited to the workspaces of the claimed deliveries). Here both read the same varied batch — two workspaces, a
delivery of a third workspace not in the batch, content without the delivery's channel or with a JSON null there,
an address with push details, a contact without a locale, two deliveries of one message, a delivery in flight — and
must agree on every value the send uses. (A message, address, purpose or contact of another workspace than its
delivery's cannot be stored: the foreign keys include ``workspace_id``.)
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from app.ledger import repository as ledger
from app.lib.ids import uuid7
from app.messages import repository
from app.messages.repository import ToSend
from app.purposes import repository as purposes_repository

_NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


async def _workspace(session: AsyncSession, name: str) -> uuid.UUID:
    workspace = uuid7()
    await session.execute(
        text("INSERT INTO workspaces (id, name, settings) VALUES (:id, :name, '{}'::jsonb)"),
        {"id": workspace, "name": name},
    )
    return workspace


async def _purpose(session: AsyncSession, workspace: uuid.UUID, kind: str) -> uuid.UUID:
    purpose = uuid7()
    await session.execute(
        text("INSERT INTO purposes (id, workspace_id, key, name, kind) VALUES (:id, :w, :key, 'P', :kind)"),
        {"id": purpose, "w": workspace, "key": f"p{purpose.hex[-8:]}", "kind": kind},
    )
    return purpose


async def _contact(session: AsyncSession, workspace: uuid.UUID, locale: str | None) -> uuid.UUID:
    contact = uuid7()
    await session.execute(
        text("INSERT INTO contacts (id, workspace_id, locale) VALUES (:id, :w, :locale)"),
        {"id": contact, "w": workspace, "locale": locale},
    )
    return contact


async def _point(  # the row's own fields
    session: AsyncSession,
    workspace: uuid.UUID,
    contact: uuid.UUID,
    channel: str,
    value: str,
    details: dict[str, Any] | None = None,
) -> uuid.UUID:
    point = uuid7()
    await session.execute(
        text(
            "INSERT INTO contact_points (id, workspace_id, contact_id, channel, value, details)"
            " VALUES (:id, :w, :c, :channel, :value, CAST(:details AS jsonb))"
        ),
        {
            "id": point,
            "w": workspace,
            "c": contact,
            "channel": channel,
            "value": value,
            "details": json.dumps(details or {}),
        },
    )
    return point


async def _message(
    session: AsyncSession, workspace: uuid.UUID, contact: uuid.UUID, purpose: uuid.UUID, content: dict[str, Any]
) -> uuid.UUID:
    message = uuid7()
    await session.execute(
        text(
            "INSERT INTO messages (id, workspace_id, contact_id, purpose_id, strategy, route, content, decision,"
            " status) VALUES (:id, :w, :c, :p, 'first_eligible', :route, CAST(:content AS jsonb), '{}'::jsonb,"
            " 'queued')"
        ),
        {
            "id": message,
            "w": workspace,
            "c": contact,
            "p": purpose,
            "route": list(content),
            "content": json.dumps(content),
        },
    )
    return message


async def _delivery(  # the row's own fields
    session: AsyncSession,
    workspace: uuid.UUID,
    message: uuid.UUID,
    point: uuid.UUID,
    channel: str,
    *,
    in_flight: bool = False,
) -> uuid.UUID:
    delivery = uuid7()
    await session.execute(
        text(
            "INSERT INTO deliveries (id, workspace_id, message_id, channel, contact_point_id, status, attempts,"
            " next_attempt_at, updated_at, in_flight_at)"
            " VALUES (:id, :w, :m, :channel, :p, 'sending', 1, :now, :now, :flight)"
        ),
        {
            "id": delivery,
            "w": workspace,
            "m": message,
            "channel": channel,
            "p": point,
            "now": _NOW,
            "flight": _NOW if in_flight else None,
        },
    )
    return delivery


async def _as_before(
    session: AsyncSession, workspace_ids: list[uuid.UUID], delivery_ids: list[uuid.UUID]
) -> dict[uuid.UUID, ToSend]:
    """What the five reads one table at a time (the dispatcher until 2026-12-06) gave the send, as a ``ToSend``."""
    deliveries = await repository.deliveries_by_id(session, workspace_ids, delivery_ids)
    messages = await repository.messages_by_id(session, workspace_ids, list({d.message_id for d in deliveries}))
    points = await ledger.contact_points_by_id(session, workspace_ids, list({d.contact_point_id for d in deliveries}))
    purposes = await purposes_repository.purposes_by_ids(
        session, workspace_ids, list({m.purpose_id for m in messages.values()})
    )
    contacts = await ledger.contacts_by_id(session, workspace_ids, list({p.contact_id for p in points.values()}))
    found = {}
    for d in deliveries:
        message, point = messages.get(d.message_id), points.get(d.contact_point_id)
        purpose = purposes.get(message.purpose_id) if message else None
        contact = contacts.get(point.contact_id) if point else None
        found[d.id] = ToSend(
            id=d.id,
            workspace_id=d.workspace_id,
            message_id=d.message_id,
            contact_point_id=d.contact_point_id,
            channel=d.channel,
            in_flight_at=d.in_flight_at,
            has_message=message is not None,
            purpose_id=message.purpose_id if message else None,
            has_content=(d.channel in message.content) if message else None,
            content=message.content.get(d.channel) if message else None,
            has_point=point is not None,
            contact_id=point.contact_id if point else None,
            address=point.value if point else None,
            details=point.details if point else None,
            locale=contact.locale if contact else None,
            kind=purpose.kind if purpose else None,
        )
    return found


async def test_the_batch_read_answers_what_the_reads_per_table_did(session: AsyncSession) -> None:
    a, b, outside = await _workspace(session, "A"), await _workspace(session, "B"), await _workspace(session, "Out")
    a_marketing, b_transactional, outside_purpose = (
        await _purpose(session, a, "marketing"),
        await _purpose(session, b, "transactional"),
        await _purpose(session, outside, "marketing"),
    )
    german, nameless, outsider = (
        await _contact(session, a, "de-DE"),
        await _contact(session, b, None),
        await _contact(session, outside, "fr"),
    )
    sms = await _point(session, a, german, "sms", "+4915100000001")
    push = await _point(
        session, b, nameless, "web_push", "https://push.example/ep", {"keys": {"p256dh": "k", "auth": "a"}}
    )
    mail = await _point(session, a, german, "email", "a@example.org")
    text_content = {"sms": {"text": "Hallo"}}
    m_sms = await _message(session, a, german, a_marketing, text_content)
    m_push = await _message(session, b, nameless, b_transactional, {"web_push": {"title": "T", "body": "B"}})
    m_no_mail = await _message(session, a, german, a_marketing, {"sms": {"text": "only sms"}})
    m_null = await _message(session, a, german, a_marketing, {"sms": None})
    m_outside = await _message(session, outside, outsider, outside_purpose, text_content)
    foreign_point = await _point(session, outside, outsider, "sms", "+4915100000002")
    claimed = [
        await _delivery(session, a, m_sms, sms, "sms"),
        await _delivery(session, b, m_push, push, "web_push"),
        await _delivery(session, a, m_no_mail, mail, "email"),  # the content has no part for the channel
        await _delivery(session, a, m_null, sms, "sms"),  # a part that is JSON null
        await _delivery(session, b, m_push, push, "web_push"),  # a second delivery of one message
        await _delivery(session, a, m_sms, sms, "sms", in_flight=True),
        await _delivery(session, outside, m_outside, foreign_point, "sms"),  # its workspace is not in the batch
    ]
    workspace_ids = [a, b]

    before = await _as_before(session, workspace_ids, claimed)
    driver = await ledger.transaction_driver(session)
    assert driver is not None
    now = {row.id: row for row in await repository.batch_to_send(driver, workspace_ids, claimed)}

    assert now == before
    assert len(now) == len(claimed) - 1  # the outside workspace's delivery is read by neither
    by_case = [now[d] for d in claimed[:-1]]
    assert by_case[0].content == {"text": "Hallo"}
    assert by_case[0].locale == "de-DE"
    assert by_case[0].kind == "marketing"
    assert by_case[1].details == {"keys": {"p256dh": "k", "auth": "a"}}
    assert by_case[1].locale is None
    assert by_case[1].kind == "transactional"
    assert by_case[2].has_content is False
    assert by_case[3].has_content is True
    assert by_case[3].content is None
    assert by_case[4].content == by_case[1].content
    assert by_case[5].in_flight_at == _NOW
