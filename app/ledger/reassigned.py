"""Recycled phone numbers: a number went to someone else, so what its former owner said no longer speaks for it.

The rules (issue 19 item 5; CHANNEL_RULES.md §2 and §3):

- **Every holder of the number in the workspace**: an address belongs to one contact only, but the number's SMS
  and its WhatsApp address are two addresses, which may belong to two contacts. A number reassigned is
  reassigned for all of them, so both are covered, whichever contact the report names (the contact named must
  hold the number on one of the two channels: a typo must not end another person's consents).
- Each consent of those addresses **given before** ``reassigned_at`` (state ``opted_in`` or ``pending``, ``since``
  before the date) ends: a ``reassigned`` event moves it to ``expired``, dated ``reassigned_at``, with the date
  and who reported it as evidence. A consent given on or after the date is the new owner's and stays.
  A withdrawal stays as it is: it binds nobody new (the start word and a signup move on from ``opted_out``).
- **No suppression is kept for the new owner**: the suppressions of the number (SMS and WhatsApp keys) made
  before the date — an objection, an erasure's tombstone, a pause of the former owner — are deleted, so the new
  owner can opt in by texting the start word. Which reasons were lifted is in the events' evidence; where no
  consent ended, each address gets a ``reassigned`` note (its state stays) so that the lift is in the ledger.
  Suppressions made on or after the date stay (the new owner's own); and where the ledger records a no on the
  number since the date (a withdrawal, objection or pause: the new owner's), none is lifted, since a suppression
  said again keeps its first date and the keys cannot tell whose it is.
- **The number leaves its former owner's contact** (the API's report, which names the former holder; an import
  line names the number's holder as the CRM knows it now, so nothing moves there): an address held since before
  the date by a contact that existed before it moves, with its consents, to a new contact of its own (no
  external id, unverified): the new
  owner, who gets none of the former owner's transactional messages (they need a verified address of the
  contact) and whose START opts in that new contact, not the former owner's record. The history — ledger events,
  messages, deliveries — stays with the contact it was recorded for, so each person's export shows only their
  own. The CRM gives the former owner their new number as usual.
- Reachability is left alone: Twilio's STOP block (``provider_blocked``) holds until the new owner texts START,
  which lifts it there and here (:mod:`app.twilio.service`).
- Idempotent: repeating a report finds nothing given before the date, nothing to lift and nothing to move, and
  records nothing (the contact named once held the number: the ledger says so).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.domain.model import Channel, State, Trigger
from app.ledger import repository
from app.ledger.models import Contact, ContactPoint
from app.ledger.service import Actor, Applied, Change, Note, apply_changes, record_notes, require_contact
from app.lib.errors import InvalidInput
from app.lib.keys import Keys

#: The channels a phone number is an address on.
PHONE_CHANNELS = (Channel.SMS, Channel.WHATSAPP)
#: The states that a recycled number ends: the former owner's consent, or a request to them still open.
_ENDED = (State.OPTED_IN, State.PENDING)
#: A date this far ahead of our clock is taken as now (clock skew); later ones are refused.
FUTURE_SKEW = timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class Reassignment:
    """What reporting a recycled number did."""

    number: str
    points: list[ContactPoint]
    """The addresses holding the number (its SMS and WhatsApp addresses, of whichever contact)."""
    applied: list[Applied]
    """The ``reassigned`` events: one per consent ended, or one note per address when only suppressions went."""
    suppressions_lifted: list[str]
    """The reasons of the suppressions deleted (one per row and pepper version)."""


def check_date(reassigned_at: datetime, now: datetime) -> datetime:
    """``reassigned_at`` in UTC; 422 without a time zone or in the future."""
    if reassigned_at.tzinfo is None:
        raise InvalidInput(
            "'reassigned_at' needs a time zone (RFC 3339, e.g. 2026-03-01T00:00:00Z).", code="timezone_required"
        )
    try:  # year 1 at +14:00 has no UTC time
        utc = reassigned_at.astimezone(UTC)
    except OverflowError:
        raise InvalidInput("'reassigned_at' lies outside the UTC calendar.", code="invalid_reassigned_at") from None
    if utc > now + FUTURE_SKEW:
        raise InvalidInput("'reassigned_at' lies in the future.", code="reassigned_at_in_future")
    return min(utc, now)


async def report(
    session: AsyncSession,
    keys: Keys,
    workspace_id: uuid.UUID,
    *,
    contact_ref: str,
    number: str,
    reassigned_at: datetime,
    evidence: Mapping[str, Any],
    actor: Actor,
) -> tuple[Contact, Reassignment]:
    """The API's report: the contact must hold ``number`` (E.164) on SMS or WhatsApp; then :func:`reassign`."""
    contact = await require_contact(session, workspace_id, contact_ref)
    held = [p for p in await repository.contact_points_of(session, contact.id) if p.channel in PHONE_CHANNELS]
    if not any(p.value == number for p in held) and not await _held_once(session, workspace_id, contact, number):
        raise InvalidInput(
            "The contact holds this number neither for SMS nor for WhatsApp: nothing was changed.",
            code="number_not_held",
        )
    record = {**evidence, "reported_for_contact": str(contact.id)}
    reassigned = await reassign(
        session, keys, workspace_id, number, reassigned_at, evidence=record, actor=actor, detach=True
    )
    return contact, reassigned


