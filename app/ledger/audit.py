"""Recomputing a workspace's hash chain: names the first event that does not verify."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.domain.chain import GENESIS, ChainFields, event_hash, personal_digest
from app.ledger import repository
from app.ledger.models import ConsentEvent
from app.lib.copystream import copy_rows


@dataclass(frozen=True, slots=True)
class Verification:
    """The outcome: how many events were checked, whether all hold, and the first that does not."""

    events_checked: int
    valid: bool
    first_broken_event_id: uuid.UUID | None = None
    first_broken_seq: int | None = None
    reason: str | None = None


async def verify_chain(session: AsyncSession, workspace_id: uuid.UUID) -> Verification:
    """Walk the chain in order (streamed, constant memory) and check every link, hash and personal digest."""
    expected_seq, prev_hash, checked = 1, GENESIS, 0
    async for event in repository.stream_chain(session, workspace_id):
        checked += 1
        digest = event_hash(_fields_of(event), prev_hash)
        problem: str | None = None
        if event.seq != expected_seq:
            problem = f"sequence gap: expected {expected_seq}, found {event.seq} (an event was removed)"
        elif bytes(event.prev_hash) != prev_hash:
            problem = "the link to the previous event does not match"
        elif event.personal is not None and personal_digest(event.personal) != bytes(event.personal_digest):
            problem = "the personal part (evidence) was changed"
        elif digest != bytes(event.hash):
            problem = "the event's content does not match its hash"
        if problem is not None:
            return Verification(
                checked, valid=False, first_broken_event_id=event.id, first_broken_seq=event.seq, reason=problem
            )
        prev_hash, expected_seq = digest, expected_seq + 1
    head = await repository.head_of(session, workspace_id)
    head_seq = head.last_seq if head else 0
    if head_seq != checked or (head is not None and bytes(head.last_hash) != prev_hash):
        return Verification(
            checked,
            valid=False,
            reason=f"the chain ends at {checked} events but its head records {head_seq}: newest events were removed",
        )
    return Verification(checked, valid=True)


def _fields_of(event: ConsentEvent) -> ChainFields:
    return ChainFields(
        id=event.id,
        workspace_id=event.workspace_id,
        seq=event.seq,
        contact_id=event.contact_id,
        contact_point_id=event.contact_point_id,
        purpose_id=event.purpose_id,
        channel=event.channel,
        trigger=event.trigger,
        from_state=event.from_state,
        to_state=event.to_state,
        legal_basis=event.legal_basis,
        notice_id=event.notice_id,
        actor_type=event.actor_type,
        actor_id=event.actor_id,
        occurred_at=event.occurred_at,
        recorded_at=event.recorded_at,
        personal_digest=bytes(event.personal_digest),
    )


#: The columns of the audit event stream, in order (the CSV header and the NDJSON keys). They are the fields the
#: chain covers (plus the purpose's key and the evidence), written as :func:`app.domain.chain.canonical_json` writes
#: them, so that anyone holding the stream can recompute every hash: SHA-256(prev_hash + canonical JSON of
#: ``{"v": 1, "workspace_id": …, id … recorded_at, "personal_digest": …}``).
EVENT_COLUMNS = (
    "id",
    "seq",
    "contact_id",
    "contact_point_id",
    "purpose_id",
    "purpose",
    "channel",
    "trigger",
    "from_state",
    "to_state",
    "legal_basis",
    "notice_id",
    "actor_type",
    "actor_id",
    "occurred_at",
    "recorded_at",
    "evidence",
    "personal_digest",
    "prev_hash",
    "hash",
)

_UTC_MICROS = """to_char({} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')"""

EVENTS_SQL = f"""
    SELECT e.id, e.seq, e.contact_id, e.contact_point_id, e.purpose_id, p.key AS purpose, e.channel, e.trigger,
           e.from_state, e.to_state, e.legal_basis, e.notice_id, e.actor_type, e.actor_id,
           {_UTC_MICROS.format("e.occurred_at")} AS occurred_at, {_UTC_MICROS.format("e.recorded_at")} AS recorded_at,
           e.personal -> 'evidence' AS evidence, encode(e.personal_digest, 'hex') AS personal_digest,
           encode(e.prev_hash, 'hex') AS prev_hash, encode(e.hash, 'hex') AS hash
      FROM consent_events e LEFT JOIN purposes p ON p.id = e.purpose_id
     WHERE e.workspace_id = $1 AND e.recorded_at >= $2 AND e.recorded_at < $3
     ORDER BY e.seq
"""  # noqa: S608  # constant text; every input is a bind parameter


async def copy_events(
    driver: Any,
    workspace_id: uuid.UUID,
    since: datetime,
    until: datetime,
    *,
    as_csv: bool,
    sink: Callable[[bytes], Awaitable[None]],
) -> None:
    """The workspace's ledger events recorded in [since, until), in chain order, as NDJSON or CSV, by ``COPY``."""
    lines = f"SELECT row_to_json(r)::text FROM ({EVENTS_SQL}) r"  # noqa: S608
    await copy_rows(driver, EVENTS_SQL, lines, workspace_id, since, until, as_csv=as_csv, sink=sink)
