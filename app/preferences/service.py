"""Preference links and what the page may do with one.

A link is a capability for one contact in one workspace: 256 random bits, only their SHA-256 stored, expiring.
What it may do in this slice is withdraw — one purpose on one address, everything at once, or object to postal
advertising (Art. 21) — because withdrawing needs no proof beyond being asked (Art. 7(3)), and pause all
marketing to one address or all of them for a while (a ``paused`` suppression with an end) or end a pause early.
Opting in again is offered only on the email address the link proves control of (:func:`opt_in`); every other
channel or address needs its own proof, which the page explains.
Every change goes through :func:`app.ledger.service.apply_changes` (a pause, which moves no consent, through
:func:`app.ledger.service.record_notes`) with the person as actor and the link's id, IP and user agent as
evidence. The form token that guards the POST is an HMAC of the link's id, so a page of one link cannot be posted
to another, and a cross-site page, which cannot read ours, cannot know it.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import secrets
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.domain.gate import effective_consent, is_existing_customer
from app.domain.identifiers import mask
from app.domain.model import (
    WITHDRAWN_STATES,
    ActorType,
    Channel,
    ObjectionKind,
    PurposeKind,
    Reachability,
    State,
    SuppressionReason,
    SuppressionScope,
    Trigger,
)
from app.eligibility import repository as eligibility
from app.emails.render import locale_of
from app.ledger import repository as ledger
from app.ledger.actions import object_to_marketing, suppression_rows, withdraw_point
from app.ledger.models import Contact, ContactPoint
from app.ledger.service import Actor, Applied, Change, Note, apply_changes, record_notes, require_contact
from app.lib.errors import InvalidInput
from app.lib.keys import Keys
from app.lib.orm import utcnow
from app.preferences import repository
from app.preferences.models import PreferenceLink
from app.purposes import repository as purposes
from app.purposes.models import Notice, Purpose
from app.workspaces import repository as workspaces
from app.workspaces.settings import WorkspaceSettings

LINK_TTL = timedelta(days=30)
"""How long a preference link works: long enough for a newsletter's footer to stay useful for a month."""

PERSON = Actor(ActorType.SUBJECT, "preference_centre")
SOURCE = "preference_centre"


def token_hash(token: str) -> bytes:
    """What is stored and looked up: ``SHA-256(token)``."""
    return hashlib.sha256(token.encode()).digest()


@dataclass(frozen=True, slots=True)
class IssuedLink:
    """A new link: the token (only here, never stored) and when it stops working."""

    token: str
    expires_at: datetime
    link_id: uuid.UUID


#: Who issued a link that came from a forwardable mail: it opens the page, but not the person's data.
FROM_A_MAIL = "unsubscribe_token"
#: Who issued a link that the person asked for at ``/p``, mailed to their verified address.
ON_REQUEST = "request:email"


def may_receive_link(point: ContactPoint) -> bool:
    """Whether a link may be mailed to (or minted from the mail of) this address: one proved to be the contact's.

    ``verified_at`` is set by the address's own proof (a confirmed signup, a start word) or the tenant's records; an
    address a form attached to a customer id stays unverified whatever its holder confirms, and an unconfirmed
    signup is anybody's. Undeliverable addresses get nothing either.
    """
    return point.verified_at is not None and point.reachability == Reachability.REACHABLE


def proves_identity(link: PreferenceLink) -> bool:
    """Whether the link may open the person's data (download, erasure) and opt in: only one the person asked for.

    A message is forwarded, shown to others and its ``List-Unsubscribe`` header read by mail providers: a link
    minted from a mail's footer, and one the brand put into its own messages (``api_key:…``), manage consent
    (withdraw, pause, object) but are not the person's proof. A link mailed on the person's request at ``/p`` to
    their verified address (``request:email``) is (hostile review: a brand's newsletter link, forwarded, handed
    out the full subject access export).
    """
    return link.issued_by == ON_REQUEST


async def issue_link(
    session: AsyncSession,
    workspace_id: uuid.UUID,
    contact_ref: str,
    *,
    issued_by: str,
    point_id: uuid.UUID | None = None,
    now: datetime | None = None,
) -> IssuedLink:
    """A link to ``contact_ref``'s preference centre (404 for a contact of no or another workspace)."""
    contact = await require_contact(session, workspace_id, contact_ref)
    token = secrets.token_urlsafe(32)
    expires = (now or utcnow()) + LINK_TTL
    row = await repository.add_link(
        session,
        workspace_id,
        contact_id=contact.id,
        point_id=point_id,
        digest=token_hash(token),
        issued_by=issued_by,
        expires_at=expires,
    )
    return IssuedLink(token, expires, row.id)


