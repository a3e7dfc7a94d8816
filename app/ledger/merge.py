"""Identity merge: the duplicate's addresses, consents, messages and external id move onto the surviving contact.

The rules (issue 19; CHANNEL_RULES.md E11):

- An address belongs to one contact only, so each address keeps its own consents and history.
- A **contact-wide** statement of either contact covers the other's addresses too, and there the **most
  restrictive state wins** (objection > opt-out > declined > expired > pending > opted in), whatever the
  timestamps: a withdrawal on every channel (``channel: all``), "nothing from you at all" on the preference page,
  an objection to all marketing, and an objection to postal advertising (for the other's postal addresses). A
  statement counts while it stands: a later opt-in of that contact to the same purpose ends it.
- Both histories stay in the ledger. Each address gets a ``merged`` event naming both contacts (on its
  channel-level consent; any consent the merge tightens gets one of its own), with the statement that covered it.
- The duplicate's row stays as a stub, ``merged_into`` the survivor: its id (and its external id, unless that
  moved to the survivor) answers 409 ``contact_merged`` naming the survivor; a signup or import naming that
  external id lands on the survivor. The survivor's history includes the duplicate's events; an erasure of the
  survivor erases both.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.domain.model import Channel, ObjectionKind, PurposeKind, State, SuppressionScope, Trigger
from app.domain.transitions import most_restrictive
from app.ledger import repository
from app.ledger.actions import CONTACT_WIDE
from app.ledger.models import Consent, ConsentEvent, Contact, ContactPoint
from app.ledger.service import Actor, Applied, Change, Note, apply_changes, record_notes, refuse_merged, require_contact
from app.lib.errors import Conflict, InvalidInput
from app.lib.orm import utcnow
from app.purposes import repository as purposes

#: Where the person said no after all: the states a statement leaves.
_NO = (State.OPTED_OUT, State.OBJECTED)


@dataclass(frozen=True, slots=True)
class Statement:
    """A contact-wide no: which purpose (``None``: every marketing purpose) on which channels, by which event."""

    purpose_id: uuid.UUID | None
    every_channel: bool
    """``False``: postal advertising only (an objection to print)."""
    seq: int | None
    """The event's place in the chain (``None`` while it waits for the sealer)."""
    event_id: uuid.UUID
    """The event (named in the evidence of the ``merged`` events it causes, whether or not it is sealed yet)."""
    order: int
    """Its place in the contact's history (what the statements are sorted by)."""
    excepted: frozenset[uuid.UUID] = frozenset()
    """Purposes the contact opted in to again after a no for every purpose: the no stands for the others."""


@dataclass(frozen=True, slots=True)
class Merged:
    """What a merge did."""

    survivor: Contact
    duplicate_id: uuid.UUID
    moved: dict[str, int]
    applied: list[Applied]


def _kind(event: ConsentEvent) -> tuple[bool, bool] | None:
    """Whether the event is a contact-wide no, and if so whether it covers every channel (else print only)."""
    evidence = ((event.personal or {}).get("evidence")) or {}
    if event.to_state not in _NO:
        return None
    if evidence.get("scope") == SuppressionScope.ALL_MARKETING or evidence.get("method") == "withdraw_all":
        return True, True
    if evidence.get("reach") == CONTACT_WIDE["reach"]:  # a withdrawal for every channel at once
        return True, True
    if (
        event.channel == Channel.PRINT
        and event.trigger == Trigger.OBJECTION
        and evidence.get("kind") in (ObjectionKind.PERSONAL, ObjectionKind.ART21)
    ):
        return True, False
    return None


