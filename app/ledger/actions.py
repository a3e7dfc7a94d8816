"""Withdrawals and objections: which consents they touch, recorded through :func:`apply_changes`.

- A withdrawal of one purpose withdraws that purpose on the chosen channel(s). A withdrawal of ``all``
  withdraws every marketing purpose *and* the channel-level row (``purpose_id`` NULL), so purposes created
  later are covered too. Transactional purposes rest on the contract, not on consent, and are not touched.
- An objection (Art. 21, "Keine Werbung" sticker, Robinson list) is channel-level: print becomes
  ``objected``; with scope ``all_marketing`` every other channel of the person is withdrawn too. Objections
  also write suppression keys, which outlive erasure of the contact.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.domain.identifiers import PostalAddress, email_suppression_form
from app.domain.model import (
    WITHDRAWN_STATES,
    Channel,
    ObjectionKind,
    PurposeKind,
    SuppressionReason,
    SuppressionScope,
    SuppressionSource,
    Trigger,
    VerifiedVia,
)
from app.ledger import repository, sealer, service
from app.ledger.models import Consent, ConsentEvent, Contact, ContactPoint, Suppression
from app.ledger.service import Actor, Applied, Change, add_point, apply_changes, refuse_merged, require_contact
from app.lib.errors import Conflict, InvalidInput
from app.lib.keys import Keys
from app.lib.orm import utcnow
from app.purposes import repository as purposes
from app.purposes.service import require_purpose

ALL = "all"
#: The reason an objection's suppressions are written with, by how it reached us: a sticker is no Art. 21
#: objection (CHANNEL_RULES.md D7), and a Robinson entry is the list's.
OBJECTION_REASONS = {
    ObjectionKind.PERSONAL: SuppressionReason.OBJECTION_ART21,
    ObjectionKind.ART21: SuppressionReason.OBJECTION_ART21,
    ObjectionKind.STICKER: SuppressionReason.OBJECTION_STICKER,
    ObjectionKind.ROBINSON: SuppressionReason.ROBINSON,
}
#: Evidence of a withdrawal made for every channel of the contact at once (``channel: all``): a statement of the
#: person, not of one address, which a merge extends to the other contact's addresses (:mod:`app.ledger.merge`).
CONTACT_WIDE = {"reach": "contact"}

#: The trigger that withdraws consent on each channel (print has no consent to withdraw: it objects).
_WITHDRAW = {
    Channel.EMAIL: Trigger.UNSUBSCRIBE,
    Channel.SMS: Trigger.UNSUBSCRIBE,
    Channel.WHATSAPP: Trigger.UNSUBSCRIBE,
    Channel.APP_PUSH: Trigger.UNSUBSCRIBE,
    Channel.WEB_PUSH: Trigger.UNSUBSCRIBE,
    Channel.PRINT: Trigger.OBJECTION,
}


def print_value(address: PostalAddress) -> str:
    """The print contact point's value: person level when a name is known, household level otherwise."""
    return f"{address.key}#{address.name_key}" if address.name_key else address.key