class LinkState(enum.Enum):
    """What a link found by its token can do."""

    VALID = 200
    EXPIRED = 410
    UNKNOWN = 404


#: Longer than any link token issued: such a token is unknown without a lookup
MAX_TOKEN = 200


async def open_link(session: AsyncSession, token: str) -> tuple[LinkState, PreferenceLink | None]:
    """The link of ``token`` and whether it still works; changes nothing."""
    if not token or len(token) > MAX_TOKEN:
        return LinkState.UNKNOWN, None
    row = await repository.find_by_hash(session, token_hash(token))
    if row is None:
        return LinkState.UNKNOWN, None
    if row.expires_at <= utcnow():
        return LinkState.EXPIRED, row
    return LinkState.VALID, row


def form_token(keys: Keys, link: PreferenceLink) -> str:
    """The hidden field every form of this link's page carries: HMAC of the link's id under a derived key."""
    key = keys.request_fingerprint(b"preference-form-v1")
    return hmac.new(key, link.id.bytes, hashlib.sha256).hexdigest()


def form_token_valid(keys: Keys, link: PreferenceLink, given: str) -> bool:
    """Constant-time check of a posted form token."""
    return hmac.compare_digest(form_token(keys, link), given)


# --- what the page shows -------------------------------------------------------------------------------------


class Shown(enum.StrEnum):
    """A consent's state as the page says it (plain words in :mod:`app.preferences.render`)."""

    RECEIVING = "receiving"
    CUSTOMER = "customer"
    """Received without consent, as an existing customer (UWG §7(3)): the person may object at any time."""
    PENDING = "pending"
    NOT_RECEIVING = "not_receiving"
    WITHDRAWN = "withdrawn"
    OBJECTED = "objected"
    POSTAL_ALLOWED = "postal_allowed"
    POSTAL_BLOCKED = "postal_blocked"
    """Print: not objected by the person, but stopped for good all the same (a household's sticker, a Robinson
    entry, the suppression a withdrawn objection left): no post comes, and the person may still object."""


class Offer(enum.StrEnum):
    """How the page offers opting in to a purpose on an address that does not receive it."""

    NONE = "none"
    """Nothing to offer: the person receives it, waits for a confirmation, or objected."""
    BUTTON = "button"
    """One click: the email address this link was mailed to (the link proves control of it)."""
    SUPPRESSED = "suppressed"
    """The address is on the do-not-contact list for this purpose: this page never lifts that."""
    OWN_PROOF = "own_proof"
    """Another channel or another address: that channel's own proof (start word, permission, confirmation mail)."""


#: The states from which the page offers opting in again.
_NOT_OPTED_IN = frozenset({None, State.NONE, State.OPTED_OUT, State.EXPIRED, State.DECLINED})


@dataclass(frozen=True, slots=True)
class Row:
    """One purpose on one address."""

    purpose: Purpose
    shown: Shown
    offer: Offer = Offer.NONE
    notice: Notice | None = None
    """Where opting in is one click: the consent text the person agrees to (the purpose's newest email notice in the
    page's language, else the contact's or the workspace's); shown beside the button, and its version recorded."""

    @property
    def can_withdraw(self) -> bool:
        """Withdrawing is offered where something is flowing or about to (opted in, or waiting for confirmation)."""
        return self.shown in (Shown.RECEIVING, Shown.CUSTOMER, Shown.PENDING)


@dataclass(frozen=True, slots=True)
class Address:
    """One address of the contact, masked, with its purposes."""

    point: ContactPoint
    masked: str
    rows: tuple[Row, ...]
    print_state: Shown | None = None
    """Print only: objected or allowed (legitimate interest)."""
    paused_until: datetime | None = None
    """The end of the running pause of all marketing to this address (``None``: not paused)."""
    stopped: bool = False
    """A permanent suppression stops all marketing to it (an objection, a STOP, an erasure, a Robinson entry): a
    pause writes nothing under such an address's keys, and it counts as paused in :attr:`View.all_paused_until`."""

    @property
    def channel(self) -> Channel:
        """The address's channel."""
        return Channel(self.point.channel)

    @property
    def needs_own_proof(self) -> bool:
        """Whether some purpose here can only be opted in to by the channel's own proof (the page explains how)."""
        return any(r.offer is Offer.OWN_PROOF for r in self.rows)


