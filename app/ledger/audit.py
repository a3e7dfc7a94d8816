"""Recomputing a workspace's hash chain: names the first event that does not verify."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from app.domain.chain import GENESIS, ChainFields, event_hash, personal_digest
from app.ledger import repository, sealer
from app.ledger.models import ConsentEvent


@dataclass(frozen=True, slots=True)
class Verification:
    """The outcome: how many events were checked, whether all hold, and the first that does not."""

    events_checked: int
    valid: bool
    first_broken_event_id: uuid.UUID | None = None
    first_broken_seq: int | None = None
    reason: str | None = None


async def verify_chain(session: AsyncSession, workspace_id: uuid.UUID) -> Verification:
    """Walk the chain in order (streamed, constant memory) and check every link, hash and personal digest.

    What waits for the sealer is sealed first: the check covers every event committed before it.
    """
    await sealer.seal_first(session, workspace_id)
    # the head first: what the sealer chains while this reads lies beyond it and is left for the next check
    head = await repository.head_of(session, workspace_id, fresh=True)
    head_seq = head.last_seq if head else 0
    expected_seq, prev_hash, checked = 1, GENESIS, 0
    async for event in repository.stream_chain(session, workspace_id, head_seq):
        checked += 1
        digest = event_hash(_fields_of(event), prev_hash)
        problem: str | None = None
        if event.seq != expected_seq:
            problem = f"sequence gap: expected {expected_seq}, found {event.seq} (an event was removed)"
        elif bytes(event.prev_hash or b"") != prev_hash:  # sealed (seq <= head): never None
            problem = "the link to the previous event does not match"
        elif event.personal is not None and personal_digest(event.personal) != bytes(event.personal_digest):
            problem = "the personal part (evidence) was changed"
        elif digest != bytes(event.hash or b""):
            problem = "the event's content does not match its hash"
        if problem is not None:
            return Verification(
                checked, valid=False, first_broken_event_id=event.id, first_broken_seq=event.seq, reason=problem
            )
        prev_hash, expected_seq = digest, expected_seq + 1
    if head_seq != checked or (head is not None and bytes(head.last_hash) != prev_hash):
        return Verification(
            checked,
            valid=False,
            reason=f"the chain ends at {checked} events but its head records {head_seq}: newest events were removed",
        )
    # An event placed beyond the head by hand would escape the walk above (and stop the sealer at that place):
    # legitimately only the sealer places events beyond what was read, and it moves the head with them.
    beyond = await repository.first_place_beyond(session, workspace_id, head_seq)
    if beyond is not None:
        now = await repository.head_of(session, workspace_id, fresh=True)
        if now is None or beyond > now.last_seq:
            return Verification(
                checked,
                valid=False,
                first_broken_seq=beyond,
                reason=f"an event holds place {beyond}, beyond the chain's head: it was placed there by hand",
            )
    return Verification(checked, valid=True)


def _fields_of(event: ConsentEvent) -> ChainFields:
    return ChainFields(
        id=event.id,
        workspace_id=event.workspace_id,
        seq=event.seq or 0,  # sealed: verify_chain reads no other
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


#: The columns of the audit event stream (:func:`app.ledger.repository.copy_events`), in order (the CSV header and
#: the NDJSON keys). They are the fields the
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
