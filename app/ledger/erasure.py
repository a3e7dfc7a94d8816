"""Erasure (GDPR Art. 17): the person is deleted; what the law lets us keep, and the ledger needs, stays.

CHANNEL_RULES.md §8 (X2, X5, X7). In the caller's transaction:

1. every address gets one last ledger event, ``erasure`` (withdrawn; print: objected), recorded through
   :func:`apply_changes` like any other, so the chain shows when the erasure happened and on whose request;
2. every address gets suppression keys (keyed hashes, reason ``erasure``, all marketing), so an address that a
   CRM, a shop or a rented list brings back is not marketed to again (ICO: suppress rather than forget);
3. the personal part (evidence: IP, user agent, message texts, postal details) of every earlier event of the
   contact is deleted; the chain covers only its digest, so verification still holds; the ids the events keep
   point to nothing once the contact is gone;
4. the contact, its addresses (postal details and push tokens included), consents, confirmation tokens, messages
   (content and history) and the stored idempotent answers that name it are deleted;
5. a record of the erasure with the report (no personal data) is kept as accountability evidence; a repeated
   request by contact id is answered with it.
"""

from __future__ import annotations

import uuid

import msgspec
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.domain.model import RequestChannel, SuppressionReason, Trigger
from app.ledger import repository
from app.ledger.actions import suppression_rows
from app.ledger.models import Contact, Erasure
from app.ledger.schemas import ErasedCounts, ErasureOut, Kept
from app.ledger.service import Actor, Change, apply_changes
from app.lib.errors import NotFound
from app.lib.ids import uuid7
from app.lib.keys import Keys
from app.lib.orm import utcnow

WHY_SUPPRESSION_KEYS = (
    "Keyed hashes of the erased addresses (no clear text), so that an address brought back by a CRM, a shop "
    "or a rented list is not contacted for marketing again (GDPR Art. 17(3)(b) and (e), Art. 21(3); "
    "ICO: keep a suppression list rather than forget). Transactional messages stay possible."
)
WHY_LEDGER_EVENTS = (
    "The consent history without its evidence: IP addresses, user agents, texts and postal details were "
    "deleted; the hash chain keeps their digests so it still verifies. It proves which contact was permitted "
    "when, for the defence of legal claims (Art. 17(3)(e)); the contact ids in it no longer lead to a person."
)
WHY_RECORD = (
    "This report: when the erasure was made, by which key and on which request, as accountability evidence "
    "(Art. 5(2)). It holds no personal data."
)


async def erase(
    session: AsyncSession,
    keys: Keys,
    workspace_id: uuid.UUID,
    contact_ref: str,
    *,
    request_ref: str | None,
    received_via: RequestChannel | None,
    actor: Actor,
) -> ErasureOut:
    """Erase the contact named by id or external id; an already erased contact id answers its report again."""
    found = await repository.find_contact(session, workspace_id, contact_ref)
    # locked: a concurrent erasure of the same contact waits here, then finds it gone and answers the report
    locked = found and await session.scalar(select(Contact.id).where(Contact.id == found.id).with_for_update())
    if found is None or locked is None:
        return await _earlier(session, workspace_id, contact_ref)
    points = list(await repository.contact_points_of(session, found.id))
    evidence = {"request_ref": request_ref, "received_via": received_via.value if received_via else None}
    applied = await apply_changes(
        session,
        workspace_id,
        [Change(point, None, Trigger.ERASURE, {k: v for k, v in evidence.items() if v}) for point in points],
        actor,
    )
    await repository.add_suppressions(session, suppression_rows(keys, workspace_id, points, SuppressionReason.ERASURE))
    event_ids = [a.event_id for a in applied if a.event_id is not None]
    suppressions = await repository.count_suppressions(
        session, workspace_id, sorted({key for point in points for key in point.suppression_keys})
    )
    deleted, events_kept = await repository.erase_contact(
        session, workspace_id, found.id, [p.id for p in points], keep_evidence_of=event_ids
    )
    erasure_id, now = uuid7(), utcnow()
    report = ErasureOut(
        erasure_id=erasure_id,
        contact_id=found.id,
        erased_at=now,
        request_ref=request_ref,
        received_via=evidence["received_via"],
        event_ids=event_ids,
        deleted=ErasedCounts(**deleted),
        kept=[
            Kept(what="suppression_keys", count=suppressions, why=WHY_SUPPRESSION_KEYS),
            Kept(what="ledger_events", count=events_kept, why=WHY_LEDGER_EVENTS),
            Kept(what="erasure_record", count=1, why=WHY_RECORD),
        ],
    )
    session.add(
        Erasure(
            id=erasure_id,
            workspace_id=workspace_id,
            contact_id=found.id,
            erased_at=now,
            actor_type=actor.type.value,
            actor_id=actor.id,
            request_ref=request_ref,
            received_via=report.received_via,
            report=msgspec.to_builtins(report),
        )
    )
    await session.flush()
    return report


async def _earlier(session: AsyncSession, workspace_id: uuid.UUID, contact_ref: str) -> ErasureOut:
    """The report of an earlier erasure of this contact id, or 404 (an external id is gone with the contact)."""
    try:
        contact_id = uuid.UUID(contact_ref)
    except ValueError:
        contact_id = None
    record = contact_id and await session.scalar(
        select(Erasure).where(Erasure.workspace_id == workspace_id, Erasure.contact_id == contact_id)
    )
    if not record:
        raise NotFound("No contact with this id or external id.", code="contact_not_found")
    return msgspec.convert(record.report, ErasureOut)
