"""API types of contacts, consents, events, withdrawals and objections."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

from app.domain.identifiers import PostalAddress, normalise_postal
from app.domain.model import Channel, ObjectionKind, Reachability, State
from app.messages.schemas import DeliveryOut, StatusEntry

ContactRef = Annotated[
    str, msgspec.Meta(min_length=1, max_length=200, description="The contact's id, or the caller's `external_id`.")
]
Short = Annotated[str, msgspec.Meta(max_length=2000)]
# msgspec cannot mix an Enum and a Literal in one union, so the channel names are spelled out once more.
ChannelOrAll = Literal["email", "sms", "whatsapp", "app_push", "web_push", "print", "all"]


class Evidence(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    """How the request reached the caller: stored in the ledger as proof (personal data, erasable)."""

    ip: Annotated[str, msgspec.Meta(max_length=64)] | None = None
    user_agent: Short | None = None
    source_url: Short | None = None
    form_id: Annotated[str, msgspec.Meta(max_length=200)] | None = None
    agent_id: Annotated[str, msgspec.Meta(max_length=200, description="Staff member who entered it.")] | None = None
    ticket: Annotated[str, msgspec.Meta(max_length=200)] | None = None
    note: Short | None = None
    document_ref: Annotated[str, msgspec.Meta(max_length=500, description="Reference of a letter or scan.")] | None = (
        None
    )

    def as_dict(self) -> dict[str, Any]:
        """The fields that were given."""
        return msgspec.to_builtins(self)  # type: ignore[no-any-return]


class WithdrawalIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Withdraw consent: one purpose or `all` marketing purposes, on one channel or `all` channels."""

    contact: ContactRef
    channel: ChannelOrAll
    purpose: Annotated[str, msgspec.Meta(min_length=1, max_length=63, description="Purpose key or `all`.")]
    evidence: Evidence = msgspec.field(default_factory=Evidence)


class PostalAddressIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A postal address; the house number may be part of `street`."""

    name: Annotated[str, msgspec.Meta(max_length=300)] | None = None
    street: Annotated[str, msgspec.Meta(min_length=1, max_length=300)]
    house_number: Annotated[str, msgspec.Meta(max_length=30)] | None = None
    postcode: Annotated[str, msgspec.Meta(min_length=1, max_length=20)]
    city: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    country: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z]{2}$")] = "DE"

    def normalised(self) -> PostalAddress:
        """The address normalised for matching (raises :class:`InvalidIdentifier`)."""
        return normalise_postal(
            street=self.street,
            house_number=self.house_number,
            postcode=self.postcode,
            city=self.city,
            name=self.name,
            country=self.country,
        )


class ContactIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A contact as the caller's CRM knows it."""

    external_id: Annotated[str, msgspec.Meta(min_length=1, max_length=200)] | None = None
    locale: Annotated[str, msgspec.Meta(pattern=r"^[a-z]{2,3}(-[A-Z]{2})?$")] | None = None
    timezone: Annotated[str, msgspec.Meta(max_length=64)] | None = None
    postal_address: PostalAddressIn | None = None


class ObjectionIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """An objection to advertising (Art. 21 GDPR, a 'no advertising' sticker, a Robinson list entry)."""

    contact: ContactRef | None = None
    postal_address: PostalAddressIn | None = None
    scope: Literal["print", "all_marketing"]
    kind: ObjectionKind
    evidence: Evidence = msgspec.field(default_factory=Evidence)


class ObjectionWithdrawalIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The person lifts their objection; the evidence must say how they did (letter, signed form…)."""

    contact: ContactRef
    evidence: Evidence


class ConsentChange(msgspec.Struct, kw_only=True):
    """The result for one consent. `purpose` null means every marketing purpose of that channel."""

    contact_point_id: uuid.UUID
    channel: Channel
    purpose: str | None
    from_state: State
    state: State
    event_id: uuid.UUID | None
    skipped: str | None = None


class ChangesOut(msgspec.Struct, kw_only=True):
    """The resulting states."""

    contact_id: uuid.UUID
    changes: list[ConsentChange]


class ConsentOut(msgspec.Struct, kw_only=True):
    """The current state of one consent."""

    purpose: str | None
    state: State
    legal_basis: str | None
    since: datetime | None
    notice_id: uuid.UUID | None
    last_event_id: uuid.UUID | None


class ContactPointOut(msgspec.Struct, kw_only=True):
    """An address with its reachability and consents."""

    id: uuid.UUID
    channel: Channel
    address: str
    address_masked: str
    reachability: Reachability
    consents: list[ConsentOut]


class ContactOut(msgspec.Struct, kw_only=True):
    """A contact with every address and consent."""

    id: uuid.UUID
    external_id: str | None
    locale: str | None
    timezone: str | None
    created_at: datetime
    contact_points: list[ContactPointOut]


class EventOut(msgspec.Struct, kw_only=True):
    """One ledger entry with its chain hashes (hex)."""

    id: uuid.UUID
    seq: int
    contact_point_id: uuid.UUID
    channel: Channel
    purpose: str | None
    trigger: str
    from_state: State
    to_state: State
    legal_basis: str | None
    notice_id: uuid.UUID | None
    actor_type: str
    actor_id: str | None
    evidence: dict[str, Any] | None
    occurred_at: datetime
    recorded_at: datetime
    prev_hash: str
    hash: str


class VerificationOut(msgspec.Struct, kw_only=True):
    """Result of recomputing the workspace's hash chain."""

    events_checked: int
    valid: bool
    first_broken_event_id: uuid.UUID | None = None
    first_broken_seq: int | None = None
    reason: str | None = None


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
    evidence_erased: int


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
    since: datetime


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


class ExportedMessage(msgspec.Struct, kw_only=True):
    """A message sent (or meant) to the person, with its content, routing decision and history."""

    id: uuid.UUID
    purpose: str | None
    status: str
    created_at: datetime
    send_at: datetime | None
    route: list[str]
    content: dict[str, Any]
    decision: dict[str, Any]
    deliveries: list[DeliveryOut]
    history: list[StatusEntry]


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