def statements(events: Sequence[ConsentEvent]) -> list[Statement]:
    """The contact-wide statements of a contact's history that still stand.

    Only an opt-in by the person ends one (a pending signup does not: anyone may type an address into a form): an
    opt-in to a purpose ends a no for that purpose, and takes that purpose out of a no for every purpose; lifting
    a print objection ends a no to postal advertising.
    """
    found: dict[tuple[uuid.UUID | None, bool], Statement] = {}
    for order, event in enumerate(events):  # oldest first
        kind = _kind(event)
        if kind is not None:
            key = (event.purpose_id, kind[1])
            found[key] = Statement(event.purpose_id, kind[1], event.seq, event.id, order)
            continue
        if event.channel == Channel.PRINT and event.trigger == Trigger.OBJECTION_WITHDRAWN:
            found.pop((None, False), None)
        elif event.to_state == State.OPTED_IN and event.from_state != State.OPTED_IN:
            if event.purpose_id is None:
                found.pop((None, True), None)
                continue
            found.pop((event.purpose_id, True), None)
            if (every := found.get((None, True))) is not None:
                found[None, True] = replace(every, excepted=every.excepted | {event.purpose_id})
    return sorted(found.values(), key=lambda s: s.order)


def targets(
    points: Iterable[ContactPoint],
    consents: Iterable[Consent],
    covering: Iterable[Statement],
    marketing: frozenset[uuid.UUID],
) -> dict[tuple[uuid.UUID, uuid.UUID | None], tuple[State, Statement]]:
    """The state each consent of ``points`` must at least reach under ``covering`` statements, and by which."""
    held = {(c.contact_point_id, c.purpose_id) for c in consents}
    wanted: dict[tuple[uuid.UUID, uuid.UUID | None], tuple[State, Statement]] = {}
    for point in points:
        on_print = point.channel == Channel.PRINT
        for statement in covering:
            if on_print:
                wanted[point.id, None] = (State.OBJECTED, statement)
                continue
            if not statement.every_channel:
                continue
            if statement.purpose_id is not None:
                wanted[point.id, statement.purpose_id] = (State.OPTED_OUT, statement)
                continue
            if not statement.excepted:  # the channel-level row would cover the purposes said yes to again too
                wanted[point.id, None] = (State.OPTED_OUT, statement)
            for purpose_id in marketing - statement.excepted:
                if (point.id, purpose_id) in held:
                    wanted[point.id, purpose_id] = (State.OPTED_OUT, statement)
    return wanted


async def merge(
    session: AsyncSession,
    workspace_id: uuid.UUID,
    *,
    survivor_ref: str,
    duplicate_ref: str,
    evidence: Mapping[str, Any],
    actor: Actor,
) -> Merged:
    """Merge the duplicate into the survivor, in the caller's transaction (see the module's rules)."""
    survivor, duplicate = await _lock_pair(session, workspace_id, survivor_ref, duplicate_ref)
    marketing = frozenset(
        p.id for p in await purposes.list_purposes(session, workspace_id) if p.kind == PurposeKind.MARKETING
    )
    sides = {}
    for contact in (survivor, duplicate):
        sides[contact.id] = (
            list(await repository.contact_points_of(session, contact.id)),
            list(await repository.consents_of(session, contact.id)),
            statements(await repository.events_of_contact(session, contact.id, 0, None)),
        )
    wanted: dict[tuple[uuid.UUID, uuid.UUID | None], tuple[State, Statement]] = {}
    for own, other in ((survivor.id, duplicate.id), (duplicate.id, survivor.id)):
        points, consents, _ = sides[own]
        for key, (state, statement) in targets(points, consents, sides[other][2], marketing).items():
            if key not in wanted or most_restrictive((state, wanted[key][0])) is state:
                wanted[key] = (state, statement)

    moved = await repository.move_contact_references(session, survivor.id, duplicate.id)
    now = utcnow()
    await _rehome(session, workspace_id, survivor, duplicate, now)
    points = [p for contact_id in (survivor.id, duplicate.id) for p in sides[contact_id][0]]
    await repository.reload(session, points)  # their contact is the survivor now
    states = {(c.contact_point_id, c.purpose_id): State(c.state) for side in sides.values() for c in side[1]}
    record = {**evidence, "merge": {"survivor": str(survivor.id), "duplicate": str(duplicate.id)}}
    changes, untouched = _merged_events(points, states, wanted, record)
    applied = await apply_changes(session, workspace_id, changes, actor)
    # the addresses the merge tightens nothing on get a note: it must not move the consent's ``since``, or the
    # channel-level row (``none``) would look newer than the purpose's consent and hide it from the gate
    notes = [Note(point, Trigger.MERGED, dict(record)) for point in untouched]
    noted = await record_notes(session, workspace_id, notes, actor)
    applied += [
        Applied(
            consent_id=None,
            contact_point_id=point.id,
            channel=Channel(point.channel),
            purpose_id=None,
            from_state=states.get((point.id, None), State.NONE),
            to_state=states.get((point.id, None), State.NONE),
            event_id=event_id,
        )
        for point, event_id in zip(untouched, noted, strict=True)
    ]
    await repository.queue_contact_merged(session, workspace_id, survivor, duplicate.id, now)
    return Merged(survivor=survivor, duplicate_id=duplicate.id, moved=moved, applied=applied)