async def withdraw(
    session: AsyncSession,
    workspace_id: uuid.UUID,
    *,
    contact_ref: str,
    channel: str,
    purpose_key: str,
    evidence: Mapping[str, Any],
    actor: Actor,
) -> tuple[Contact, list[Applied]]:
    """Withdraw consent of one contact for one purpose or ``all``, on one channel or ``all``."""
    contact = await require_contact(session, workspace_id, contact_ref)
    points = [p for p in await repository.contact_points_of(session, contact.id) if channel in (ALL, p.channel)]
    if not points:
        raise InvalidInput(
            "The contact has no address on this channel, so there is nothing to withdraw.", code="no_contact_point"
        )
    changes: list[Change] = []
    if channel == ALL:
        evidence = {**evidence, **CONTACT_WIDE}
    if purpose_key == ALL:
        marketing = [
            p.id for p in await purposes.list_purposes(session, workspace_id) if p.kind == PurposeKind.MARKETING
        ]
        for point in points:
            trigger = _WITHDRAW[Channel(point.channel)]
            purpose_ids: list[uuid.UUID | None] = [None] if point.channel == Channel.PRINT else [None, *marketing]
            changes += [Change(point, purpose_id, trigger, evidence) for purpose_id in purpose_ids]
    else:
        purpose = await require_purpose(session, workspace_id, purpose_key)
        if purpose.kind != PurposeKind.MARKETING:
            raise InvalidInput(
                f"'{purpose.key}' is transactional: it rests on the contract, not on consent. Use an objection or "
                "an erasure request to stop it.",
                code="purpose_not_withdrawable",
            )
        for point in points:
            if point.channel == Channel.PRINT:
                changes.append(Change(point, None, Trigger.OBJECTION, {**evidence, "kind": ObjectionKind.PERSONAL}))
            else:
                changes.append(Change(point, purpose.id, _WITHDRAW[Channel(point.channel)], evidence))
    return contact, await apply_changes(session, workspace_id, changes, actor)


async def object_to_marketing(
    session: AsyncSession,
    keys: Keys,
    workspace_id: uuid.UUID,
    *,
    contact_ref: str | None,
    address: PostalAddress | None,
    scope: str,
    kind: ObjectionKind,
    evidence: Mapping[str, Any],
    actor: Actor,
) -> tuple[Contact, list[Applied]]:
    """Record an objection for a contact and/or a postal address; creates the contact for an unknown address."""
    contact: Contact | None = await require_contact(session, workspace_id, contact_ref) if contact_ref else None
    point: ContactPoint | None = None
    if address is not None:
        value = print_value(address)
        point = await repository.find_contact_point(session, workspace_id, Channel.PRINT, value)
        if point is None:
            if contact is None:
                contact = await repository.add_contact(session, workspace_id, None, None, None)
            point = await add_point(
                session,
                keys,
                workspace_id,
                contact_id=contact.id,
                channel=Channel.PRINT,
                value=value,
                details=postal_details(address),
                verified=VerifiedVia.API,  # objections come from keys that may write consents
            )
        elif contact is None:
            contact = await repository.get_contact(session, point.contact_id)
    assert contact is not None
    points = list(await repository.contact_points_of(session, contact.id))
    if point is not None and point.id not in {p.id for p in points}:
        points.append(point)  # the address is known under another contact: the objection still binds it
    affected = [p for p in points if p.channel == Channel.PRINT or scope == SuppressionScope.ALL_MARKETING]
    if not any(p.channel == Channel.PRINT for p in affected) and scope == "print":
        raise InvalidInput(
            "No postal address is known for this contact; send 'postal_address' with the objection.",
            code="postal_address_required",
        )
    if not affected:
        raise InvalidInput("The contact has no address the objection could apply to.", code="no_contact_point")
    detail = {**evidence, "kind": kind.value, "scope": scope}
    trigger = Trigger.ROBINSON_MATCH if kind is ObjectionKind.ROBINSON else Trigger.OBJECTION
    changes = [Change(p, None, trigger if p.channel == Channel.PRINT else Trigger.OBJECTION, detail) for p in affected]
    applied = await apply_changes(session, workspace_id, changes, actor)
    reason = OBJECTION_REASONS[kind]
    rows = suppression_rows(keys, workspace_id, affected, reason, households=kind is ObjectionKind.STICKER)
    await repository.add_suppressions(session, rows)
    return contact, applied


@dataclass(frozen=True, slots=True)
class Lifted:
    """What withdrawing an objection recorded, and what still stops print to the contact's postal addresses."""

    contact: Contact
    applied: list[Applied]
    still_blocked_by: list[SuppressionSource]
    """The sources of the suppressions in force under the addresses' keys after the withdrawal, sorted."""
    shared_with_another_contact: list[Channel]
    """The channels where the objection's suppression was not lifted: another contact's address has the same key."""


