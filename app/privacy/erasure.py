"""Erasure (GDPR Art. 17): the person is deleted; what the law lets us keep, and the ledger needs, stays.

CHANNEL_RULES.md §8 (X2, X5, X7). In the caller's transaction:

1. every address gets one last ledger event, ``erasure`` (withdrawn; print: objected), recorded through
   :func:`apply_changes` like any other, so the chain shows when the erasure happened and on whose request;
2. every address gets suppression keys (keyed hashes, reason ``erasure``, all marketing), so an address that a
   CRM, a shop or a rented list brings back is not marketed to again (ICO: suppress rather than forget);
3. the personal part (evidence: IP, user agent, message texts, postal details) of every earlier event of the
   contact is deleted; the chain covers only its digest, so verification still holds; the ids the events keep
   point to nothing once the contact is gone;
4. every package's privacy hook (:mod:`app.privacy.hooks`) deletes or unlinks its rows about the person: stored
   idempotent answers that name them, messages (content and history), webhook deliveries whose payload names
   them, confirmation tokens, the address link of inbound SMS, and last the ledger's own rows: the contact, its
   addresses (postal details and push tokens included) and consents;
5. the files deliveries left on disk go too (:mod:`app.channels.outbox_files`): the contact's lines in print
   batch files not yet collected and its dev outbox files (done last, once every row is gone: a failure before
   that leaves the files, and a repeated request finds the contact erased; a failure after it loses only copies);
6. a record of the erasure with the report (no personal data) is kept as accountability evidence; a repeated
   request by contact id is answered with it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec
from sqlalchemy.ext.asyncio import AsyncSession

from app.channels import outbox_files
from app.domain.model import Channel, RequestChannel
from app.ledger import repository as ledger_repository
from app.ledger.actions import close_for_erasure
from app.ledger.service import Actor
from app.lib.errors import NotFound
from app.lib.ids import uuid7
from app.lib.keys import Keys
from app.lib.orm import utcnow
from app.lib.privacy import Subject
from app.privacy import repository
from app.privacy.hooks import HOOKS
from app.privacy.models import Erasure
from app.privacy.schemas import ErasedCounts, ErasureOut, Kept

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
    outbox: Path | None = None,
    proof: Mapping[str, Any] | None = None,
) -> ErasureOut:
    """Erase the contact named by id or external id; an already erased contact id answers its report again.

    ``outbox``: the folder of the outbox and print batch files (``<CONSENT_DATA_DIR>/outbox``), cleaned too.
    ``proof``: more evidence of how the request was made (the preference centre's IP, user agent and link id),
    kept with the ``erasure`` events.
    """
    evidence = {"request_ref": request_ref, "received_via": received_via.value if received_via else None}
    given = {**(proof or {}), **{k: v for k, v in evidence.items() if v}}
    closed = await close_for_erasure(session, keys, workspace_id, contact_ref, evidence=given, actor=actor)
    if closed is None:
        return await _earlier(session, workspace_id, contact_ref)
    subject = Subject(
        workspace_id,
        closed.contact_id,
        closed.point_ids,
        keep_event_ids=closed.event_ids,
        merged_ids=tuple(await ledger_repository.merged_into(session, workspace_id, closed.contact_id)),
    )
    # what the files on disk are named by, read before the hooks delete the rows
    delivery_ids = await repository.delivery_ids_of_contact(session, workspace_id, closed.contact_id)
    emails = [
        p.value
        for p in await ledger_repository.contact_points_of(session, closed.contact_id)
        if p.channel == Channel.EMAIL
    ]
    deleted: dict[str, int] = {}
    for hook in HOOKS:
        deleted.update(await hook.erase(session, subject))
    if outbox is not None:
        deleted["outbox_files"] = await asyncio.to_thread(
            outbox_files.erase, outbox, workspace_id, [str(i) for i in delivery_ids], emails
        )
    erasure_id, now = uuid7(), utcnow()
    report = ErasureOut(
        erasure_id=erasure_id,
        contact_id=closed.contact_id,
        erased_at=now,
        request_ref=request_ref,
        received_via=evidence["received_via"],
        event_ids=list(closed.event_ids),
        deleted=ErasedCounts(**deleted),
        kept=[
            Kept(what="suppression_keys", count=closed.suppressions, why=WHY_SUPPRESSION_KEYS),
            Kept(what="ledger_events", count=closed.events, why=WHY_LEDGER_EVENTS),
            Kept(what="erasure_record", count=1, why=WHY_RECORD),
        ],
    )
    await repository.add_erasure(
        session,
        Erasure(
            id=erasure_id,
            workspace_id=workspace_id,
            contact_id=closed.contact_id,
            erased_at=now,
            actor_type=actor.type.value,
            actor_id=actor.id,
            request_ref=request_ref,
            received_via=report.received_via,
            report=msgspec.to_builtins(report),
        ),
    )
    return report


async def _earlier(session: AsyncSession, workspace_id: uuid.UUID, contact_ref: str) -> ErasureOut:
    """The report of an earlier erasure of this contact id, or 404 (an external id is gone with the contact)."""
    try:
        contact_id = uuid.UUID(contact_ref)
    except ValueError:
        contact_id = None
    record = contact_id and await repository.find_erasure(session, workspace_id, contact_id)
    if not record:
        raise NotFound("No contact with this id or external id.", code="contact_not_found")
    return msgspec.convert(record.report, ErasureOut)
