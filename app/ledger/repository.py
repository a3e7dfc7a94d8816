"""All SQL of the ledger."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import or_, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from app.domain.chain import GENESIS
from app.ledger.models import Consent, ConsentEvent, Contact, ContactPoint, LedgerHead, Suppression
from app.lib.ids import uuid7


async def find_contact(session: AsyncSession, workspace_id: uuid.UUID, ref: str) -> Contact | None:
    """A contact by id or by ``external_id`` (an id match wins)."""
    conditions = [Contact.external_id == ref]
    with contextlib.suppress(ValueError):
        conditions.append(Contact.id == uuid.UUID(ref))
    rows = (await session.scalars(select(Contact).where(Contact.workspace_id == workspace_id, or_(*conditions)))).all()
    return next((c for c in rows if str(c.id) == ref), rows[0] if rows else None)


async def get_contact(session: AsyncSession, contact_id: uuid.UUID) -> Contact:
    """A contact known to exist (referenced by a row of the same workspace)."""
    contact = await session.get(Contact, contact_id)
    assert contact is not None
    return contact


async def add_contact(
    session: AsyncSession, workspace_id: uuid.UUID, external_id: str | None, locale: str | None, timezone: str | None
) -> Contact:
    """Insert a contact, or return the one with this external id (concurrent creators agree)."""
    if external_id is not None:
        inserted: Contact | None = await session.scalar(
            insert(Contact)
            .values(id=uuid7(), workspace_id=workspace_id, external_id=external_id, locale=locale, timezone=timezone)
            .on_conflict_do_nothing(index_elements=["workspace_id", "external_id"])
            .returning(Contact)
        )
        if inserted is not None:
            return inserted
        existing = await session.scalar(
            select(Contact).where(Contact.workspace_id == workspace_id, Contact.external_id == external_id)
        )
        assert existing is not None
        return existing
    contact = Contact(workspace_id=workspace_id, locale=locale, timezone=timezone)
    session.add(contact)
    await session.flush()
    return contact


async def find_contact_point(
    session: AsyncSession, workspace_id: uuid.UUID, channel: str, value: str
) -> ContactPoint | None:
    """A contact point by its normalised value."""
    return await session.scalar(
        select(ContactPoint).where(
            ContactPoint.workspace_id == workspace_id, ContactPoint.channel == channel, ContactPoint.value == value
        )
    )


async def add_contact_point(
    session: AsyncSession,
    workspace_id: uuid.UUID,
    *,
    contact_id: uuid.UUID,
    channel: str,
    value: str,
    details: dict[str, Any],
    suppression_keys: list[bytes],
) -> ContactPoint:
    """Insert a contact point, or return the existing one with this value (it may belong to another contact)."""
    inserted: ContactPoint | None = await session.scalar(
        insert(ContactPoint)
        .values(
            id=uuid7(),
            workspace_id=workspace_id,
            contact_id=contact_id,
            channel=channel,
            value=value,
            details=details,
            suppression_keys=suppression_keys,
        )
        .on_conflict_do_nothing(index_elements=["workspace_id", "channel", "value"])
        .returning(ContactPoint)
    )
    if inserted is not None:
        return inserted
    existing = await find_contact_point(session, workspace_id, channel, value)
    assert existing is not None
    return existing


async def contact_points_of(session: AsyncSession, contact_id: uuid.UUID) -> Sequence[ContactPoint]:
    """A contact's contact points by channel."""
    return (
        await session.scalars(
            select(ContactPoint)
            .where(ContactPoint.contact_id == contact_id)
            .order_by(ContactPoint.channel, ContactPoint.id)
        )
    ).all()


async def consents_of(session: AsyncSession, contact_id: uuid.UUID) -> Sequence[Consent]:
    """A contact's consent rows (any state, ``none`` included)."""
    return (await session.scalars(select(Consent).where(Consent.contact_id == contact_id).order_by(Consent.id))).all()


async def consents_of_point(session: AsyncSession, point_id: uuid.UUID) -> Sequence[Consent]:
    """The consent rows of one address."""
    return (await session.scalars(select(Consent).where(Consent.contact_point_id == point_id))).all()


_LOCK_CHUNK = 1_000  # rows per INSERT (6 parameters each, well below PostgreSQL's 65,535)