#: The suppression reason a person's withdrawal of their objection lifts: that of their own (Art. 21) objection. A
#: sticker's is the household's, a Robinson entry's the list's: the person's withdrawal lifts neither.
LIFTED_BY_WITHDRAWAL = SuppressionReason.OBJECTION_ART21


async def withdraw_objection(
    session: AsyncSession,
    keys: Keys,
    workspace_id: uuid.UUID,
    contact_ref: str,
    *,
    evidence: Mapping[str, Any],
    actor: Actor,
) -> Lifted:
    """The person lifts their objection (with proof): print returns to ``none`` (legitimate interest).

    The objection's own source (``objection_art21``) is taken away from the suppressions it wrote: those of all
    marketing under the keys of the contact's addresses themselves (:func:`suppression_rows`, no household key: a
    sticker wrote that one), on the channels the objections withdrawn covered (:func:`repository.objection_scopes`:
    print, and every channel if one of them was to all marketing). ``reasons`` do not say who wrote them: a key that
    an address of another contact also has (an email address differing only in case, a household's key) may hold
    that contact's objection, so nothing is lifted under it (``shared_with_another_contact`` names its channel). An
    erased contact has no address left, but its erasure's source stays on its keys and keeps blocking them. A
    suppression left without a source goes; one that an erasure, a complaint, an unsubscribe, a sticker or an
    unrecorded source (a row older than migration 0047) also holds stays, and a pause kept under it runs on.
    ``still_blocked_by`` names the sources of what is left under the postal addresses' keys: while it is not
    empty, print is not sent. The other channels' consents stay withdrawn (they come back by a fresh opt-in).
    """
    contact = await require_contact(session, workspace_id, contact_ref)
    points = list(await repository.contact_points_of(session, contact.id))
    postal = [p for p in points if p.channel == Channel.PRINT]
    if not postal:
        raise InvalidInput("The contact has no postal address.", code="no_contact_point")
    every_channel = SuppressionScope.ALL_MARKETING in await repository.objection_scopes(session, contact.id)
    changes = [Change(p, None, Trigger.OBJECTION_WITHDRAWN, evidence) for p in postal]
    applied = await apply_changes(session, workspace_id, changes, actor)
    covered = points if every_channel else postal
    # one identifier per address, under every key version: lifted or kept as a whole
    written = {
        p.id: [bytes(row["key"]) for row in suppression_rows(keys, workspace_id, [p], LIFTED_BY_WITHDRAWAL)]
        for p in covered
    }
    every_key = [key for group in written.values() for key in group]
    await repository.lock_suppressions(session, workspace_id, every_key)  # then who else holds them is settled
    held = await repository.keys_held_by_others(session, workspace_id, contact.id, every_key)
    shared = {p.id for p in covered if held.intersection(written[p.id])}
    lifted = [key for point_id, group in written.items() if point_id not in shared for key in group]
    await repository.lift_reason(session, workspace_id, lifted, LIFTED_BY_WITHDRAWAL)
    now = utcnow()
    standing = await repository.suppressions_of(
        session, workspace_id, sorted({bytes(key) for point in postal for key in point.suppression_keys})
    )
    in_force = [s for s in standing if s.until is None or s.until > now]
    still = sorted({source for s in in_force for source in sources_of(s)})
    return Lifted(
        contact=contact,
        applied=applied,
        still_blocked_by=still,
        shared_with_another_contact=sorted({Channel(p.channel) for p in covered if p.id in shared}),
    )


def sources_of(suppression: Suppression) -> set[SuppressionSource]:
    """The sources a suppression names; ``paused`` on a row without an end is an unknown one (``unrecorded``).

    A pause's own row has an end, and one kept under a permanent row is in ``paused_until``: ``paused`` in the
    ``reasons`` of a row without an end is what code older than migration 0047 (running during a rolling deploy)
    left when it made a pause permanent without recording its source.
    """
    sources = {SuppressionSource(source) for source in suppression.reasons}
    if suppression.until is None and SuppressionSource.PAUSED in sources:
        sources = (sources - {SuppressionSource.PAUSED}) | {SuppressionSource.UNRECORDED}
    return sources


