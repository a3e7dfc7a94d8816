"""Erasure requests made on the preference centre ("delete me", Art. 17): executed at once, or queued for review.

The person confirms on the page; the request is recorded either way (``erasure_requests``). Where the workspace
reviews erasures (setting ``erasure_review``), it stays ``pending`` until an ``admin`` key executes or rejects
it, due one month after it was made (Art. 12(3)); otherwise it is executed in the same transaction. Executing
runs the one erasure of :mod:`app.privacy.erasure`, with the person as actor and the request's evidence (source,
link id, IP address, user agent) on the ledger's ``erasure`` events, so both ways leave the same trail.
"""

from __future__ import annotations

import calendar
import enum
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.domain.model import RequestChannel
from app.ledger import repository as ledger_repository
from app.lib.errors import Conflict, NotFound
from app.lib.ids import uuid7
from app.lib.keys import Keys
from app.lib.orm import utcnow
from app.preferences import service as preferences
from app.preferences.models import PreferenceLink
from app.preferences.service import PERSON, SOURCE
from app.privacy import erasure, repository
from app.privacy.models import ErasureRequest
from app.privacy.schemas import ErasureRequestOut, ErasureRequestStatus
from app.workspaces.service import settings_of


def one_month_after(moment: datetime) -> datetime:
    """The same day of the next month (its last day where the month is shorter): Art. 12(3)'s "one month"."""
    year, month = (moment.year + 1, 1) if moment.month == 12 else (moment.year, moment.month + 1)  # noqa: PLR2004
    return moment.replace(year=year, month=month, day=min(moment.day, calendar.monthrange(year, month)[1]))


class ErasureOutcome(enum.StrEnum):
    """What a confirmed "delete me" did."""

    ERASED = "erased"
    """Executed now: the contact is gone."""
    QUEUED = "queued"
    """Recorded for review; due by the request's ``due_at``."""
    ALREADY_PENDING = "already_pending"
    """An earlier request is still pending (a second click records nothing new)."""
    GONE = "gone"
    """The contact was erased meanwhile (a concurrent click)."""


@dataclass(frozen=True, slots=True)
class Requested:
    """The outcome, and the request it concerns (none when the contact was already gone)."""

    outcome: ErasureOutcome
    request: ErasureRequest | None


async def pending_of(session: AsyncSession, link: PreferenceLink) -> ErasureRequest | None:
    """The link's contact's pending request, if any (reads only)."""
    return await repository.pending_request(session, link.workspace_id, link.contact_id)


async def review_required(session: AsyncSession, workspace_id: uuid.UUID) -> bool:
    """Whether the workspace reviews erasures before they are executed."""
    return (await settings_of(session, workspace_id)).erasure_review


async def request_erasure(
    session: AsyncSession, keys: Keys, link: PreferenceLink, proof: Mapping[str, Any], *, outbox: Path | None
) -> Requested:
    """Record the person's erasure request and execute it, or queue it where the workspace reviews erasures."""
    # the contact's row is locked: a second, concurrent click waits here and then finds the first's result
    if not await ledger_repository.lock_contact(session, link.workspace_id, link.contact_id):
        return Requested(ErasureOutcome.GONE, None)
    pending = await repository.pending_request(session, link.workspace_id, link.contact_id)
    if pending is not None:
        return Requested(ErasureOutcome.ALREADY_PENDING, pending)
    now = utcnow()
    row = ErasureRequest(
        id=uuid7(),
        workspace_id=link.workspace_id,
        contact_id=link.contact_id,
        requested_at=now,
        due_at=one_month_after(now),
        source=SOURCE,
        link_id=link.id,
        status=ErasureRequestStatus.PENDING,
        evidence=dict(proof),
    )
    if await review_required(session, link.workspace_id):
        # while staff review it, nothing more is marketed to the person: who asks to be deleted wants no mail
        await preferences.withdraw_everything(session, keys, link, {**proof, "method": "erasure_requested"})
        await repository.add_request(session, row)
        return Requested(ErasureOutcome.QUEUED, row)
    erasure_id = await _erase(session, keys, row, outbox=outbox, approved_by=None)
    row.status, row.decided_at, row.erasure_id, row.evidence = ErasureRequestStatus.DONE, now, erasure_id, None
    await repository.add_request(session, row)
    return Requested(ErasureOutcome.ERASED, row)


async def execute(
    session: AsyncSession,
    keys: Keys,
    workspace_id: uuid.UUID,
    request_id: uuid.UUID | None,
    *,
    key_id: uuid.UUID,
    outbox: Path | None,
) -> ErasureRequestOut:
    """An ``admin`` key executes a pending request: the erasure is made as the person asked for it."""
    row = await _pending(session, workspace_id, request_id)
    erasure_id = await _erase(session, keys, row, outbox=outbox, approved_by=key_id)
    row.status, row.decided_at, row.decided_by = ErasureRequestStatus.DONE, utcnow(), key_id
    row.erasure_id, row.evidence = erasure_id, None
    await repository.add_request(session, row)
    return request_out(row)


async def reject(
    session: AsyncSession, workspace_id: uuid.UUID, request_id: uuid.UUID | None, *, key_id: uuid.UUID
) -> ErasureRequestOut:
    """An ``admin`` key rejects a pending request (Art. 17(3)); its evidence goes, the record stays."""
    row = await _pending(session, workspace_id, request_id)
    row.status, row.decided_at, row.decided_by, row.evidence = ErasureRequestStatus.REJECTED, utcnow(), key_id, None
    await repository.add_request(session, row)
    return request_out(row)


async def list_requests(
    session: AsyncSession, workspace_id: uuid.UUID, status: ErasureRequestStatus | None, limit: int
) -> list[ErasureRequestOut]:
    """The workspace's requests, earliest due first."""
    now = utcnow()
    return [request_out(r, now) for r in await repository.list_requests(session, workspace_id, status, limit)]


def request_out(row: ErasureRequest, now: datetime | None = None) -> ErasureRequestOut:
    """The API's view of a request."""
    status = ErasureRequestStatus(row.status)
    return ErasureRequestOut(
        id=row.id,
        contact_id=row.contact_id,
        status=status,
        source=row.source,
        link_id=row.link_id,
        requested_at=row.requested_at,
        due_at=row.due_at,
        overdue=status is ErasureRequestStatus.PENDING and row.due_at <= (now or utcnow()),
        decided_at=row.decided_at,
        decided_by=row.decided_by,
        erasure_id=row.erasure_id,
    )


async def _pending(session: AsyncSession, workspace_id: uuid.UUID, request_id: uuid.UUID | None) -> ErasureRequest:
    row = request_id and await repository.lock_request(session, workspace_id, request_id)
    if not row:
        raise NotFound("No erasure request with this id.", code="erasure_request_not_found")
    if row.status != ErasureRequestStatus.PENDING:
        raise Conflict(f"This erasure request is already {row.status}.", code="erasure_request_decided")
    return row


async def _erase(
    session: AsyncSession, keys: Keys, row: ErasureRequest, *, outbox: Path | None, approved_by: uuid.UUID | None
) -> uuid.UUID:
    proof = {**(row.evidence or {}), "erasure_request_id": str(row.id)}
    if approved_by is not None:
        proof["approved_by"] = f"api_key:{approved_by}"
    report = await erasure.erase(
        session,
        keys,
        row.workspace_id,
        str(row.contact_id),
        request_ref=f"erasure_request:{row.id}",
        received_via=RequestChannel.WEB_FORM,
        actor=PERSON,
        outbox=outbox,
        proof=proof,
    )
    return report.erasure_id
