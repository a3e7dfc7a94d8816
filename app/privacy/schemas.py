"""API types of subject access (Art. 15) and erasure (Art. 17)."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any, Literal

import msgspec

from app.chains.schemas import RunOut
from app.domain.model import Channel, Reachability, State
from app.ledger.schemas import EventOut
from app.messages.schemas import ExportedMessage
from app.purchases.schemas import ExportedPurchase

#: A caller's reference of a data-subject request (a ticket number): visible ASCII, no spaces.
REQUEST_REF_PATTERN = r"^[\x21-\x7e]+$"


class ErasedCounts(msgspec.Struct, kw_only=True):
    """How many rows of each kind were deleted."""

    contacts: int
    contact_points: int
    consents: int
    confirmation_tokens: int
    messages: int
    webhook_deliveries: int
    stored_answers: int
    inbound_messages_unlinked: int
    """Inbound SMS/WhatsApp kept by provider id (so a retried webhook is not applied twice) lose their address."""
    evidence_erased: int
    outbox_files: int = 0
    """Outbox files and print batch lines (not yet collected) with the person's deliveries, deleted from disk."""
    preference_links: int = 0
    """Links to the person's preference centre (hashes only): none of them opens anything any more."""
    chain_runs: int = 0
    """The person's chain runs (with their variables and steps): none of their remaining steps is sent."""
    purchases: int = 0
    """Sales recorded with the person's email addresses (UWG §7(3) existing customers)."""
    repermissions: int = 0
    """The person's "keep me subscribed" links (hashes only): none of them renews anything any more."""


class Kept(msgspec.Struct, kw_only=True):
    """What stays after the erasure, and why it may stay."""

    what: Literal["suppression_keys", "ledger_events", "erasure_record"]
    count: int
    why: str


class ErasureOut(msgspec.Struct, kw_only=True):
    """What an erasure removed and what it kept, with the reasons; the same report answers a repeated request."""

    erasure_id: uuid.UUID
    contact_id: uuid.UUID
    erased_at: datetime
    request_ref: str | None
    received_via: str | None
    event_ids: list[uuid.UUID]
    deleted: ErasedCounts
    kept: list[Kept]


class ExportedSuppression(msgspec.Struct, kw_only=True):
    """A suppression that covers one of the contact's addresses (its key is a hash, so it is not shown).

    `covers`: `household` for a postal suppression of everyone at the address (a "no advertising" sticker).
    """

    covers: Literal["address", "household"]
    scope: str
    purpose: str | None
    reason: str
    """The label of the first source that wrote it."""
    reasons: list[str]
    """Every source that holds it in force (`unrecorded`: one written before sources were recorded, whose other
    sources are not known)."""
    since: datetime
    until: datetime | None = None
    """A pause's end (reason `paused`; it ends by itself then); `null` for a suppression without end."""
    paused_until: datetime | None = None
    """The end of a pause the person chose while this suppression (without end) was in force: should its sources
    be lifted, the pause runs on until then."""


class ExportedPoint(msgspec.Struct, kw_only=True):
    """An address with everything stored with it (postal details, push token or subscription)."""

    id: uuid.UUID
    channel: Channel
    address: str
    details: dict[str, Any]
    reachability: Reachability
    reachability_changed_at: datetime | None
    created_at: datetime
    suppressions: list[ExportedSuppression]


class ExportedNotice(msgspec.Struct, kw_only=True):
    """The exact text the person was shown."""

    id: uuid.UUID
    version: int
    locale: str
    sha256: str
    text: str


class ExportedConsent(msgspec.Struct, kw_only=True):
    """One consent as it stands, with the notice it rests on."""

    contact_point_id: uuid.UUID
    channel: Channel
    purpose: str | None
    state: State
    legal_basis: str | None
    since: datetime | None
    notice: ExportedNotice | None
    last_event_id: uuid.UUID | None


class ReceiptPurpose(msgspec.Struct, kw_only=True, rename="camel", omit_defaults=True):
    """Kantara Consent Receipt v1.1: one purpose of a service."""

    purpose: str
    purpose_category: list[str]
    consent_type: str
    pii_category: list[str]
    primary_purpose: bool
    termination: str
    third_party_disclosure: bool
    third_party_name: str | None = None


class ReceiptService(msgspec.Struct, kw_only=True):
    """Kantara Consent Receipt v1.1: a service and its purposes."""

    service: str
    purposes: list[ReceiptPurpose]


class ReceiptController(msgspec.Struct, kw_only=True, rename="camel", omit_defaults=True):
    """Kantara Consent Receipt v1.1: the controller (the workspace)."""

    pii_controller: str
    on_behalf: bool = False
    contact: str | None = None


class ConsentReceipt(msgspec.Struct, kw_only=True, rename="camel"):
    """A consent receipt shaped after Kantara Consent Receipt v1.1, one per consent currently given."""

    version: str
    jurisdiction: str
    consent_timestamp: int
    collection_method: str
    consent_receipt_id: uuid.UUID = msgspec.field(name="consentReceiptID")
    language: str
    pii_principal_id: str
    pii_controllers: list[ReceiptController]
    services: list[ReceiptService]
    sensitive: bool
    spi_cat: list[str]


class ExportedContact(msgspec.Struct, kw_only=True):
    """The contact as stored."""

    id: uuid.UUID
    external_id: str | None
    locale: str | None
    timezone: str | None
    created_at: datetime


class ErasureRequestStatus(enum.StrEnum):
    """Where an erasure request stands."""

    PENDING = "pending"
    DONE = "done"
    REJECTED = "rejected"


class ExportedErasureRequest(msgspec.Struct, kw_only=True):
    """An erasure the person asked for on the preference centre that is still pending or was rejected."""

    id: uuid.UUID
    status: ErasureRequestStatus
    source: str
    requested_at: datetime
    due_at: datetime
    decided_at: datetime | None
    evidence: dict[str, Any] | None
    """The request's IP address and user agent, kept while it is pending."""


class SubjectAccessOut(msgspec.Struct, kw_only=True):
    """Everything held about one contact (GDPR Art. 15), with consent receipts."""

    generated_at: datetime
    controller: ReceiptController
    contact: ExportedContact
    contact_points: list[ExportedPoint]
    consents: list[ExportedConsent]
    events: list[EventOut]
    messages: list[ExportedMessage]
    consent_receipts: list[ConsentReceipt]
    erasure_requests: list[ExportedErasureRequest] = msgspec.field(default_factory=list)
    """Erasures asked for on the preference centre (pending, or rejected)."""
    chain_runs: list[RunOut] = msgspec.field(default_factory=list)
    purchases: list[ExportedPurchase] = msgspec.field(default_factory=list)
    """Sales made with the person's email addresses (the evidence of the existing-customer basis, UWG §7(3))."""


class ErasureRequestOut(msgspec.Struct, kw_only=True):
    """An erasure request made on the preference centre (GDPR Art. 17)."""

    id: uuid.UUID
    contact_id: uuid.UUID
    """The contact asking; once erased, an id that leads to no one."""
    status: ErasureRequestStatus
    source: str
    """Where the person asked: ``preference_centre``."""
    link_id: uuid.UUID | None
    """The preference link the request was made with."""
    requested_at: datetime
    due_at: datetime
    """One month after the request (Art. 12(3)): by then it must be executed or answered."""
    overdue: bool
    """Pending past ``due_at``."""
    decided_at: datetime | None
    decided_by: uuid.UUID | None
    """The ``admin`` key that executed or rejected it (none when executed at once, without review)."""
    erasure_id: uuid.UUID | None
    """The erasure's record (its report), once executed."""