@dataclass(frozen=True, slots=True)
class View:
    """Everything the page shows."""

    link: PreferenceLink
    contact: Contact
    brand: str
    lang: str
    addresses: tuple[Address, ...]
    timezone: str = "UTC"
    """The person's clock for dates on the page (the contact's time zone, else the workspace's)."""
    sms_from: str | None = None
    """The workspace's SMS number a start word is texted to (``None``: not configured, nothing said)."""
    whatsapp_from: str | None = None
    """The workspace's WhatsApp number a start word is sent to."""
    start_words: Mapping[str, str] = field(default_factory=dict)
    """The word a text opts a purpose in with, by purpose key: only where the workspace takes a start word from a
    number without a pending signup (``phone.keyword_only_opt_in``): its own start word for the purpose, or
    ``START`` for its ``phone.default_purpose``. Empty: a text opts nothing in, a new signup is needed."""
    phone_signup_url: str | None = None
    """Where a number signs up (``phone.signup_url``)."""

    @property
    def has_postal(self) -> bool:
        """Whether a postal address is known (then "nothing at all" objects to advertising by post too)."""
        return any(a.channel is Channel.PRINT for a in self.addresses)

    @property
    def proves_identity(self) -> bool:
        """Whether this link opens the person's data and may opt in (:func:`proves_identity`)."""
        return proves_identity(self.link)

    @property
    def paused(self) -> tuple[Address, ...]:
        """The addresses with a running pause."""
        return tuple(a for a in self.addresses if a.paused_until is not None)

    @property
    def all_paused_until(self) -> datetime | None:
        """The earliest end of the pauses when every address is paused (``None``: some address is not).

        An address stopped for good (:attr:`Address.stopped`) gets no marketing either way: it counts as paused
        (a pause of "everything" after a STOP or an objection is all paused), but a pause must run somewhere.
        """
        ends = [a.paused_until for a in self.addresses if not (a.stopped and a.paused_until is None)]
        return min(ends) if ends and all(end is not None for end in ends) else None  # type: ignore[type-var]

    @property
    def anything_to_withdraw(self) -> bool:
        """Whether "nothing from you at all" would change anything."""
        return any(r.can_withdraw for a in self.addresses for r in a.rows) or any(
            a.print_state in (Shown.POSTAL_ALLOWED, Shown.POSTAL_BLOCKED) for a in self.addresses
        )


_CHANNEL_ORDER = {channel: index for index, channel in enumerate(Channel)}


def _shown(state: State | None, channel_state: State | None) -> Shown:
    if channel_state in WITHDRAWN_STATES:
        return Shown.OBJECTED if channel_state is State.OBJECTED else Shown.WITHDRAWN
    if state is State.OPTED_IN:
        return Shown.RECEIVING
    if state is State.PENDING:
        return Shown.PENDING
    if state is State.OBJECTED:
        return Shown.OBJECTED
    if state is State.OPTED_OUT:
        return Shown.WITHDRAWN
    return Shown.NOT_RECEIVING


