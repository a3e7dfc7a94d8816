"""Subject access (GDPR Art. 15): everything held about one contact, with a consent receipt per consent given.

The ledger's records (the contact, its addresses and the suppressions covering them, consents with their notices,
events with their evidence) come through the ledger's service; every other package adds its section through its
privacy hook (:mod:`app.privacy.hooks`). Receipts follow Kantara Consent Receipt v1.1 (CHANNEL_RULES.md §7.2):
what was agreed to, when, how, with whom, how to withdraw.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.domain.model import Channel, PurposeKind, Reachability, State, Trigger
from app.ledger import sealer
from app.ledger.actions import records_of
from app.ledger.models import Consent, ConsentEvent, ContactPoint, Suppression
from app.ledger.schemas import event_out
from app.ledger.service import require_contact
from app.lib.orm import utcnow
from app.lib.privacy import Subject
from app.privacy.hooks import HOOKS
from app.privacy.schemas import (
    ConsentReceipt,
    ExportedConsent,
    ExportedContact,
    ExportedNotice,
    ExportedPoint,
    ExportedSuppression,
    ReceiptController,
    ReceiptPurpose,
    ReceiptService,
    SubjectAccessOut,
)
from app.purposes.models import Notice, Purpose
from app.purposes.service import notices_by_id, purposes_by_id
from app.workspaces.service import name_and_settings
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


async def subject_access(session: AsyncSession, workspace_id: uuid.UUID, contact_ref: str) -> SubjectAccessOut:
    """Everything held about the contact named by id or external id."""
    await sealer.seal_first(session, workspace_id)  # the events with their place in the chain
    contact = await require_contact(session, workspace_id, contact_ref)
    name, settings = await name_and_settings(session, workspace_id)
    controller = ReceiptController(pii_controller=settings.brand or name, contact=settings.phone.help_contact)
    purposes = await purposes_by_id(session, workspace_id)
    keys = {purpose_id: purpose.key for purpose_id, purpose in purposes.items()}
    records = await records_of(session, workspace_id, contact)
    consents = records.consents
    notices = await notices_by_id(session, workspace_id, {c.notice_id for c in consents if c.notice_id})
    channel_of = {point.id: Channel(point.channel) for point in records.points}
    known = _Known(purposes, notices, {e.id: e for e in records.events}, settings, contact.id, controller)
    subject = Subject(workspace_id, contact.id, tuple(channel_of), purpose_keys=keys)
    sections: dict[str, Any] = {}
    for hook in HOOKS:
        if hook.export is not None:
            sections.update(await hook.export(session, subject))
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
        contact_points=_points(records.points, records.suppressions, keys),
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
        events=[event_out(e, keys) for e in records.events],
        consent_receipts=[
            _receipt(c, channel_of[c.contact_point_id], known)
            for c in consents
            if c.state == State.OPTED_IN and c.since is not None
        ],
        **sections,
    )


def _notice(notice: Notice | None) -> ExportedNotice | None:
    if notice is None:
        return None
    return ExportedNotice(
        id=notice.id, version=notice.version, locale=notice.locale, sha256=notice.sha256, text=notice.text
    )


def _points(
    points: Sequence[ContactPoint], suppressions: Sequence[Suppression], keys: Mapping[uuid.UUID, str]
) -> list[ExportedPoint]:
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
                    reasons=list(s.reasons),
                    since=s.created_at,
                    until=s.until,
                    paused_until=s.paused_until,
                )
                for position, key in enumerate(bytes(k) for k in point.suppression_keys)
                for s in suppressions
                if bytes(s.key) == key
            ],
        )
        for point in points
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