async def reassign(
    session: AsyncSession,
    keys: Keys,
    workspace_id: uuid.UUID,
    number: str,
    reassigned_at: datetime,
    *,
    evidence: Mapping[str, Any],
    actor: Actor,
    detach: bool = False,
) -> Reassignment:
    """End what the number's former owner agreed to before ``reassigned_at`` and lift their suppressions.

    In the caller's transaction; ``number`` is E.164 and ``reassigned_at`` checked (:func:`check_date`). With
    ``detach`` the former owner's contact loses the number to a new contact (:func:`_detach`).
    """
    points = sorted(
        (
            p
            for p in await repository.contact_points_with_values(session, workspace_id, [number])
            if p.channel in PHONE_CHANNELS
        ),
        key=lambda p: str(p.id),
    )
    suppression_keys = [
        key for channel in PHONE_CHANNELS for key in keys.suppression_keys(channel.value, number).values()
    ]
    # a no said on the number since the date is the new owner's, and the keys cannot tell whose a suppression is:
    # then none is lifted (hostile review: a report dated before the new owner's STOP deleted it)
    if await repository.said_no_since(session, [p.id for p in points], reassigned_at):
        lifted: list[str] = []
    else:
        lifted = await repository.lift_suppressions(session, workspace_id, suppression_keys, reassigned_at)
    record = {**evidence, "reassigned_at": reassigned_at.isoformat(), "suppressions_lifted": lifted}
    changes = [
        Change(point, purpose_id, Trigger.REASSIGNED, record, occurred_at=reassigned_at)
        for point, purpose_id in await _given_before(session, workspace_id, points, reassigned_at)
    ]
    applied = await apply_changes(session, workspace_id, changes, actor, skip_not_allowed=True)
    if lifted and not any(a.event_id for a in applied):
        notes = await record_notes(session, workspace_id, [Note(p, Trigger.REASSIGNED, record) for p in points], actor)
        applied += [await _noted(session, point, event_id) for point, event_id in zip(points, notes, strict=True)]
    if detach:
        await _detach(session, workspace_id, points, reassigned_at)
    return Reassignment(number=number, points=points, applied=applied, suppressions_lifted=lifted)


async def _detach(
    session: AsyncSession, workspace_id: uuid.UUID, points: Sequence[ContactPoint], reassigned_at: datetime
) -> None:
    """Move the addresses the former owner's contact held since before the date to one new contact (the new owner).

    Held since, by the contact that holds the address now: its first ledger event on the address (an import dates
    a consent by ``captured_at``: a number migrated from another system today was held since then, newcomer review
    2026-12-05), else the later of the address's row and the contact's. Not the address's own first event: after
    a detach, the new owner's contact holds a row (and events) of the former owner's, and a repeated report must
    not move the number away from the new owner again (hostile review 2026-12-05).
    """
    first = await repository.first_events(session, points)
    former = []
    for point in points:
        held_since = first.get(point.id)
        if held_since is None:
            contact = await repository.get_contact(session, point.contact_id)
            held_since = max(point.created_at, contact.created_at)
        if held_since < reassigned_at:
            former.append(point)
    if not former:
        return
    owner = await repository.add_contact(session, workspace_id, None, None, None)
    await repository.detach_points(session, former, owner.id)


async def _held_once(session: AsyncSession, workspace_id: uuid.UUID, contact: Contact, number: str) -> bool:
    """Whether ``contact`` held ``number`` before a reassignment moved it away (a repeated report)."""
    points = [
        p.id
        for p in await repository.contact_points_with_values(session, workspace_id, [number])
        if p.channel in PHONE_CHANNELS
    ]
    return bool(points) and await repository.held_before(session, contact.id, points)


async def _given_before(
    session: AsyncSession, workspace_id: uuid.UUID, points: Sequence[ContactPoint], before: datetime
) -> list[tuple[ContactPoint, uuid.UUID | None]]:
    """The consents of ``points`` given (or asked for) before ``before``, read under lock.

    Locked in the order :func:`app.ledger.service.apply_changes` locks them (it locks them again, a no-op), so a
    start word arriving meanwhile is either seen here, and its consent stays, or waits until this commits.
    """
    wanted = sorted(
        [
            repository.ConsentKey(point.id, row.purpose_id, point.contact_id, point.channel)
            for point in points
            for row in await repository.consents_of_point(session, point.id)
        ],
        key=lambda k: (str(k.contact_point_id), str(k.purpose_id or "")),
    )
    locked = await repository.lock_consents(session, workspace_id, wanted)
    by_id = {point.id: point for point in points}
    return [
        (by_id[key.contact_point_id], key.purpose_id)
        for key in wanted
        if (consent := locked[key.contact_point_id, key.purpose_id]).state in _ENDED
        and consent.since is not None
        and consent.since < before
    ]


async def _noted(session: AsyncSession, point: ContactPoint, event_id: uuid.UUID) -> Applied:
    """A note as a change answers it: the address's channel-level state, which it leaves as it is."""
    rows = await repository.consents_of_point(session, point.id)
    state = next((State(r.state) for r in rows if r.purpose_id is None), State.NONE)
    return Applied(
        consent_id=None,
        contact_point_id=point.id,
        channel=Channel(point.channel),
        purpose_id=None,
        from_state=state,
        to_state=state,
        event_id=event_id,
    )