async def view(session: AsyncSession, link: PreferenceLink, lang: str | None = None) -> View:
    """The contact's addresses, each with every marketing purpose and its state (reads only)."""
    workspace = await workspaces.get_workspace(session, link.workspace_id)
    assert workspace is not None  # the link cascades with its workspace
    settings = WorkspaceSettings.load(workspace.settings)
    contact = await ledger.get_contact(session, link.contact_id)
    marketing = [p for p in await purposes.list_purposes(session, link.workspace_id) if p.kind == PurposeKind.MARKETING]
    consents = await ledger.consents_of(session, contact.id)
    states = {(c.contact_point_id, c.purpose_id): State(c.state) for c in consents}
    since = {(c.contact_point_id, c.purpose_id): c.since for c in consents}
    addresses = []
    points = sorted(
        await ledger.contact_points_of(session, contact.id), key=lambda p: _CHANNEL_ORDER[Channel(p.channel)]
    )
    pauses = await ledger.pauses_of(
        session, link.workspace_id, [key for p in points for key in p.suppression_keys], utcnow()
    )
    bound = _bound_point(link, points)
    blocked = await _suppressed_purposes(session, link.workspace_id, bound) if bound is not None else set()
    stopping = {  # the keys under which a permanent suppression stops every marketing purpose
        key
        for key, scope, _ in await ledger.suppressions_with_keys(
            session, link.workspace_id, [bytes(k) for p in points for k in p.suppression_keys]
        )
        if scope is not SuppressionScope.PURPOSE
    }
    customer = await _customer_rows(session, link, marketing)
    chosen = lang if lang in ("de", "en") else locale_of(contact.locale, settings.locale)
    for point in points:
        channel = Channel(point.channel)
        channel_state = states.get((point.id, None))
        paused = max((pauses[bytes(k)] for k in point.suppression_keys if bytes(k) in pauses), default=None)
        stopped = any(bytes(k) in stopping for k in point.suppression_keys)
        if channel is Channel.PRINT:
            # stopped for good as eligibility stops it (a withdrawn objection's suppression, a Robinson entry, a
            # sticker): the page never says post may come when it may not, nor that the person objected
            if channel_state in WITHDRAWN_STATES:
                shown = Shown.OBJECTED
            elif stopped:
                shown = Shown.POSTAL_BLOCKED
            else:
                shown = Shown.POSTAL_ALLOWED
            addresses.append(Address(point, mask(channel, point.value), (), shown, paused, stopped))
            continue
        rows = []
        for purpose in marketing:
            state = states.get((point.id, purpose.id))
            offer = _offer(state, purpose.id, blocked, bound=point is bound)
            notice = None
            if offer is Offer.BUTTON:
                notice = await _notice_for(session, purpose, [chosen, contact.locale, settings.locale])
                if notice is None:  # no text to agree to: no informed consent here, the channel's own way only
                    offer = Offer.OWN_PROOF
            shown = _shown(state, _channel_wins(since, point.id, purpose.id, channel_state))
            if (point.id, purpose.id) in customer and shown is Shown.NOT_RECEIVING:
                shown, offer = Shown.CUSTOMER, Offer.NONE
            rows.append(Row(purpose, shown, offer, notice))
        addresses.append(Address(point, mask(channel, point.value), tuple(rows), paused_until=paused, stopped=stopped))
    return View(
        link,
        contact,
        settings.brand or workspace.name,
        chosen,
        tuple(addresses),
        contact.timezone or settings.timezone,
        sms_from=settings.phone.sms_from,
        whatsapp_from=settings.phone.whatsapp_from,
        start_words=_start_words(settings),
        phone_signup_url=settings.phone.signup_url,
    )


def _start_words(settings: WorkspaceSettings) -> dict[str, str]:
    """By purpose key, the word a text from a number with no pending signup opts the purpose in with.

    As the Twilio webhook decides it (``app.twilio.service``): none without ``phone.keyword_only_opt_in``.
    """
    if not settings.phone.keyword_only_opt_in:
        return {}
    words: dict[str, str] = {}
    if settings.phone.default_purpose:
        words[settings.phone.default_purpose] = "START"
    for word, purpose in settings.phone.start_words.items():
        words.setdefault(purpose, word)
    return words


async def _customer_rows(
    session: AsyncSession, link: PreferenceLink, marketing: Sequence[Purpose]
) -> set[tuple[uuid.UUID, uuid.UUID]]:
    """(address, purpose) where the contact receives email as an existing customer (UWG §7(3)), as the gate says."""
    found: set[tuple[uuid.UUID, uuid.UUID]] = set()
    for purpose in marketing:
        if not purpose.similar_products_of:
            continue
        facts = await eligibility.point_facts(session, link.workspace_id, [link.contact_id], ["email"], purpose.id)
        for _, fact in facts:
            consent = effective_consent(fact)
            if is_existing_customer(fact, consent.state if consent else State.NONE):
                found.add((fact.id, purpose.id))
    return found


