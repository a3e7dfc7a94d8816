"""Subject access (GDPR Art. 15): everything held about one contact, with a consent receipt per consent given.

Receipts follow Kantara Consent Receipt v1.1 (CHANNEL_RULES.md §7.2): what was agreed to, when, how, with whom,
how to withdraw.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.domain.model import Channel, PurposeKind, Reachability, State, Trigger
from app.ledger import repository
from app.ledger.models import Consent, ConsentEvent, ContactPoint, Suppression
from app.ledger.schemas import (
    ConsentReceipt,
    EventOut,
    ExportedConsent,
    ExportedContact,
    ExportedMessage,
    ExportedNotice,
    ExportedPoint,
    ExportedSuppression,
    ReceiptController,
    ReceiptPurpose,
    ReceiptService,
    SubjectAccessOut,
)
from app.ledger.service import require_contact
from app.lib.orm import utcnow
from app.messages.models import Delivery, Message, MessageEvent
from app.messages.service import delivery_out, status_entry
from app.purposes import repository as purposes_repository
from app.purposes.models import Notice, Purpose
from app.workspaces.models import Workspace
from app.workspaces.settings import WorkspaceSettings

RECEIPT_VERSION = "KI-CR-v1.1.0"

#: How a consent in state opted_in was given, by the trigger of the event that gave it.
COLLECTION_METHOD = {
    Trigger.CONFIRM: "double opt-in: sign-up, then the confirmation link in our mail",
    Trigger.START_WORD: "the person texted a start word to our number",
    Trigger.PERMISSION_GRANTED: "the person granted the notification permission of the app or browser",
    Trigger.IMPORT: "imported with the proof of an earlier consent",
}
#: How the person withdraws, per channel.
WITHDRAWAL = {
    Channel.EMAIL: "the unsubscribe link in every mail (one click), or any message to us",
    Channel.SMS: "reply STOP",
    Channel.WHATSAPP: "reply STOP",
    Channel.APP_PUSH: "turn notifications off in the app or in the system settings",
    Channel.WEB_PUSH: "revoke the notification permission in the browser",
    Channel.PRINT: "object by letter or mail",
}
#: The data a channel processes, and who else processes it (Kantara ``piiCategory``, ``thirdPartyName``).
PII_CATEGORY = {
    Channel.EMAIL: "email address",
    Channel.SMS: "mobile phone number",
    Channel.WHATSAPP: "mobile phone number",
    Channel.APP_PUSH: "device push token",
    Channel.WEB_PUSH: "browser push subscription",
    Channel.PRINT: "name and postal address",
}
THIRD_PARTY = {
    Channel.SMS: "Twilio",
    Channel.WHATSAPP: "Twilio, WhatsApp (Meta)",
    Channel.APP_PUSH: "Google (Firebase Cloud Messaging), Apple (APNs)",
    Channel.WEB_PUSH: "the browser's push service",
}


def event_out(event: ConsentEvent, purpose_keys: Mapping[uuid.UUID, str]) -> EventOut:
    """A ledger entry as the API shows it (evidence ``None`` once erased)."""
    return EventOut(
        id=event.id,
        seq=event.seq,
        contact_point_id=event.contact_point_id,
        channel=Channel(event.channel),
        purpose=purpose_keys.get(event.purpose_id) if event.purpose_id else None,
        trigger=event.trigger,
        from_state=State(event.from_state),
        to_state=State(event.to_state),
        legal_basis=event.legal_basis,
        notice_id=event.notice_id,
        actor_type=event.actor_type,
        actor_id=event.actor_id,
        evidence=event.personal.get("evidence") if event.personal is not None else None,
        occurred_at=event.occurred_at,
        recorded_at=event.recorded_at,
        prev_hash=bytes(event.prev_hash).hex(),
        hash=bytes(event.hash).hex(),
    )


async def subject_access(session: AsyncSession, workspace_id: uuid.UUID, contact_ref: str) -> SubjectAccessOut:
    """Everything held about the contact named by id or external id."""
    contact = await require_contact(session, workspace_id, contact_ref)
    workspace = await session.get(Workspace, workspace_id)
    assert workspace is not None
    settings = WorkspaceSettings.load(workspace.settings)
    controller = ReceiptController(pii_controller=settings.brand or workspace.name, contact=settings.phone.help_contact)
    purposes = await purposes_repository.purposes_by_id(session, workspace_id)
    keys = {purpose_id: purpose.key for purpose_id, purpose in purposes.items()}
    points = list(await repository.contact_points_of(session, contact.id))
    consents = [c for c in await repository.consents_of(session, contact.id) if c.last_event_id is not None]
    notices = await _notices(session, {c.notice_id for c in consents if c.notice_id})
    events = list(await repository.events_of_contact(session, contact.id, 0, None))
    channel_of = {point.id: Channel(point.channel) for point in points}
    known = _Known(purposes, notices, {e.id: e for e in events}, settings, contact.id, controller)
    return SubjectAccessOut(
        generated_at=utcnow(),
        controller=controller,
        contact=ExportedContact(
            id=contact.id,
            external_id=contact.external_id,
            locale=contact.locale,
            timezone=contact.timezone,
            created_at=contact.created_at,
        ),
        contact_points=await _points(session, workspace_id, points, keys),
        consents=[
            ExportedConsent(
                contact_point_id=c.contact_point_id,
                channel=Channel(c.channel),
                purpose=keys.get(c.purpose_id) if c.purpose_id else None,
                state=State(c.state),
                legal_basis=c.legal_basis,
                since=c.since,
                notice=_notice(notices.get(c.notice_id)) if c.notice_id else None,
                last_event_id=c.last_event_id,
            )
            for c in consents
        ],
        events=[event_out(e, keys) for e in events],
        messages=await _messages(session, contact.id, keys),
        consent_receipts=[
            _receipt(c, channel_of[c.contact_point_id], known)
            for c in consents
            if c.state == State.OPTED_IN and c.since is not None
        ],
    )


async def _notices(session: AsyncSession, ids: set[uuid.UUID]) -> dict[uuid.UUID, Notice]:
    if not ids:
        return {}
    return {n.id: n for n in (await session.scalars(select(Notice).where(Notice.id.in_(ids)))).all()}


def _notice(notice: Notice | None) -> ExportedNotice | None:
    if notice is None:
        return None
    return ExportedNotice(
        id=notice.id, version=notice.version, locale=notice.locale, sha256=notice.sha256, text=notice.text
    )


async def _points(
    session: AsyncSession, workspace_id: uuid.UUID, points: Sequence[ContactPoint], keys: Mapping[uuid.UUID, str]
) -> list[ExportedPoint]:
    wanted = sorted({key for point in points for key in point.suppression_keys})
    suppressions = (
        (
            await session.scalars(
                select(Suppression)
                .where(Suppression.workspace_id == workspace_id, Suppression.key.in_(wanted))
                .order_by(Suppression.created_at)
            )
        ).all()
        if wanted
        else []
    )
    return [
        ExportedPoint(
            id=point.id,
            channel=Channel(point.channel),
            address=point.value,
            details=dict(point.details),
            reachability=Reachability(point.reachability),
            reachability_changed_at=point.reachability_changed_at,
            created_at=point.created_at,
            suppressions=[
                ExportedSuppression(
                    # a print address's keys: the person's, then the household's (see Keys.point_keys)
                    covers="household" if position > 0 else "address",
                    scope=s.scope,
                    purpose=keys.get(s.purpose_id) if s.purpose_id else None,
                    reason=s.reason,
                    since=s.created_at,
                )
                for position, key in enumerate(bytes(k) for k in point.suppression_keys)
                for s in suppressions
                if bytes(s.key) == key
            ],
        )
        for point in points
    ]


async def _messages(
    session: AsyncSession, contact_id: uuid.UUID, keys: Mapping[uuid.UUID, str]
) -> list[ExportedMessage]:
    messages = (
        await session.scalars(select(Message).where(Message.contact_id == contact_id).order_by(Message.id))
    ).all()
    if not messages:
        return []
    ids = [m.id for m in messages]
    deliveries = (
        await session.scalars(select(Delivery).where(Delivery.message_id.in_(ids)).order_by(Delivery.id))
    ).all()
    history = (
        await session.scalars(
            select(MessageEvent).where(MessageEvent.message_id.in_(ids)).order_by(MessageEvent.at, MessageEvent.id)
        )
    ).all()
    return [
        ExportedMessage(
            id=m.id,
            purpose=keys.get(m.purpose_id),
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


@dataclass(frozen=True, slots=True)
class _Known:
    """What every receipt of one contact draws on."""

    purposes: Mapping[uuid.UUID, Purpose]
    notices: Mapping[uuid.UUID, Notice]
    events: Mapping[uuid.UUID, ConsentEvent]
    settings: WorkspaceSettings
    contact_id: uuid.UUID
    controller: ReceiptController


def _receipt(consent: Consent, channel: Channel, known: _Known) -> ConsentReceipt:
    """A Kantara-shaped receipt of one consent given; its id is the ledger event that gave it."""
    assert consent.since is not None
    assert consent.last_event_id is not None
    purpose = known.purposes.get(consent.purpose_id) if consent.purpose_id else None
    given = known.events.get(consent.last_event_id)
    notice = known.notices.get(consent.notice_id) if consent.notice_id else None
    third_party = THIRD_PARTY.get(channel)
    return ConsentReceipt(
        version=RECEIPT_VERSION,
        jurisdiction=known.settings.default_region,
        consent_timestamp=int(consent.since.timestamp()),
        collection_method=COLLECTION_METHOD.get(Trigger(given.trigger), given.trigger) if given else "unknown",
        consent_receipt_id=consent.last_event_id,
        language=notice.locale if notice else known.settings.locale,
        pii_principal_id=str(known.contact_id),
        pii_controllers=[known.controller],
        services=[
            ReceiptService(
                service=f"{purpose.name if purpose else 'All marketing'} ({channel.value})",
                purposes=[
                    ReceiptPurpose(
                        purpose=purpose.name if purpose else "All marketing purposes",
                        purpose_category=[purpose.kind if purpose else PurposeKind.MARKETING.value],
                        consent_type="EXPLICIT",
                        pii_category=[PII_CATEGORY[channel]],
                        primary_purpose=True,
                        termination=WITHDRAWAL[channel],
                        third_party_disclosure=third_party is not None,
                        third_party_name=third_party,
                    )
                ],
            )
        ],
        sensitive=False,
        spi_cat=[],
    )