async def _lock_pair(
    session: AsyncSession, workspace_id: uuid.UUID, survivor_ref: str, duplicate_ref: str
) -> tuple[Contact, Contact]:
    """Both contacts, checked and locked (in one order: two merges of the same pair cannot deadlock)."""
    survivor = await require_contact(session, workspace_id, survivor_ref)
    duplicate = await repository.find_contact(session, workspace_id, duplicate_ref)
    if duplicate is None:
        raise InvalidInput("No contact with this id or external id to merge.", code="duplicate_not_found")
    if duplicate.merged_into == survivor.id:
        raise Conflict("This contact is already merged into the survivor.", code="already_merged")
    refuse_merged(duplicate)
    if duplicate.id == survivor.id:
        raise InvalidInput("A contact cannot be merged into itself.", code="merge_into_itself")
    for contact_id in sorted((survivor.id, duplicate.id)):
        if not await repository.lock_contact(session, workspace_id, contact_id):
            raise Conflict("The contact changed meanwhile (erased or merged); try again.", code="contact_changed")
    await repository.reload(session, (survivor, duplicate))  # what a concurrent merge changed before the locks
    refuse_merged(survivor)
    refuse_merged(duplicate)
    return survivor, duplicate


async def _rehome(
    session: AsyncSession, workspace_id: uuid.UUID, survivor: Contact, duplicate: Contact, now: datetime
) -> None:
    """The duplicate becomes a stub of the survivor, and so do the stubs merged into it.

    Its external id moves when the survivor has none; its locale and time zone fill the survivor's gaps.
    """
    await repository.repoint_stubs(session, workspace_id, survivor.id, duplicate.id)
    external_id = duplicate.external_id if survivor.external_id is None else None
    duplicate.merged_into, duplicate.merged_at = survivor.id, now
    if external_id is not None:
        duplicate.external_id = None
        await repository.write(session)  # the unique external id is free before the survivor takes it
        survivor.external_id = external_id
    survivor.locale = survivor.locale or duplicate.locale
    survivor.timezone = survivor.timezone or duplicate.timezone
    await repository.write(session)


def _merged_events(
    points: Sequence[ContactPoint],
    states: Mapping[tuple[uuid.UUID, uuid.UUID | None], State],
    wanted: Mapping[tuple[uuid.UUID, uuid.UUID | None], tuple[State, Statement]],
    record: Mapping[str, Any],
) -> tuple[list[Change], list[ContactPoint]]:
    """The ``merged`` changes of the consents the merge tightens, and the addresses where it tightens nothing."""
    changes: list[Change] = []
    untouched: list[ContactPoint] = []
    for point in points:
        purposes = sorted((k for k in wanted if k[0] == point.id and k[1] is not None), key=lambda k: str(k[1]))
        keys: list[tuple[uuid.UUID, uuid.UUID | None]] = [(point.id, None), *purposes]
        tightened = False
        for key in keys:
            current = states.get(key, State.NONE)
            if key not in wanted:
                continue
            target, statement = wanted[key]
            if most_restrictive((current, target)) is current:
                continue
            # the statement's event by id (its seq is null while it waits for the sealer, in a race)
            covered = {"covered_by_seq": statement.seq, "covered_by_event_id": str(statement.event_id)}
            changes.append(Change(point, key[1], Trigger.MERGED, {**record, **covered}, target=target))
            tightened = True
        if not tightened:
            untouched.append(point)
    return changes, untouched