def _channel_wins(
    since: Mapping[tuple[uuid.UUID, uuid.UUID | None], datetime | None],
    point_id: uuid.UUID,
    purpose_id: uuid.UUID,
    channel_state: State | None,
) -> State | None:
    """The channel-level state where it is the later word (as the send gate decides); ``None`` where it is not.

    A fresh opt-in to one purpose after "nothing at all" is received, as the gate says, and shown so.
    """
    purpose_since, channel_since = since.get((point_id, purpose_id)), since.get((point_id, None))
    if purpose_since is not None and channel_since is not None and purpose_since > channel_since:
        return None
    return channel_state


def _offer(state: State | None, purpose_id: uuid.UUID, blocked: set[uuid.UUID | None], *, bound: bool) -> Offer:
    if state not in _NOT_OPTED_IN:
        return Offer.NONE
    if not bound:
        return Offer.OWN_PROOF
    return Offer.SUPPRESSED if None in blocked or purpose_id in blocked else Offer.BUTTON


def _bound_point(link: PreferenceLink, points: Sequence[ContactPoint]) -> ContactPoint | None:
    """The email address whose control this link proves, if it may opt in there; ``None`` for any other link.

    Not a link from a mail's footer (forwardable), not one naming no address or an address on another channel,
    and only a verified, reachable address (:func:`may_receive_link`).
    """
    if not proves_identity(link) or link.contact_point_id is None:
        return None
    for point in points:
        if point.id == link.contact_point_id and point.channel == Channel.EMAIL and may_receive_link(point):
            return point
    return None


async def _suppressed_purposes(
    session: AsyncSession, workspace_id: uuid.UUID, point: ContactPoint
) -> set[uuid.UUID | None]:
    """The purposes a permanent suppression of the address stops (``None`` in the set: every marketing purpose)."""
    found = await ledger.suppressions_with_keys(session, workspace_id, [bytes(k) for k in point.suppression_keys])
    return {None if scope is not SuppressionScope.PURPOSE else purpose_id for _, scope, purpose_id in found}


# --- changes -----------------------------------------------------------------------------------------------


class Action(enum.StrEnum):
    """What a POST of the page asks for (the form's ``action`` field)."""

    WITHDRAW = "withdraw"
    WITHDRAW_ALL = "withdraw_all"
    OBJECT_PRINT = "object_print"
    PAUSE = "pause"
    END_PAUSE = "end_pause"


OPT_IN = "opt_in"
"""The page's ``action`` for opting in again: the hosted page only (its link was mailed to the address), not the
JSON API, which a brand's own page calls with a link it may have got from anywhere."""


def evidence(link: PreferenceLink, meta: Mapping[str, Any], action: Action | str) -> dict[str, Any]:
    """The proof of a change made on the page: the request and the link that authorised it."""
    return {**meta, "source": SOURCE, "method": str(action), "preference_link_id": str(link.id)}


async def _marketing_purpose(session: AsyncSession, workspace_id: uuid.UUID, ref: str) -> Purpose:
    """A marketing purpose of the workspace named by its id (the page's forms) or its key (a brand's own page)."""
    try:
        purpose = await purposes.get_purpose(session, workspace_id, uuid.UUID(ref))
    except ValueError:
        purpose = await purposes.get_by_key(session, workspace_id, ref)
    if purpose is None or purpose.kind != PurposeKind.MARKETING:
        raise InvalidInput(
            "Unknown purpose: name a marketing purpose by its purpose_id or key.", code="purpose_not_found"
        )
    return purpose


def _own_point(points: Sequence[ContactPoint], point_id: str) -> ContactPoint:
    """The contact's own address named by a form field; anything else (another contact's id) is refused."""
    for point in points:
        if str(point.id) == point_id:
            return point
    raise InvalidInput("This address is not one of this link's.", code="not_this_contact")


async def withdraw(
    session: AsyncSession, link: PreferenceLink, *, point_id: str, purpose_id: str, proof: Mapping[str, Any]
) -> list[Applied]:
    """Withdraw one marketing purpose on one of the contact's addresses (idempotent)."""
    points = await ledger.contact_points_of(session, link.contact_id)
    point = _own_point(points, point_id)
    if point.channel == Channel.PRINT:
        raise InvalidInput(
            "Postal advertising is objected to, not withdrawn: use the action object_print.", code="use_object_print"
        )
    purpose = await _marketing_purpose(session, link.workspace_id, purpose_id)
    return await withdraw_point(
        session,
        link.workspace_id,
        point,
        trigger=Trigger.UNSUBSCRIBE,
        evidence=proof,
        actor=PERSON,
        purpose_id=purpose.id,
        repeat=False,
    )