async def lock_consents(
    session: AsyncSession, workspace_id: uuid.UUID, wanted: Sequence[ConsentKey]
) -> dict[tuple[uuid.UUID, uuid.UUID | None], Consent]:
    """The consent rows of ``wanted`` (created in state ``none`` if missing), locked until commit.

    ``INSERT … ON CONFLICT DO UPDATE`` takes each row lock in the same statement, whether or not the row
    existed, and processes its rows in the order given: callers pass them sorted, so concurrent batches lock
    in one order and cannot deadlock. One statement per 1,000 rows.
    """
    locked: dict[tuple[uuid.UUID, uuid.UUID | None], Consent] = {}
    for start in range(0, len(wanted), _LOCK_CHUNK):
        rows = [
            {
                "id": uuid7(),
                "workspace_id": workspace_id,
                "contact_id": key.contact_id,
                "contact_point_id": key.contact_point_id,
                "purpose_id": key.purpose_id,
                "channel": key.channel,
            }
            for key in wanted[start : start + _LOCK_CHUNK]
        ]
        statement = (
            insert(Consent)
            .values(rows)
            .on_conflict_do_update(
                constraint="uq_consents_contact_point_id_purpose_id", set_={"version": Consent.version}
            )
            .returning(Consent)
            .execution_options(populate_existing=True)
        )
        for consent in (await session.scalars(statement)).all():
            locked[consent.contact_point_id, consent.purpose_id] = consent
    return locked


@dataclass(frozen=True, slots=True)
class ConsentKey:
    """Which consent row to lock (and create if missing)."""

    contact_point_id: uuid.UUID
    purpose_id: uuid.UUID | None
    contact_id: uuid.UUID
    channel: str


async def lock_head(session: AsyncSession, workspace_id: uuid.UUID) -> tuple[int, bytes]:
    """Lock the workspace's chain head (created at genesis if missing); returns (last seq, last hash)."""
    row = (
        await session.execute(
            insert(LedgerHead)
            .values(workspace_id=workspace_id, last_seq=0, last_hash=GENESIS)
            .on_conflict_do_update(index_elements=["workspace_id"], set_={"last_seq": LedgerHead.last_seq})
            .returning(LedgerHead.last_seq, LedgerHead.last_hash)
        )
    ).one()
    return int(row.last_seq), bytes(row.last_hash)


async def append_events(session: AsyncSession, events: Sequence[dict[str, Any]], workspace_id: uuid.UUID) -> None:
    """Insert events (already chained) and move the head to the last one."""
    await session.execute(insert(ConsentEvent), list(events))
    last = events[-1]
    await session.execute(
        update(LedgerHead)
        .where(LedgerHead.workspace_id == workspace_id)
        .values(last_seq=last["seq"], last_hash=last["hash"])
    )


def set_projection(consent: Consent, values: Mapping[str, Any]) -> None:
    """Give the loaded row the values :func:`update_consents` writes, without marking it dirty."""
    for name, value in values.items():
        set_committed_value(consent, name, value)


async def update_consents(session: AsyncSession, rows: Sequence[Mapping[str, Any]]) -> None:
    """Move projections to the state of their newest event, one ``executemany`` by primary key."""
    if rows:
        await session.execute(update(Consent), list(rows))


async def events_of_contact(
    session: AsyncSession, contact_id: uuid.UUID, after_seq: int, limit: int | None
) -> Sequence[ConsentEvent]:
    """A contact's ledger entries, oldest first (``limit`` None: all)."""
    return (
        await session.scalars(
            select(ConsentEvent)
            .where(ConsentEvent.contact_id == contact_id, ConsentEvent.seq > after_seq)
            .order_by(ConsentEvent.seq)
            .limit(limit)
        )
    ).all()


async def stream_chain(session: AsyncSession, workspace_id: uuid.UUID) -> AsyncIterator[ConsentEvent]:
    """Every event of the workspace in chain order, streamed with a server-side cursor."""
    result = await session.stream_scalars(
        select(ConsentEvent)
        .where(ConsentEvent.workspace_id == workspace_id)
        .order_by(ConsentEvent.seq)
        # An audit reads what is stored, never objects this session happens to hold already.
        .execution_options(yield_per=1000, populate_existing=True)
    )
    async for event in result:
        yield event


async def head_of(session: AsyncSession, workspace_id: uuid.UUID) -> LedgerHead | None:
    """The chain head row."""
    return await session.get(LedgerHead, workspace_id)


async def workspaces_with_events(session: AsyncSession) -> Sequence[uuid.UUID]:
    """Every workspace that has a chain."""
    return (await session.scalars(select(LedgerHead.workspace_id).order_by(LedgerHead.workspace_id))).all()