async def add_postal_address(
    session: AsyncSession, keys: Keys, workspace_id: uuid.UUID, contact: Contact, address: PostalAddress
) -> ContactPoint:
    """The contact's print address (person level when named); one known under another contact is a conflict."""
    value = print_value(address)
    point = await repository.find_contact_point(session, workspace_id, Channel.PRINT, value)
    if point is not None:
        if point.contact_id != contact.id:
            raise Conflict(
                "This postal address (and name) belongs to another contact.", code="address_of_another_contact"
            )
        return point
    return await add_point(
        session,
        keys,
        workspace_id,
        contact_id=contact.id,
        channel=Channel.PRINT,
        value=value,
        details=postal_details(address),
        verified=VerifiedVia.API,  # only keys that may write consents add postal addresses
    )


def postal_details(address: PostalAddress) -> dict[str, Any]:
    """What a print contact point stores of a postal address."""
    return {
        "name": address.name,
        "street": address.street,
        "house_number": address.house_number,
        "postcode": address.postcode,
        "city": address.city,
        "country": address.country,
        "address_key": address.key,
        "name_key": address.name_key,
    }


def suppression_rows(
    keys: Keys,
    workspace_id: uuid.UUID,
    points: Sequence[ContactPoint],
    reason: SuppressionReason,
    *,
    households: bool = False,
) -> list[dict[str, Any]]:
    """Rows suppressing every marketing purpose for ``points`` (``households``: a sticker covers the address)."""
    rows: dict[tuple[bytes, int], dict[str, Any]] = {}
    for point in points:
        identifiers = [email_suppression_form(point.value) if point.channel == Channel.EMAIL else point.value]
        if point.channel == Channel.PRINT and households:
            identifiers.append(point.details.get("address_key", point.value))  # the whole household
        for identifier in identifiers:
            for row in identifier_suppression_rows(keys, workspace_id, point.channel, identifier, reason):
                rows[row["key"], row["key_version"]] = row
    return list(rows.values())


def identifier_suppression_rows(
    keys: Keys, workspace_id: uuid.UUID, channel: str, identifier: str, reason: SuppressionReason
) -> list[dict[str, Any]]:
    """Rows suppressing every marketing purpose for one normalised identifier (also one no contact has)."""
    return [
        {
            "workspace_id": workspace_id,
            "key": key,
            "key_version": version,
            "channel": channel,
            "scope": SuppressionScope.ALL_MARKETING.value,
            "purpose_id": None,
            "reason": reason.value,
        }
        for version, key in keys.suppression_keys(channel, identifier).items()
    ]


async def withdraw_point(
    session: AsyncSession,
    workspace_id: uuid.UUID,
    point: ContactPoint,
    *,
    trigger: Trigger,
    evidence: Mapping[str, Any],
    actor: Actor,
    purpose_id: uuid.UUID | None = None,
    repeat: bool = True,
) -> list[Applied]:
    """Withdraw one address: one purpose, or (``purpose_id`` None) the channel-level row and every marketing purpose.

    ``repeat=False`` leaves rows that are already withdrawn alone (a retried one-click POST records nothing new);
    with ``repeat`` a renewed request is recorded again, as evidence. Disallowed transitions are skipped.
    """
    if sealer.deferred() and service.changes_on_driver():
        driver = await repository.transaction_driver(session)
        if driver is not None:  # a STOP flood's path: the rows read and locked in one statement, written in one
            locked = await repository.lock_point_consents_on_driver(
                driver, workspace_id, point, purpose_id=purpose_id, repeat=repeat
            )
            if not repeat:  # as locked: a retry that waited for its first try's lock finds the row withdrawn
                locked = [(p, row) for p, row in locked if row.state not in WITHDRAWN_STATES]
            changes = [Change(point, p, trigger, evidence) for p, _ in locked]
            consents = {(point.id, p): row for p, row in locked}
            return await service.record_locked(session, workspace_id, changes, consents, actor, driver=driver)
    rows = await repository.point_consent_kinds(session, workspace_id, point.id)  # one read
    if purpose_id is not None:
        purpose_ids: list[uuid.UUID | None] = [purpose_id]
    else:
        marketing = (p for p, _, kind in rows if p is not None and kind == PurposeKind.MARKETING)
        purpose_ids = [None, *sorted(marketing, key=str)]
    if not repeat:
        states = {p: state for p, state, _ in rows}
        purpose_ids = [p for p in purpose_ids if states.get(p) not in WITHDRAWN_STATES]
    changes = [Change(point, p, trigger, evidence) for p in purpose_ids]
    unless = () if repeat else WITHDRAWN_STATES
    return await apply_changes(session, workspace_id, changes, actor, skip_not_allowed=True, unless=unless)


