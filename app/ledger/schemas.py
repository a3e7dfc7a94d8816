"""API types of contacts, consents, events, withdrawals and objections."""

from __future__ import annotations

import ipaddress
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

import msgspec

from app.domain.identifiers import EXTERNAL_ID_PATTERN, PostalAddress, normalise_postal
from app.domain.model import Channel, ObjectionKind, Reachability, State, SuppressionSource, VerifiedVia
from app.workspaces.settings import known_time_zone

if TYPE_CHECKING:
    from app.ledger.models import ConsentEvent

ContactRef = Annotated[
    str, msgspec.Meta(min_length=1, max_length=200, description="The contact's id, or the caller's `external_id`.")
]
ExternalId = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=200,
        pattern=EXTERNAL_ID_PATTERN,
        description="Your id of the person (no `/` or control characters, not `.` or `..`).",
    ),
]
"""A new contact's ``external_id``: it must name the contact in URLs (:data:`EXTERNAL_ID_PATTERN`)."""
Short = Annotated[str, msgspec.Meta(max_length=2000)]
# msgspec cannot mix an Enum and a Literal in one union, so the channel names are spelled out once more.
ChannelOrAll = Literal["email", "sms", "whatsapp", "app_push", "web_push", "print", "all"]


def check_ip(ip: str | None) -> None:
    """An ``ip`` of evidence must be an IPv4 or IPv6 address: a proof that names something else proves nothing."""
    if ip is None:
        return
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        address = None
    # an IPv6 zone (``fe80::1%eth0``) names an interface of the machine that saw it, and takes any text
    if address is None or (isinstance(address, ipaddress.IPv6Address) and address.scope_id is not None):
        msg = f"ip is not an IPv4 or IPv6 address (got {ip[:64]!r})"
        raise ValueError(msg)


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

    def __post_init__(self) -> None:
        """An ``ip`` that is no IP address is refused (422)."""
        check_ip(self.ip)

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

    external_id: ExternalId | None = None
    locale: Annotated[str, msgspec.Meta(pattern=r"^[a-z]{2,3}(-[A-Z]{2})?$")] | None = None
    timezone: Annotated[str, msgspec.Meta(max_length=64)] | None = None
    postal_address: PostalAddressIn | None = None

    def __post_init__(self) -> None:
        """An unknown time zone is refused here (422), not met by the dispatcher at send time."""
        if self.timezone is not None and not known_time_zone(self.timezone):
            msg = f"timezone is not an IANA time zone such as Europe/Berlin (got {self.timezone!r})"
            raise ValueError(msg)


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


class ObjectionWithdrawalOut(ChangesOut, kw_only=True):
    """The resulting states, and what still stops print to the contact's postal addresses.

    The withdrawal lifts the objection's own suppression (`objection_art21`) from the contact's addresses, where
    nothing else holds it. `still_blocked_by` lists the sources of the suppressions still in force under the postal
    addresses' keys (empty: print may go out again); eligibility answers `suppressed` while it is not empty:
    `robinson` (the person is on a Robinson list: they leave it with its operator), `objection_sticker` (a "no
    advertising" sticker of the household), `erasure`, `complaint`, `paused` (until the pause ends), …, and
    `unrecorded`: a suppression older than the recording of sources (migration 0047), which may have sources not
    known, so it is not lifted (the objection's own label may still be shown on it in the access export).

    Only the channels the withdrawn objections covered are lifted (print; every channel after an objection to all
    marketing). `shared_with_another_contact` lists those where the objection's suppression stays: an address of
    another contact of the workspace has the same suppression key (an email address that differs only in the case
    of its local part; a postal address without a name, whose key is the household's of a named person there), so
    that contact's own objection may be the one recorded under it, and this withdrawal does not lift it.
    """

    still_blocked_by: list[SuppressionSource]
    shared_with_another_contact: list[Channel]


class MergeIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The duplicate to merge into this contact, and how the caller knows they are the same person."""

    duplicate: ContactRef
    evidence: Evidence = msgspec.field(default_factory=Evidence)


class MergeOut(msgspec.Struct, kw_only=True):
    """The surviving contact, what moved onto it (rows per table), and the `merged` events on each address."""

    contact_id: uuid.UUID
    merged_contact_id: uuid.UUID
    moved: dict[str, int]
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
    """An address with its reachability and consents.

    `verified_at`/`verified_via`: when and how the address became known to be the contact's (`confirmed`,
    `start_word`, `permission`, `api`); transactional messages go only to verified addresses (`null`: an address a
    form brought, not confirmed yet: eligibility answers `unverified_address`).
    """

    id: uuid.UUID
    channel: Channel
    address: str
    address_masked: str
    reachability: Reachability
    consents: list[ConsentOut]
    verified_at: datetime | None = None
    verified_via: VerifiedVia | None = None


class ContactOut(msgspec.Struct, kw_only=True):
    """A contact with every address and consent."""

    id: uuid.UUID
    external_id: str | None
    locale: str | None
    timezone: str | None
    created_at: datetime
    contact_points: list[ContactPointOut]


class EventOut(msgspec.Struct, kw_only=True):
    """One ledger entry with its chain hashes (hex).

    ``seq``, ``prev_hash`` and ``hash`` are null while the entry waits for its place in the chain: it is sealed
    within milliseconds of its commit, and readers of the history seal first, so it is seen only in a race.
    """

    id: uuid.UUID
    seq: int | None
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
    prev_hash: str | None
    hash: str | None


class VerificationOut(msgspec.Struct, kw_only=True):
    """Result of recomputing the workspace's hash chain."""

    events_checked: int
    valid: bool
    first_broken_event_id: uuid.UUID | None = None
    first_broken_seq: int | None = None
    reason: str | None = None


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
        prev_hash=bytes(event.prev_hash).hex() if event.prev_hash is not None else None,
        hash=bytes(event.hash).hex() if event.hash is not None else None,
    )


class ReassignedNumberIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A phone number of this contact that went to someone else (a recycled number), and since when."""

    number: Annotated[str, msgspec.Meta(min_length=1, max_length=64, description="The number; normalised to E.164.")]
    reassigned_at: Annotated[
        datetime,
        msgspec.Meta(description="When the number changed hands (RFC 3339 with a time zone; not in the future)."),
    ]
    evidence: Evidence = msgspec.field(default_factory=Evidence)


class ReassignedNumberOut(msgspec.Struct, kw_only=True):
    """The `reassigned` events: the consents given before the date, on the number's SMS and WhatsApp addresses.

    `suppressions_lifted`: suppression rows of the number made before the date (the former owner's), deleted.
    """

    contact_id: uuid.UUID
    number: str
    reassigned_at: datetime
    suppressions_lifted: int
    changes: list[ConsentChange]
