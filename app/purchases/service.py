"""Recording purchases: the address, the sale and the ledger event that is the evidence of UWG §7(3).

A purchase is a ``purchase`` note on the email address (the chain's event moves no consent; its legal basis is
``uwg_7_3``). It gives no basis by itself: eligibility asks for one in a category the purpose names, and for no
withdrawal or objection ever recorded for the address (:mod:`app.domain.gate`). So a purchase after an objection is
recorded all the same, and brings nothing back.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from app.domain.identifiers import InvalidIdentifier, mask, normalise_email
from app.domain.model import Channel, LegalBasis, Trigger, VerifiedVia
from app.ledger import repository as ledger
from app.ledger.models import ContactPoint
from app.ledger.service import Actor, Note, add_point, record_notes, require_contact
from app.lib.errors import Conflict, InvalidInput
from app.lib.inputs import in_utc
from app.lib.keys import Keys
from app.lib.orm import utcnow
from app.purchases import repository
from app.purchases.models import Purchase
from app.purchases.schemas import PurchaseIn, PurchaseOut

#: How far in the future a purchase time may lie (the caller's clock may run ahead a little).
CLOCK_SKEW = timedelta(minutes=5)
#: How far back a sale may lie. UWG §7(3) rests on a real sale the seller can show: commercial records are kept ten
#: years (§ 257 HGB, § 147 AO), so an older date is no sale anyone can prove, and a date of year 1 or 1970 is a
#: mistake (a number taken for a Unix timestamp, a default value) that would have made the contact a customer.
MAX_AGE = timedelta(days=3653)
MAX_AGE_TEXT = "10 years"


class ReferenceRaced(Exception):
    """Another request recorded the same reference between the check and the insert (the caller retries once)."""


async def record_purchase(
    session: AsyncSession,
    keys: Keys,
    workspace_id: uuid.UUID,
    *,
    contact_ref: str,
    data: PurchaseIn,
    actor: Actor,
) -> tuple[PurchaseOut, bool]:
    """Record the sale (and its ledger event) in the caller's transaction; answers it and whether it is new.

    The same reference again with the same sale answers the first record (nothing new is chained); with another
    sale it is refused (409 ``purchase_reference_taken``).
    """
    if not data.objection_notice_shown:
        raise InvalidInput(
            "A purchase is recorded only with 'objection_notice_shown': true: UWG §7(3) No. 4 requires that the "
            "person was clearly told, when the address was collected, that they can object to its use for "
            "advertising at any time at no cost beyond the basic transmission rate.",
            code="objection_notice_required",
        )
    _check_date(data)
    try:
        address = normalise_email(data.email)
    except InvalidIdentifier as exc:
        raise InvalidInput(f"'email': {exc}", code="invalid_email") from None
    contact = await require_contact(session, workspace_id, contact_ref)
    existing = await repository.by_reference(session, workspace_id, data.reference)
    if existing is not None:
        return await _replayed(session, existing, contact.id, address, data), False
    point = await _point_of(session, keys, workspace_id, contact.id, address)
    evidence = {
        **data.evidence.as_dict(),
        "reference": data.reference,
        "category": data.category,
        "purchased_at": data.sold_at.isoformat(),
        "objection_notice_shown": True,
        **({"objection_notice_version": data.objection_notice_version} if data.objection_notice_version else {}),
    }
    [event_id] = await record_notes(
        session,
        workspace_id,
        [Note(point, Trigger.PURCHASE, evidence, legal_basis=LegalBasis.UWG_7_3, occurred_at=data.sold_at)],
        actor,
    )
    purchase = await repository.insert_purchase(
        session,
        workspace_id,
        contact_point_id=point.id,
        reference=data.reference,
        purchased_at=data.sold_at,
        category=data.category,
        objection_notice_version=data.objection_notice_version,
        event_id=event_id,
    )
    if purchase is None:
        raise ReferenceRaced
    return purchase_out(purchase, point.value), True


def _check_date(data: PurchaseIn) -> None:
    """422 when the time of sale lies ahead of our clock beyond :data:`CLOCK_SKEW`, or :data:`MAX_AGE` back."""
    field = "purchased_at" if data.purchased_at is not None else "occurred_at"
    sold_at, now = in_utc(data.sold_at, field), utcnow()
    if sold_at > now + CLOCK_SKEW:
        latest = (now + CLOCK_SKEW).isoformat(timespec="seconds")
        message = f"lies in the future: a sale is recorded once made (at most 5 minutes ahead of our clock, {latest})"
        raise InvalidInput(
            f"'{field}' {message}.",
            code="purchased_at_in_future",
            extra={"errors": [{"field": field, "message": message}], "latest": latest},
        )
    if sold_at < now - MAX_AGE:
        earliest = (now - MAX_AGE).isoformat(timespec="seconds")
        message = (
            f"lies more than {MAX_AGE_TEXT} back (before {earliest}): the existing-customer basis (UWG §7(3)) rests "
            "on a sale the seller can still show, and commercial records are kept 10 years"
        )
        raise InvalidInput(
            f"'{field}' {message}.",
            code="purchased_at_too_old",
            extra={"errors": [{"field": field, "message": message}], "earliest": earliest},
        )


async def _point_of(
    session: AsyncSession, keys: Keys, workspace_id: uuid.UUID, contact_id: uuid.UUID, address: str
) -> ContactPoint:
    """The contact's email address ``address``, attached to it if new.

    A ``consents:write`` key names it for the contact: the tenant's records, which verify it (``api``), as an import
    does. An address of another contact is refused (409 ``address_of_another_contact``).
    """
    point = await add_point(
        session,
        keys,
        workspace_id,
        contact_id=contact_id,
        channel=Channel.EMAIL.value,
        value=address,
        verified=VerifiedVia.API,
    )
    if point.contact_id != contact_id:
        raise Conflict("This email address belongs to another contact.", code="address_of_another_contact")
    return point


async def _replayed(
    session: AsyncSession, existing: Purchase, contact_id: uuid.UUID, address: str, data: PurchaseIn
) -> PurchaseOut:
    points = await ledger.contact_points_by_id(session, [existing.workspace_id], [existing.contact_point_id])
    point = points.get(existing.contact_point_id)
    same = (
        point is not None
        and point.contact_id == contact_id
        and point.value == address
        and existing.purchased_at == data.sold_at
        and existing.category == data.category
        and existing.objection_notice_version == data.objection_notice_version
    )
    if not same or point is None:
        raise Conflict(
            f"A purchase with reference '{data.reference}' is recorded with other details.",
            code="purchase_reference_taken",
        )
    return purchase_out(existing, point.value)


async def purchases_of(session: AsyncSession, workspace_id: uuid.UUID, contact_ref: str) -> list[PurchaseOut]:
    """The purchases made with the contact's email addresses, oldest first."""
    contact = await require_contact(session, workspace_id, contact_ref)
    points = {p.id: p for p in await ledger.contact_points_of(session, contact.id) if p.channel == Channel.EMAIL}
    return [
        purchase_out(p, points[p.contact_point_id].value)
        for p in await repository.of_points(session, workspace_id, list(points))
    ]


def purchase_out(purchase: Purchase, address: str) -> PurchaseOut:
    """A purchase as the API shows it."""
    return PurchaseOut(
        id=purchase.id,
        contact_point_id=purchase.contact_point_id,
        address_masked=mask(Channel.EMAIL, address),
        reference=purchase.reference,
        purchased_at=purchase.purchased_at,
        category=purchase.category,
        objection_notice_version=purchase.objection_notice_version,
        event_id=purchase.event_id,
        created_at=purchase.created_at,
    )