@dataclass(frozen=True, slots=True)
class Records:
    """Everything the ledger holds about one contact (for subject access)."""

    contact: Contact
    points: Sequence[ContactPoint]
    consents: Sequence[Consent]
    events: Sequence[ConsentEvent]
    suppressions: Sequence[Suppression]
    """The workspace's suppressions under any key of the contact's addresses, oldest first."""


async def records_of(session: AsyncSession, workspace_id: uuid.UUID, contact: Contact) -> Records:
    """The contact's addresses, consents with an event, events, and the suppressions covering the addresses."""
    points = list(await repository.contact_points_of(session, contact.id))
    return Records(
        contact=contact,
        points=points,
        consents=[c for c in await repository.consents_of(session, contact.id) if c.last_event_id is not None],
        events=list(await repository.events_of_contact(session, contact.id, 0, None)),
        suppressions=await repository.suppressions_of(
            session, workspace_id, sorted({key for point in points for key in point.suppression_keys})
        ),
    )


@dataclass(frozen=True, slots=True)
class Closed:
    """What the ledger recorded when a contact was erased."""

    contact_id: uuid.UUID
    point_ids: tuple[uuid.UUID, ...]
    event_ids: tuple[uuid.UUID, ...]
    """The erasure events, one per address."""
    suppressions: int
    """Suppression rows that now cover the addresses."""
    events: int
    """The contact's ledger events, the erasure's included (they stay; their evidence goes)."""


async def close_for_erasure(
    session: AsyncSession,
    keys: Keys,
    workspace_id: uuid.UUID,
    contact_ref: str,
    *,
    evidence: Mapping[str, Any],
    actor: Actor,
) -> Closed | None:
    """The ledger's first steps of an erasure: a last ``erasure`` event and suppression keys for every address.

    The contact stays locked until the transaction ends. ``None`` when the workspace has no such contact (any more).
    """
    found = await repository.find_contact(session, workspace_id, contact_ref)
    # locked: a concurrent erasure of the same contact waits here, then finds it gone
    if found is None or not await repository.lock_contact(session, workspace_id, found.id):
        return None
    refuse_merged(found)  # the person is the survivor now: erase that one
    # the contact's events that wait for the sealer stay waiting until the erasure has removed their evidence: the
    # sealer would otherwise announce them (consent.changed, naming the contact) between the webhooks' erasure and
    # the ledger's (the sealer passes over locked events, and seals none after them)
    await repository.lock_unsealed_of_contact(session, workspace_id, found.id)
    points = list(await repository.contact_points_of(session, found.id))
    applied = await apply_changes(
        session, workspace_id, [Change(point, None, Trigger.ERASURE, evidence) for point in points], actor
    )
    await repository.add_suppressions(session, suppression_rows(keys, workspace_id, points, SuppressionReason.ERASURE))
    suppressions = await repository.count_suppressions(
        session, workspace_id, sorted({key for point in points for key in point.suppression_keys})
    )
    return Closed(
        contact_id=found.id,
        point_ids=tuple(p.id for p in points),
        event_ids=tuple(a.event_id for a in applied if a.event_id is not None),
        suppressions=suppressions,
        events=await repository.count_events_of(session, workspace_id, found.id),
    )