async def object_to_print(
    session: AsyncSession, keys: Keys, link: PreferenceLink, proof: Mapping[str, Any]
) -> list[Applied]:
    """Art. 21 objection to postal advertising: print becomes ``objected`` and the address is suppressed."""
    points = await ledger.contact_points_of(session, link.contact_id)
    if not any(p.channel == Channel.PRINT for p in points):
        raise InvalidInput("No postal address is known for you.", code="no_contact_point")
    states = {
        c.contact_point_id: c.state for c in await ledger.consents_of(session, link.contact_id) if c.purpose_id is None
    }
    if all(states.get(p.id) == State.OBJECTED for p in points if p.channel == Channel.PRINT):
        return []  # already objected: a repeated click records nothing new
    _, applied = await object_to_marketing(
        session,
        keys,
        link.workspace_id,
        contact_ref=str(link.contact_id),
        address=None,
        scope="print",
        kind=ObjectionKind.ART21,
        evidence=proof,
        actor=PERSON,
    )
    return applied


async def withdraw_everything(
    session: AsyncSession, keys: Keys, link: PreferenceLink, proof: Mapping[str, Any]
) -> list[Applied]:
    """Nothing from you at all: every marketing purpose on every address withdrawn, postal advertising objected."""
    applied: list[Applied] = []
    points = await ledger.contact_points_of(session, link.contact_id)
    for point in points:
        if point.channel != Channel.PRINT:
            applied += await withdraw_point(
                session,
                link.workspace_id,
                point,
                trigger=Trigger.UNSUBSCRIBE,
                evidence=proof,
                actor=PERSON,
                repeat=False,
            )
    if any(p.channel == Channel.PRINT for p in points):
        applied += await object_to_print(session, keys, link, proof)
    return applied


class OptInSuppressed(Exception):
    """The address is on the do-not-contact list for the purpose: this page never lifts that."""


async def opt_in(
    session: AsyncSession,
    link: PreferenceLink,
    *,
    point_id: str,
    purpose_id: str,
    proof: Mapping[str, Any],
    notice_id: str | None = None,
) -> list[Applied]:
    """Opt in again to one marketing purpose on the email address this link proves control of.

    Refused (:class:`InvalidInput`) for any other link or address (a footer link, another address, another
    channel, an unverified or unreachable address), and (:class:`OptInSuppressed`) where a suppression stops the
    purpose: it is never lifted here. Records ``preference_opt_in`` with the notice the page showed beside the button
    (``notice_id``: one of this purpose's email notices, else refused), or without one the purpose's newest email
    notice in the contact's language; a purpose with no email notice is refused (no text, no informed consent). A
    purpose already opted in records nothing.
    """
    points = await ledger.contact_points_of(session, link.contact_id)
    point = _own_point(points, point_id)
    bound = _bound_point(link, points)
    if bound is None or bound.id != point.id:
        raise InvalidInput("This link cannot opt in this address.", code="opt_in_not_here")
    purpose = await _marketing_purpose(session, link.workspace_id, purpose_id)
    blocked = await _suppressed_purposes(session, link.workspace_id, point)
    if None in blocked or purpose.id in blocked:
        raise OptInSuppressed
    states = {c.purpose_id: State(c.state) for c in await ledger.consents_of_point(session, point.id)}
    if states.get(purpose.id) is State.OPTED_IN:
        return []
    contact = await ledger.get_contact(session, link.contact_id)
    workspace = await workspaces.get_workspace(session, link.workspace_id)
    assert workspace is not None
    notice: Notice | None
    if notice_id:
        notice = await _shown_notice(session, purpose, notice_id)
    else:
        lang = locale_of(contact.locale, WorkspaceSettings.load(workspace.settings).locale)
        notice = await _notice_for(session, purpose, [contact.locale, lang])
    if notice is None:
        raise InvalidInput("This purpose has no consent text for email to agree to.", code="notice_required")
    change = Change(point, purpose.id, Trigger.PREFERENCE_OPT_IN, proof, notice=notice)
    return await apply_changes(session, link.workspace_id, [change], PERSON)