async def add_suppressions(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    """Insert suppression keys; existing identical ones are kept as they are."""
    if rows:
        await session.execute(
            insert(Suppression).values([{"id": uuid7(), **row} for row in rows]).on_conflict_do_nothing()
        )


async def set_reachability(session: AsyncSession, point_id: uuid.UUID, reachability: str, at: datetime) -> None:
    """Record what a provider told us about an address (kept apart from permission)."""
    await session.execute(
        update(ContactPoint)
        .where(ContactPoint.id == point_id)
        .values(reachability=reachability, reachability_changed_at=at)
    )


async def update_details(session: AsyncSession, point_id: uuid.UUID, details: dict[str, Any]) -> None:
    """Replace what is known about an address besides its value (a push token, subscription keys)."""
    await session.execute(update(ContactPoint).where(ContactPoint.id == point_id).values(details=details))


async def count_soft_bounce(session: AsyncSession, point_id: uuid.UUID) -> None:
    """Count a temporary delivery failure on the address (no state change)."""
    await session.execute(
        text(
            "UPDATE contact_points SET details = jsonb_set(details, '{soft_bounces}', "
            "to_jsonb(coalesce((details->>'soft_bounces')::int, 0) + 1)) WHERE id = :id"
        ),
        {"id": point_id},
    )


async def count_suppressions(session: AsyncSession, workspace_id: uuid.UUID, keys: Sequence[bytes]) -> int:
    """How many suppression rows of the workspace hold one of ``keys``."""
    if not keys:
        return 0
    return int(
        await session.scalar(
            text("SELECT count(*) FROM suppressions WHERE workspace_id = :workspace_id AND key = ANY(:keys)"),
            {"workspace_id": workspace_id, "keys": list(keys)},
        )
        or 0
    )


#: What an erasure deletes, in an order the foreign keys allow; each statement's row count is reported.
_ERASE = (
    # stored idempotent answers (24 h) that name the contact: a POST /v1/contacts answer holds its addresses
    (
        "stored_answers",
        (
            "DELETE FROM idempotency_keys WHERE workspace_id = :workspace_id AND body IS NOT NULL"
            " AND position(convert_to(:contact_text, 'UTF8') IN body) > 0"
        ),
    ),
    ("messages", "DELETE FROM messages WHERE workspace_id = :workspace_id AND contact_id = :contact_id"),
    # webhook payloads name the contact (its external id); the erasure's own events still go out, so the systems
    # that hold the person too learn of it
    (
        "webhook_deliveries",
        (
            "DELETE FROM webhook_deliveries WHERE workspace_id = :workspace_id"
            " AND payload -> 'data' ->> 'contact_id' = :contact_text AND NOT (event_id = ANY(:keep))"
        ),
    ),
    ("confirmation_tokens", "DELETE FROM confirmation_tokens WHERE contact_point_id = ANY(:point_ids)"),
    ("consents", "DELETE FROM consents WHERE contact_id = :contact_id"),
    ("contact_points", "DELETE FROM contact_points WHERE contact_id = :contact_id"),
    ("contacts", "DELETE FROM contacts WHERE id = :contact_id"),
)


async def erase_contact(
    session: AsyncSession,
    workspace_id: uuid.UUID,
    contact_id: uuid.UUID,
    point_ids: Sequence[uuid.UUID],
    *,
    keep_evidence_of: Sequence[uuid.UUID],
) -> tuple[dict[str, int], int]:
    """Delete the contact's personal data (see :mod:`app.ledger.erasure`): counts per kind, and the events kept.

    The evidence of the events in ``keep_evidence_of`` (the erasure's own, which says how it was requested) stays.
    """
    params = {
        "workspace_id": workspace_id,
        "contact_id": contact_id,
        "contact_text": str(contact_id),
        "point_ids": list(point_ids),
        "keep": list(keep_evidence_of),
    }
    erased = await session.execute(
        text(
            "UPDATE consent_events SET personal = NULL WHERE workspace_id = :workspace_id AND contact_id = :contact_id"
            " AND personal IS NOT NULL AND NOT (id = ANY(:keep))"
        ),
        params,
    )
    counts = {"evidence_erased": erased.rowcount}  # type: ignore[attr-defined]
    for kind, statement in _ERASE:
        result = await session.execute(text(statement), params)
        counts[kind] = result.rowcount  # type: ignore[attr-defined]
    kept = await session.scalar(
        text("SELECT count(*) FROM consent_events WHERE workspace_id = :workspace_id AND contact_id = :contact_id"),
        params,
    )
    return counts, int(kept or 0)


async def contact_points_by_id(
    session: AsyncSession, workspace_ids: Sequence[uuid.UUID], point_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, ContactPoint]:
    """Contact points by id, of the given workspaces only (the dispatcher's batches span workspaces)."""
    if not point_ids:
        return {}
    rows = await session.scalars(
        select(ContactPoint).where(ContactPoint.id.in_(point_ids), ContactPoint.workspace_id.in_(workspace_ids))
    )
    return {point.id: point for point in rows}


async def contacts_by_id(
    session: AsyncSession, workspace_ids: Sequence[uuid.UUID], contact_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, Contact]:
    """Contacts by id, of the given workspaces only."""
    if not contact_ids:
        return {}
    rows = await session.scalars(
        select(Contact).where(Contact.id.in_(contact_ids), Contact.workspace_id.in_(workspace_ids))
    )
    return {contact.id: contact for contact in rows}