async def _shown_notice(session: AsyncSession, purpose: Purpose, notice_id: str) -> Notice:
    """The notice a form says the page showed, else :class:`InvalidInput`.

    Any version of ``purpose``'s email notices: the one the person read, even if a newer one came since.
    """
    try:
        wanted = uuid.UUID(notice_id)
    except ValueError:
        raise InvalidInput("Unknown notice.", code="notice_not_found") from None
    found = (await purposes.notices_by_id(session, purpose.workspace_id, [wanted])).get(wanted)
    if found is None or found.purpose_id != purpose.id or Channel.EMAIL.value not in found.channels:
        raise InvalidInput("Unknown notice.", code="notice_not_found")
    return found


async def _notice_for(session: AsyncSession, purpose: Purpose, locales: Sequence[str | None]) -> Notice | None:
    """The purpose's newest email notice in the first of ``locales`` that has one (what the person opts in to)."""
    for locale in dict.fromkeys(loc for loc in locales if loc):
        notice = await purposes.latest_notice(session, purpose.id, locale)
        if notice is not None and Channel.EMAIL.value in notice.channels:
            return notice
    return None


# --- pauses --------------------------------------------------------------------------------------------------

#: The lengths of a pause the page offers, in weeks.
PAUSE_WEEKS = (1, 4, 12)
ALL_ADDRESSES = "all"
"""The form's ``point`` for every address of the contact at once."""


def _chosen_points(points: Sequence[ContactPoint], point_id: str) -> list[ContactPoint]:
    """The address a form names, or every address for :data:`ALL_ADDRESSES`."""
    if point_id == ALL_ADDRESSES:
        if not points:
            raise InvalidInput("No address is known for you.", code="no_contact_point")
        return list(points)
    return [_own_point(points, point_id)]


@dataclass(frozen=True, slots=True)
class Paused:
    """What a pause (or its end) recorded: the addresses, the end, and the ledger events."""

    points: tuple[ContactPoint, ...]
    until: datetime | None
    event_ids: tuple[uuid.UUID, ...]


async def pause(
    session: AsyncSession,
    keys: Keys,
    link: PreferenceLink,
    *,
    point_id: str,
    weeks: str,
    proof: Mapping[str, Any],
    now: datetime | None = None,
) -> Paused:
    """Pause all marketing to one address (or all of them) for 1, 4 or 12 weeks: it ends by itself.

    A ``paused`` suppression with an end under each address's keys, and a ledger event per address (the consent
    states stay as they are). Pausing again sets the new end. Transactional messages are not paused.
    """
    try:
        length = int(weeks)
    except ValueError:
        length = 0
    if length not in PAUSE_WEEKS:
        raise InvalidInput("A pause lasts 1, 4 or 12 weeks.", code="invalid_pause")
    chosen = _chosen_points(await ledger.contact_points_of(session, link.contact_id), point_id)
    until = (now or utcnow()) + timedelta(weeks=length)
    await ledger.pause_keys(session, suppression_rows(keys, link.workspace_id, chosen, SuppressionReason.PAUSED), until)
    noted = {**proof, "paused_until": until.isoformat(), "weeks": length}
    events = await record_notes(
        session, link.workspace_id, [Note(point, Trigger.PAUSE, noted) for point in chosen], PERSON
    )
    return Paused(tuple(chosen), until, tuple(events))


async def end_pause(
    session: AsyncSession, keys: Keys, link: PreferenceLink, *, point_id: str, proof: Mapping[str, Any]
) -> Paused:
    """End the running pause of one address (or of all of them) early; an address without one records nothing."""
    chosen = _chosen_points(await ledger.contact_points_of(session, link.contact_id), point_id)
    running = await ledger.pauses_of(  # one kept under an objection's row is ended too, and recorded
        session, link.workspace_id, [key for p in chosen for key in p.suppression_keys], utcnow(), kept=True
    )
    ended = [p for p in chosen if any(bytes(k) in running for k in p.suppression_keys)]
    rows = suppression_rows(keys, link.workspace_id, chosen, SuppressionReason.PAUSED)
    await ledger.end_pauses(session, link.workspace_id, [row["key"] for row in rows])
    events = await record_notes(
        session, link.workspace_id, [Note(point, Trigger.PAUSE_ENDED, proof) for point in ended], PERSON
    )
    return Paused(tuple(ended), None, tuple(events))
