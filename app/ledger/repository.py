"""All SQL of the ledger."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Collection,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
from sqlalchemy import case, func, or_, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.orm.util import identity_key

from app.domain.chain import GENESIS
from app.domain.model import (
    WITHDRAWN_STATES,
    Channel,
    ObjectionKind,
    Reachability,
    State,
    SuppressionReason,
    SuppressionScope,
    SuppressionSource,
    Trigger,
    VerifiedVia,
)
from app.ledger.models import Consent, ConsentEvent, Contact, ContactPoint, LedgerHead, RobinsonKey, Suppression
from app.lib.copystream import copy_rows, csv_cell
from app.lib.errors import Conflict
from app.lib.ids import opaque_id, uuid7, uuid7s


async def find_contact(session: AsyncSession, workspace_id: uuid.UUID, ref: str) -> Contact | None:
    """A contact by id or by ``external_id`` (an id match wins)."""
    conditions = [Contact.external_id == ref]
    with contextlib.suppress(ValueError):
        conditions.append(Contact.id == uuid.UUID(ref))
    rows = (await session.scalars(select(Contact).where(Contact.workspace_id == workspace_id, or_(*conditions)))).all()
    return next((c for c in rows if str(c.id) == ref), rows[0] if rows else None)


#: :func:`find_contact` for the driver connection: an id match wins over an external id match.
_FIND_CONTACT_DRIVER = """
    SELECT id, merged_into FROM contacts
     WHERE workspace_id = $1 AND (external_id = $2 OR id = $3)
     ORDER BY id = $3 DESC NULLS LAST
     LIMIT 1
"""


async def find_contact_on_driver(
    connection: Any, workspace_id: uuid.UUID, ref: str
) -> tuple[uuid.UUID, uuid.UUID | None] | None:
    """:func:`find_contact` on a raw asyncpg ``connection``: the contact's id and ``merged_into``."""
    contact_id: uuid.UUID | None = None
    with contextlib.suppress(ValueError):
        contact_id = uuid.UUID(ref)
    row = await connection.fetchrow(_FIND_CONTACT_DRIVER, workspace_id, ref, contact_id)
    return None if row is None else (row[0], row[1])


#: :data:`_FIND_CONTACT_DRIVER` for many references at once (one statement), each live contact found locked ``FOR KEY
#: SHARE`` in id order: a run's foreign key takes that lock anyway, and merges lock their pair in id order, so a batch
#: of runs waits for a merge instead of deadlocking with it. A merged contact (a stub) is read, never locked: an
#: erasure of the contact it was merged into locks that one and then deletes the stub with it, so locking stubs too
#: made a cycle with it (hostile review); a stub stays a stub, so the unlocked read answers it. A contact live in the
#: statement's snapshot but merged or deleted before its lock is answered as not found (``None``): the request raced
#: a change of that contact. One row per reference, in order (``ordinality``).
_FIND_CONTACTS_DRIVER = """
    WITH refs AS (
        SELECT r.n, c.id, c.merged_into
          FROM unnest($2::text[], $3::uuid[]) WITH ORDINALITY AS r(ref, ref_id, n)
          LEFT JOIN LATERAL (
              SELECT id, merged_into FROM contacts
               WHERE workspace_id = $1 AND (external_id = r.ref OR id = r.ref_id)
               ORDER BY id = r.ref_id DESC NULLS LAST
               LIMIT 1
          ) c ON true
    ),
    locked AS MATERIALIZED (
        SELECT id FROM contacts
         WHERE workspace_id = $1 AND merged_into IS NULL
           AND id IN (SELECT id FROM refs WHERE merged_into IS NULL)
         ORDER BY id
           FOR KEY SHARE
    )
    SELECT CASE WHEN locked.id IS NOT NULL OR refs.merged_into IS NOT NULL THEN refs.id END,
           CASE WHEN locked.id IS NULL THEN refs.merged_into END
      FROM refs LEFT JOIN locked ON locked.id = refs.id ORDER BY refs.n
"""


async def find_contacts_on_driver(
    connection: Any, workspace_id: uuid.UUID, refs: Sequence[str]
) -> list[tuple[uuid.UUID, uuid.UUID | None] | None]:
    """:func:`find_contact_on_driver` for each of ``refs`` in one statement, live contacts locked ``FOR KEY SHARE``.

    In the caller's transaction (the locks hold to its end). One answer per reference, in order.
    """
    ids: list[uuid.UUID | None] = []
    for ref in refs:
        try:
            ids.append(uuid.UUID(ref))
        except ValueError:
            ids.append(None)
    rows = await connection.fetch(_FIND_CONTACTS_DRIVER, workspace_id, list(refs), ids)
    return [None if row[0] is None else (row[0], row[1]) for row in rows]


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
            .values(
                id=opaque_id(), workspace_id=workspace_id, external_id=external_id, locale=locale, timezone=timezone
            )
            .on_conflict_do_nothing(index_elements=["workspace_id", "external_id"])
            .returning(Contact)
        )
        if inserted is not None:
            return inserted
        existing = await session.scalar(
            select(Contact).where(Contact.workspace_id == workspace_id, Contact.external_id == external_id)
        )
        assert existing is not None
        if existing.merged_into is not None:  # the external id of a merged duplicate names its survivor
            survivor = await session.get(Contact, existing.merged_into)
            assert survivor is not None
            return survivor
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


async def email_points_by_keys(
    session: AsyncSession, workspace_id: uuid.UUID, keys: Collection[bytes], *, limit: int, typed: str
) -> list[ContactPoint]:
    """The verified, reachable email addresses holding one of ``keys``: as ``typed`` first, then oldest; ``limit``.

    An email address's keys are those of its lower-cased form (:meth:`app.lib.keys.Keys.point_keys`), so the keys of
    a lower-cased address find it in every spelling of its local part, through the GIN index on the keys. Only
    addresses a link may be mailed to are counted towards ``limit`` (unconfirmed spellings a form key planted first
    took every place, and the confirmed address got no link: hostile review 2026-12-06).
    """
    if not keys:
        return []
    found = await session.scalars(
        select(ContactPoint)
        .where(
            ContactPoint.workspace_id == workspace_id,
            ContactPoint.channel == Channel.EMAIL.value,
            ContactPoint.suppression_keys.overlap(list(keys)),
            ContactPoint.verified_at.is_not(None),
            ContactPoint.reachability == Reachability.REACHABLE.value,
        )
        .order_by(ContactPoint.value != typed, ContactPoint.created_at, ContactPoint.id)
        .limit(limit)
    )
    return list(found)


async def add_contact_point(
    session: AsyncSession,
    workspace_id: uuid.UUID,
    *,
    contact_id: uuid.UUID,
    channel: str,
    value: str,
    details: dict[str, Any],
    suppression_keys: list[bytes],
    verified: VerifiedVia | None = None,
    attached_by_form: bool = False,
) -> ContactPoint:
    """Insert a contact point, or return the existing one with this value (it may belong to another contact)."""
    inserted: ContactPoint | None = await session.scalar(
        insert(ContactPoint)
        .values(
            id=opaque_id(),
            workspace_id=workspace_id,
            contact_id=contact_id,
            channel=channel,
            value=value,
            details=details,
            suppression_keys=suppression_keys,
            verified_at=None if verified is None else text("now()"),
            verified_via=None if verified is None else verified.value,
            attached_by_form=attached_by_form,
        )
        .on_conflict_do_nothing(index_elements=["workspace_id", "channel", "value"])
        .returning(ContactPoint)
    )
    if inserted is not None:
        return inserted
    existing = await find_contact_point(session, workspace_id, channel, value)
    assert existing is not None
    return existing


async def mark_verified(session: AsyncSession, point_id: uuid.UUID, via: VerifiedVia, at: datetime) -> None:
    """Record how the address was verified, unless it already was (:func:`mark_verified_many` for one address)."""
    await mark_verified_many(session, [point_id], via, at)


async def reload_point(session: AsyncSession, point_id: uuid.UUID) -> ContactPoint:
    """The contact point as the database has it now (statements since it was loaded may have changed it)."""
    point = await session.get(ContactPoint, point_id, populate_existing=True)
    if point is None:
        raise LookupError(point_id)
    return point


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


async def point_consent_kinds(
    session: AsyncSession, workspace_id: uuid.UUID, point_id: uuid.UUID
) -> Sequence[tuple[uuid.UUID | None, str, str | None]]:
    """The address's consent rows as (purpose id, state, the purpose's kind): one light read (a withdrawal's)."""
    rows = await session.execute(
        text(
            "SELECT c.purpose_id, c.state, p.kind FROM consents c LEFT JOIN purposes p ON p.id = c.purpose_id"
            " WHERE c.workspace_id = :ws AND c.contact_point_id = :point"
        ),
        {"ws": workspace_id, "point": point_id},
    )
    return [(row.purpose_id, row.state, row.kind) for row in rows]


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


async def lock_live_head(
    session: AsyncSession, workspace_id: uuid.UUID, *, skip_locked: bool
) -> tuple[int, bytes] | None:
    """The sealer's lock of the chain head: (last seq, last hash), or ``None``.

    ``None`` when the workspace is being deleted (no head is created for it again), or with ``skip_locked`` when
    another transaction holds the head (it seals what waits itself, or the next round does).
    """
    skip = " SKIP LOCKED" if skip_locked else ""
    row = (
        await session.execute(
            text(f"SELECT last_seq, last_hash FROM ledger_heads WHERE workspace_id = :ws FOR UPDATE{skip}"),  # noqa: S608  # a constant
            {"ws": workspace_id},
        )
    ).first()
    if row is None:
        # no head, or (with skip_locked) one that is held: creating it would then wait for its holder (a head made
        # in a transaction still open), so it may wait only briefly (the holder seals what waits itself)
        try:
            async with session.begin_nested():
                if skip_locked:
                    await session.execute(text("SET LOCAL lock_timeout = '50ms'"))
                row = (
                    await session.execute(
                        text(
                            "INSERT INTO ledger_heads (workspace_id, last_seq, last_hash)"
                            " SELECT :ws, 0, :genesis"
                            " WHERE EXISTS (SELECT 1 FROM workspaces WHERE id = :ws AND deleted_at IS NULL)"
                            " ON CONFLICT (workspace_id) DO NOTHING RETURNING last_seq, last_hash"
                        ),
                        {"ws": workspace_id, "genesis": GENESIS},
                    )
                ).first()
        except DBAPIError as error:
            if getattr(error.orig, "sqlstate", None) != _LOCK_NOT_AVAILABLE:
                raise
            return None
    return None if row is None else (int(row.last_seq), bytes(row.last_hash))


#: PostgreSQL's ``lock_not_available`` (a ``lock_timeout`` ran out).
_LOCK_NOT_AVAILABLE = "55P03"


async def append_events(session: AsyncSession, events: Sequence[dict[str, Any]], workspace_id: uuid.UUID) -> None:
    """Insert events (already chained) and move the head to the last one."""
    await session.execute(insert(ConsentEvent), list(events))
    last = events[-1]
    await session.execute(
        update(LedgerHead)
        .where(LedgerHead.workspace_id == workspace_id)
        .values(last_seq=last["seq"], last_hash=last["hash"])
    )


async def first_place_beyond(session: AsyncSession, workspace_id: uuid.UUID, head_seq: int) -> int | None:
    """The lowest seq of the workspace's events beyond ``head_seq`` (sealed since, or placed there by hand)."""
    found = await session.scalar(
        text("SELECT min(seq) FROM consent_events WHERE workspace_id = :ws AND seq > :head"),
        {"ws": workspace_id, "head": head_seq},
    )
    return None if found is None else int(found)


async def has_unsealed(session: AsyncSession, workspace_id: uuid.UUID) -> bool:
    """Whether committed events of the workspace wait for the sealer (``ix_consent_events_unsealed``).

    Not of a workspace being deleted: its deletion takes its events (and its chain head) away.
    """
    return bool(
        await session.scalar(
            text(
                "SELECT EXISTS (SELECT 1 FROM consent_events WHERE workspace_id = :ws AND seq IS NULL)"
                " AND EXISTS (SELECT 1 FROM workspaces WHERE id = :ws AND deleted_at IS NULL)"
            ),
            {"ws": workspace_id},
        )
    )


async def lock_unsealed_of_contact(session: AsyncSession, workspace_id: uuid.UUID, contact_id: uuid.UUID) -> None:
    """Lock the contact's events that wait for the sealer, until the transaction ends (an erasure's)."""
    await session.execute(
        text(
            "SELECT id FROM consent_events"  # noqa: S608  # a constant
            f" WHERE workspace_id = :ws AND contact_id IN {_MERGED_WITH} AND seq IS NULL FOR UPDATE"
        ),
        {"ws": workspace_id, "contact_id": contact_id},
    )


async def workspaces_with_unsealed(session: AsyncSession) -> Sequence[uuid.UUID]:
    """The workspaces (not being deleted) with events that wait for the sealer."""
    return (
        await session.scalars(
            text(
                "SELECT DISTINCT e.workspace_id FROM consent_events e JOIN workspaces w ON w.id = e.workspace_id"
                " WHERE e.seq IS NULL AND w.deleted_at IS NULL"
            )
        )
    ).all()


#: The waiting events of a workspace in intake order (a snapshot, no locks taken).
_WAITING_SQL = text(
    "SELECT id FROM consent_events WHERE workspace_id = :ws AND seq IS NULL ORDER BY intake LIMIT :limit"
)
#: What the sealer reads of waiting events: everything the hash covers; those another transaction has locked are
#: passed over (an erasure removing their evidence).
_UNSEALED_SQL = text(
    """
    SELECT id, contact_id, contact_point_id, purpose_id, channel, trigger, from_state, to_state, legal_basis,
           notice_id, actor_type, actor_id, occurred_at, recorded_at, personal_digest
      FROM consent_events
     WHERE workspace_id = :ws AND seq IS NULL AND id = ANY(CAST(:ids AS uuid[]))
       FOR UPDATE SKIP LOCKED
    """
)


async def unsealed_events(session: AsyncSession, workspace_id: uuid.UUID, limit: int) -> list[Any]:
    """Up to ``limit`` committed events of the workspace waiting for their place, in intake order, locked.

    Only the run of waiting events before the first that another transaction holds: an erasure locks its
    contact's waiting events while it removes their evidence (nobody else locks ledger rows), and what came after
    them waits too, so that every consent's events keep their order. Never waits for a lock.
    """
    waiting = (await session.scalars(_WAITING_SQL, {"ws": workspace_id, "limit": limit})).all()
    if not waiting:
        return []
    locked = {row.id: row for row in await session.execute(_UNSEALED_SQL, {"ws": workspace_id, "ids": waiting})}
    run: list[Any] = []
    for event_id in waiting:
        row = locked.get(event_id)
        if row is None:  # held by another transaction (or sealed meanwhile by another sealer: then so are the rest)
            break
        run.append(row)
    return run


async def seal_events(session: AsyncSession, workspace_id: uuid.UUID, sealed: Sequence[Mapping[str, Any]]) -> None:
    """Give waiting events their place (``id``, ``recorded_at``, ``seq``, ``prev_hash``, ``hash``) and move the head.

    The caller holds the head's lock. ``seq IS NULL`` in the condition: a place is given once (the append-only
    trigger refuses any other change of it too).
    """
    await session.execute(
        text(
            """
            UPDATE consent_events e SET seq = u.seq, prev_hash = u.prev_hash, hash = u.hash
              FROM unnest(CAST(:ids AS uuid[]), CAST(:recorded AS timestamptz[]), CAST(:seqs AS bigint[]),
                          CAST(:prevs AS bytea[]), CAST(:hashes AS bytea[])) AS u(id, recorded_at, seq, prev_hash, hash)
             WHERE e.workspace_id = :ws AND e.id = u.id AND e.recorded_at = u.recorded_at AND e.seq IS NULL
            """
        ),
        {
            "ws": workspace_id,
            "ids": [row["id"] for row in sealed],
            "recorded": [row["recorded_at"] for row in sealed],
            "seqs": [row["seq"] for row in sealed],
            "prevs": [row["prev_hash"] for row in sealed],
            "hashes": [row["hash"] for row in sealed],
        },
    )
    last = sealed[-1]
    await session.execute(
        text("UPDATE ledger_heads SET last_seq = :seq, last_hash = :hash WHERE workspace_id = :ws"),
        {"seq": last["seq"], "hash": last["hash"], "ws": workspace_id},
    )


def _merged_with(contact_id: uuid.UUID) -> Any:
    """The contact and the contacts merged into it: their events are the contact's history."""
    return select(Contact.id).where(or_(Contact.id == contact_id, Contact.merged_into == contact_id))


#: The same in SQL, for ``:contact_id``.
_MERGED_WITH = "(SELECT id FROM contacts WHERE id = :contact_id OR merged_into = :contact_id)"


async def events_of_contact(
    session: AsyncSession, contact_id: uuid.UUID, after_seq: int, limit: int | None
) -> Sequence[ConsentEvent]:
    """A contact's ledger entries, oldest first (``limit`` None: all)."""
    return (
        await session.scalars(
            select(ConsentEvent)
            .where(
                ConsentEvent.contact_id.in_(_merged_with(contact_id)),
                # those waiting for the sealer come last (a reader that pages by seq seals first)
                or_(ConsentEvent.seq > after_seq, ConsentEvent.seq.is_(None)),
            )
            .order_by(ConsentEvent.seq.asc().nulls_last(), ConsentEvent.intake)
            .limit(limit)
        )
    ).all()


async def stream_chain(session: AsyncSession, workspace_id: uuid.UUID, upto: int) -> AsyncIterator[ConsentEvent]:
    """The workspace's sealed events up to seq ``upto`` in chain order, streamed with a server-side cursor."""
    result = await session.stream_scalars(
        select(ConsentEvent)
        .where(ConsentEvent.workspace_id == workspace_id, ConsentEvent.seq <= upto)
        .order_by(ConsentEvent.seq)
        # An audit reads what is stored, never objects this session happens to hold already.
        .execution_options(yield_per=1000, populate_existing=True)
    )
    async for event in result:
        yield event


async def head_of(session: AsyncSession, workspace_id: uuid.UUID, *, fresh: bool = False) -> LedgerHead | None:
    """The chain head row (``fresh``: read again, whatever the session holds)."""
    return await session.get(LedgerHead, workspace_id, populate_existing=fresh)


async def workspaces_with_events(session: AsyncSession) -> Sequence[uuid.UUID]:
    """Every workspace that has a chain, or events waiting for their place in one."""
    return (
        await session.scalars(
            text(
                "SELECT workspace_id FROM ledger_heads"
                " UNION SELECT DISTINCT workspace_id FROM consent_events WHERE seq IS NULL ORDER BY 1"
            )
        )
    ).all()


_SUPPRESSION_UNIQUE = "uq_suppressions_workspace_id_key_key_version_scope_purpose_id"


def _suppression_identity(row: Mapping[str, Any]) -> tuple[Any, ...]:
    return (row["workspace_id"], bytes(row["key"]), row["key_version"], row["scope"], row.get("purpose_id"))


def _robinson_like(row: Mapping[str, Any]) -> bool:
    """Whether a suppression row is one a Robinson key stands for (print, all marketing, any purpose, no end)."""
    return (
        row.get("channel") == Channel.PRINT.value
        and row.get("scope") == SuppressionScope.ALL_MARKETING.value
        and row.get("purpose_id") is None
    )


async def _robinson_listed(session: AsyncSession, rows: Sequence[Mapping[str, Any]]) -> set[tuple[Any, ...]]:
    """The identities of those of ``rows`` (Robinson-like) whose key is in ``robinson_keys``: one query, if any.

    Such a row is already in force, as a Robinson key, and is kept as it is: what ``ON CONFLICT`` did when the
    Robinson entries were rows of ``suppressions`` (before migration 0042).
    """
    wanted = [row for row in rows if _robinson_like(row)]
    if not wanted:
        return set()
    found = await session.execute(
        select(RobinsonKey.workspace_id, RobinsonKey.key).where(
            RobinsonKey.workspace_id.in_({row["workspace_id"] for row in wanted}),
            RobinsonKey.key.in_({bytes(row["key"]) for row in wanted}),
        )
    )
    listed = {(workspace_id, bytes(key)) for workspace_id, key in found.all()}
    return {_suppression_identity(row) for row in wanted if (row["workspace_id"], bytes(row["key"])) in listed}


async def add_suppressions(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    """Insert suppression keys; an existing one gains the row's reason among its ``reasons``; a pause becomes permanent.

    A row that already holds the reason is left as it is (no new row version). A pause (reason ``paused``, with an
    end) of the same key and scope becomes this permanent row, with the permanent reason only: a withdrawal,
    complaint or erasure must not end when the pause does. The pause's end, if still ahead, is kept in
    ``paused_until``, so that lifting the permanent reason (:func:`lift_reason`) leaves the pause running.
    """
    unique = {_suppression_identity(row): row for row in rows}  # one statement may touch a row only once
    listed = await _robinson_listed(session, [row for row in unique.values() if _robinson_like(row)])
    unique = {identity: row for identity, row in unique.items() if identity not in listed}
    if unique:
        statement = insert(Suppression).values(
            [{"id": uuid7(), **row, "reasons": [row["reason"]]} for row in unique.values()]
        )
        paused = Suppression.until.is_not(None)
        await session.execute(
            statement.on_conflict_do_update(
                constraint=_SUPPRESSION_UNIQUE,
                set_={
                    "reason": case((paused, statement.excluded.reason), else_=Suppression.reason),
                    "reasons": case(
                        (paused, statement.excluded.reasons),
                        else_=Suppression.reasons.op("||")(statement.excluded.reasons),
                    ),
                    "paused_until": case(
                        (Suppression.until > func.now(), Suppression.until),
                        (paused, None),
                        else_=Suppression.paused_until,
                    ),
                    "until": None,
                },
                where=or_(paused, ~Suppression.reasons.contains(statement.excluded.reasons)),
            )
        )


async def pause_keys(session: AsyncSession, rows: Sequence[dict[str, Any]], until: datetime) -> None:
    """Pause marketing to these keys (``all_marketing`` rows of reason ``paused``) until ``until``.

    An existing pause of the key gets the new end (shorter or longer: the person's latest choice). A permanent
    suppression already stops everything a pause would: it keeps the pause's end in ``paused_until``, so that the
    pause still runs should its permanent reasons be lifted (:func:`lift_reason`).
    """
    unique = {_suppression_identity(row): row for row in rows}
    # a pause is all marketing: a key on the Robinson list already stops that for good
    listed = await _robinson_listed(session, [{**row, "scope": SuppressionScope.ALL_MARKETING.value} for row in rows])
    unique = {
        identity: row
        for identity, row in unique.items()
        if (identity[0], identity[1], identity[2], SuppressionScope.ALL_MARKETING.value, None) not in listed
    }
    if not unique:
        return
    values = [
        {
            "id": uuid7(),
            **row,
            "scope": SuppressionScope.ALL_MARKETING.value,
            "purpose_id": None,
            "reason": SuppressionReason.PAUSED.value,
            "reasons": [SuppressionReason.PAUSED.value],
            "until": until,
        }
        for row in unique.values()
    ]
    statement = insert(Suppression).values(values)
    paused = Suppression.until.is_not(None)
    await session.execute(
        statement.on_conflict_do_update(
            constraint=_SUPPRESSION_UNIQUE,
            set_={
                "until": case((paused, statement.excluded.until), else_=None),
                "paused_until": case((paused, None), else_=statement.excluded.until),
            },
        )
    )


async def end_pauses(session: AsyncSession, workspace_id: uuid.UUID, keys: Collection[bytes]) -> int:
    """Delete the pauses (running or over) of these keys, and those kept under permanent rows.

    Answers how many rows of a pause of their own were deleted.
    """
    if not keys:
        return 0
    scope = {"workspace_id": workspace_id, "keys": list(keys)}
    deleted = await session.execute(
        text("DELETE FROM suppressions WHERE workspace_id = :workspace_id AND key = ANY(:keys) AND until IS NOT NULL"),
        scope,
    )
    await session.execute(
        text(
            "UPDATE suppressions SET paused_until = NULL"
            " WHERE workspace_id = :workspace_id AND key = ANY(:keys) AND paused_until IS NOT NULL"
        ),
        scope,
    )
    return int(deleted.rowcount)  # type: ignore[attr-defined]  # CursorResult of a DELETE


async def lift_reason(
    session: AsyncSession, workspace_id: uuid.UUID, keys: Collection[bytes], reason: SuppressionReason
) -> None:
    """Take ``reason`` away from the ``reasons`` of the workspace's suppressions of all marketing under ``keys``.

    A row left without a reason goes, or becomes the pause it kept (``paused_until`` still ahead); a row whose
    label (``reason``) named the lifted source is labelled by the first known one left (a row written before
    migration 0047 may have ``unrecorded`` only: it stays, with its label). A row without an end is never labelled
    ``paused``: ``paused`` among its reasons is an old writer's (see below) and becomes ``unrecorded``. Rows of other
    scopes, pauses' own rows and the Robinson keys are not touched. The caller chooses the keys: only those whose
    source it knows to be its own (:func:`app.ledger.actions.withdraw_objection`).
    """
    if not keys:
        return
    scope = {
        "workspace_id": workspace_id,
        "keys": list(keys),
        "reason": reason.value,
        "scope": SuppressionScope.ALL_MARKETING.value,
        "paused": SuppressionReason.PAUSED.value,
        "unrecorded": SuppressionSource.UNRECORDED.value,
    }
    held = (
        "workspace_id = :workspace_id AND key = ANY(:keys) AND scope = :scope AND purpose_id IS NULL"
        " AND until IS NULL AND reasons @> ARRAY[CAST(:reason AS text)]"
    )
    await session.execute(
        text(
            f"DELETE FROM suppressions WHERE {held} AND reasons <@ ARRAY[CAST(:reason AS text)]"  # noqa: S608  # constants
            " AND (paused_until IS NULL OR paused_until <= now())"
        ),
        scope,
    )
    stripped = "array_remove(reasons, CAST(:reason AS text))"
    # `paused` among the reasons of a row without an end was not written by a pause (a pause's row has an end, and one
    # kept under a permanent row is in `paused_until`): code older than 0047, still running during a rolling deploy,
    # turned a pause into this permanent row and left its reasons as they were. Its source is not known: `unrecorded`
    # (the row stays); labelled `paused` without an end, it would break ck_suppressions_until_iff_paused (a 500)
    left = (
        f"CASE WHEN {stripped} @> ARRAY[CAST(:paused AS text)]"
        f" THEN array_remove(array_remove({stripped}, CAST(:paused AS text)), CAST(:unrecorded AS text))"
        "      || ARRAY[CAST(:unrecorded AS text)]"
        f" ELSE {stripped} END"
    )
    await session.execute(
        text(
            f"""
            UPDATE suppressions
               SET reasons = CASE WHEN cardinality({left}) = 0 THEN ARRAY[CAST(:paused AS text)] ELSE {left} END,
                   reason = CASE WHEN cardinality({left}) = 0 THEN :paused
                                 WHEN reason <> :reason THEN reason
                                 ELSE coalesce((SELECT r FROM unnest({left}) AS r WHERE r <> :unrecorded LIMIT 1),
                                               reason) END,
                   until = CASE WHEN cardinality({left}) = 0 THEN paused_until END,
                   paused_until = CASE WHEN cardinality({left}) = 0 THEN NULL ELSE paused_until END
             WHERE {held}
            """  # noqa: S608  # constants only; the values are parameters
        ),
        scope,
    )


async def lock_suppressions(session: AsyncSession, workspace_id: uuid.UUID, keys: Collection[bytes]) -> None:
    """Lock the workspace's suppressions under ``keys`` (in id order) for the rest of the transaction.

    A writer that adds a reason to one of them (:func:`add_suppressions`, which locks the row even where it already
    holds the reason) has committed before this returns, or waits until the caller commits: what the caller reads
    next (who else holds the keys, :func:`keys_held_by_others`) includes that writer's address.
    """
    if not keys:
        return
    await session.execute(
        text(
            "SELECT id FROM suppressions WHERE workspace_id = :workspace_id AND key = ANY(:keys) ORDER BY id FOR UPDATE"
        ),
        {"workspace_id": workspace_id, "keys": list(keys)},
    )


async def keys_held_by_others(
    session: AsyncSession, workspace_id: uuid.UUID, contact_id: uuid.UUID, keys: Collection[bytes]
) -> set[bytes]:
    """Those of ``keys`` that an address of another contact of the workspace is matched by (its suppression keys).

    Two addresses share a key where the key's form of them is one: email addresses that differ only in the case of
    the local part, a person's postal address without a name and the household key of a named person living there.
    One probe of ``ix_contact_points_suppression_keys`` (GIN) for all of them.
    """
    if not keys:
        return set()
    held = await session.scalars(
        text(
            """
            SELECT DISTINCT k.key
              FROM contact_points p
             CROSS JOIN LATERAL unnest(p.suppression_keys) AS k(key)
             WHERE p.suppression_keys && CAST(:keys AS bytea[])
               AND p.workspace_id = :workspace_id AND p.contact_id <> :contact_id
               AND k.key = ANY(CAST(:keys AS bytea[]))
            """
        ),
        {"workspace_id": workspace_id, "contact_id": contact_id, "keys": list(keys)},
    )
    return {bytes(key) for key in held.all()}


async def objection_scopes(session: AsyncSession, contact_id: uuid.UUID) -> list[str]:
    """The scopes of the contact's own (Art. 21) objections since its last withdrawal of one, oldest first.

    Read from the ledger (the evidence of each ``objection`` event records its ``kind`` and ``scope``; one without a
    scope, a withdrawal of print's purposes, is ``print``), over the contacts merged into this one too (their history
    is the contact's). A sticker's and a Robinson entry's are not the person's own.
    """
    rows = await session.execute(
        text(
            f"""
            SELECT e.trigger, coalesce(e.personal -> 'evidence' ->> 'scope', 'print') AS scope
              FROM consent_events e
             WHERE e.contact_id IN {_MERGED_WITH}
               AND (e.trigger = :withdrawn AND e.channel = :print
                    OR e.trigger = :objection AND e.personal -> 'evidence' ->> 'kind' = ANY(:own))
             ORDER BY e.seq ASC NULLS LAST, e.intake
            """  # noqa: S608  # a constant
        ),
        {
            "contact_id": contact_id,
            "withdrawn": Trigger.OBJECTION_WITHDRAWN.value,
            "objection": Trigger.OBJECTION.value,
            "print": Channel.PRINT.value,
            "own": [ObjectionKind.PERSONAL.value, ObjectionKind.ART21.value],
        },
    )
    scopes: list[str] = []
    for trigger, scope in rows.all():
        if trigger == Trigger.OBJECTION_WITHDRAWN:
            scopes.clear()
        else:
            scopes.append(scope)
    return scopes


async def pauses_of(
    session: AsyncSession, workspace_id: uuid.UUID, keys: Collection[bytes], now: datetime, *, kept: bool = False
) -> dict[bytes, datetime]:
    """The end of the running pause of each of these keys that has one (``until`` after ``now``).

    ``kept``: a pause kept under a permanent row (``paused_until`` after ``now``) counts too: it runs on should the
    row's permanent sources be lifted, and ending it early ends it (:func:`end_pauses`).
    """
    if not keys:
        return {}
    end = func.coalesce(Suppression.until, Suppression.paused_until) if kept else Suppression.until
    rows = await session.execute(
        select(Suppression.key, end).where(
            Suppression.workspace_id == workspace_id,
            Suppression.key.in_(list(keys)),
            end > now,
        )
    )
    found: dict[bytes, datetime] = {}
    for key, until in rows.all():
        if until is not None:
            found[bytes(key)] = max(until, found.get(bytes(key), until))
    return found


async def set_reachability(
    session: AsyncSession, point_id: uuid.UUID, reachability: str, at: datetime, *, only_from: str | None = None
) -> None:
    """Record what a provider told us about an address (kept apart from permission).

    ``undeliverable`` never replaces ``provider_blocked``: the provider blocks sends to the number until the person
    texts START, and a late failure report (a 30005 of an earlier message) must not turn the block into a state
    that any text from the number clears (hostile review of 2026-12-05). ``only_from``: only while the address is
    still in that state (what the caller read and decided on; a report committed since stays).
    """
    query = update(ContactPoint).where(ContactPoint.id == point_id)
    if only_from is not None:
        query = query.where(ContactPoint.reachability == only_from)
    if reachability == Reachability.UNDELIVERABLE.value:
        query = query.where(ContactPoint.reachability != Reachability.PROVIDER_BLOCKED.value)
    await session.execute(query.values(reachability=reachability, reachability_changed_at=at))


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
    """How many suppression rows of the workspace hold one of ``keys`` (a Robinson key counts as one)."""
    if not keys:
        return 0
    return int(
        await session.scalar(
            text(
                "SELECT (SELECT count(*) FROM suppressions WHERE workspace_id = :workspace_id AND key = ANY(:keys))"
                " + (SELECT count(*) FROM robinson_keys WHERE workspace_id = :workspace_id AND key = ANY(:keys))"
            ),
            {"workspace_id": workspace_id, "keys": list(keys)},
        )
        or 0
    )


async def suppressions_of(
    session: AsyncSession, workspace_id: uuid.UUID, keys: Sequence[bytes]
) -> Sequence[Suppression]:
    """The workspace's suppressions under any of ``keys``, oldest first.

    A Robinson key is answered as the suppression it stands for (print, all marketing, reason ``robinson``, no
    end): a transient object, never added to the session.
    """
    if not keys:
        return []
    found = list(
        (
            await session.scalars(
                select(Suppression).where(Suppression.workspace_id == workspace_id, Suppression.key.in_(list(keys)))
            )
        ).all()
    )
    listed = await session.scalars(
        select(RobinsonKey).where(RobinsonKey.workspace_id == workspace_id, RobinsonKey.key.in_(list(keys)))
    )
    found += [
        Suppression(
            id=uuid.UUID(int=0),
            workspace_id=workspace_id,
            key=row.key,
            key_version=row.key_version,
            channel=Channel.PRINT.value,
            scope=SuppressionScope.ALL_MARKETING.value,
            purpose_id=None,
            reason=SuppressionReason.ROBINSON.value,
            reasons=[SuppressionReason.ROBINSON.value],
            until=None,
            paused_until=None,
            created_at=row.created_at,
        )
        for row in listed
    ]
    return sorted(found, key=lambda suppression: suppression.created_at)


async def lock_contact(session: AsyncSession, workspace_id: uuid.UUID, contact_id: uuid.UUID) -> bool:
    """Lock the contact's row for the rest of the transaction; ``False`` when it is gone (erased meanwhile).

    The contact as loaded in the session is read again with the lock (``populate_existing``): what a merge that
    committed while this waited wrote (``merged_into``) is seen.
    """
    locked = await session.scalar(
        select(Contact)
        .where(Contact.workspace_id == workspace_id, Contact.id == contact_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return locked is not None


#: What an erasure deletes of the ledger's own rows, in an order the foreign keys allow (the other packages'
#: rows that reference these went first, through their privacy hooks).
_ERASE = (
    ("consents", "DELETE FROM consents WHERE workspace_id = :workspace_id AND contact_id = :contact_id"),
    ("contact_points", "DELETE FROM contact_points WHERE workspace_id = :workspace_id AND contact_id = :contact_id"),
    # the contacts merged into it go with it (``merged_into`` cascades)
    ("contacts", "DELETE FROM contacts WHERE workspace_id = :workspace_id AND id = :contact_id"),
)


async def erase_contact(
    session: AsyncSession, workspace_id: uuid.UUID, contact_id: uuid.UUID, *, keep_evidence_of: Sequence[uuid.UUID]
) -> dict[str, int]:
    """Erase the evidence of the contact's events and delete the contact, its addresses and consents.

    The events stay (the hash chain covers only their digests); the evidence of those in ``keep_evidence_of``
    (the erasure's own, which says how it was requested) stays too. Answers a row count per kind.
    """
    params = {"workspace_id": workspace_id, "contact_id": contact_id, "keep": list(keep_evidence_of)}
    erased = await session.execute(
        text(
            "UPDATE consent_events SET personal = NULL WHERE workspace_id = :workspace_id"  # noqa: S608  # a constant
            f" AND contact_id IN {_MERGED_WITH} AND personal IS NOT NULL AND NOT (id = ANY(:keep))"
        ),
        params,
    )
    counts = {"evidence_erased": erased.rowcount}  # type: ignore[attr-defined]
    for kind, statement in _ERASE:
        result = await session.execute(text(statement), params)
        counts[kind] = result.rowcount  # type: ignore[attr-defined]
    return counts


async def count_events_of(session: AsyncSession, workspace_id: uuid.UUID, contact_id: uuid.UUID) -> int:
    """How many ledger events name the contact."""
    return int(
        await session.scalar(
            text(
                "SELECT count(*) FROM consent_events"  # noqa: S608  # a constant
                f" WHERE workspace_id = :workspace_id AND contact_id IN {_MERGED_WITH}"
            ),
            {"workspace_id": workspace_id, "contact_id": contact_id},
        )
        or 0
    )


_UTC_MICROS = """to_char({} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')"""

#: The audit stream's query; it joins the purpose's key in (a read of the purposes' table, kept here because the
#: stream is one ``COPY`` statement).
_EVENTS_SQL = f"""
    SELECT e.id, e.seq, e.contact_id, e.contact_point_id, e.purpose_id, p.key AS purpose, e.channel, e.trigger,
           e.from_state, e.to_state, e.legal_basis, e.notice_id, e.actor_type, {{actor_id}} AS actor_id,
           {_UTC_MICROS.format("e.occurred_at")} AS occurred_at, {_UTC_MICROS.format("e.recorded_at")} AS recorded_at,
           e.personal -> 'evidence' AS evidence, encode(e.personal_digest, 'hex') AS personal_digest,
           encode(e.prev_hash, 'hex') AS prev_hash, encode(e.hash, 'hex') AS hash
      FROM consent_events e LEFT JOIN purposes p ON p.id = e.purpose_id
     WHERE e.workspace_id = $1 AND e.recorded_at >= $2 AND e.recorded_at < $3
       AND e.seq IS NOT NULL  -- one that waits for the sealer is streamed once sealed
     ORDER BY e.seq
"""  # noqa: S608  # constant text; every input is a bind parameter
EVENTS_SQL = _EVENTS_SQL.format(actor_id="e.actor_id")
#: The same rows for the CSV export: the one free-text column neutralised against formula injection (the
#: evidence is a JSON object, the others ids, keys and words of our own).
EVENTS_CSV_SQL = _EVENTS_SQL.format(actor_id=csv_cell("e.actor_id"))


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
    await copy_rows(driver, EVENTS_CSV_SQL, lines, workspace_id, since, until, as_csv=as_csv, sink=sink)


# --- what other packages read and write, each scoped to one workspace ------------------------------------------


async def get_contact_point(session: AsyncSession, workspace_id: uuid.UUID, point_id: uuid.UUID) -> ContactPoint | None:
    """A contact point of the workspace by id."""
    return await session.scalar(
        select(ContactPoint).where(ContactPoint.workspace_id == workspace_id, ContactPoint.id == point_id)
    )


async def get_contact_point_unscoped(session: AsyncSession, point_id: uuid.UUID) -> ContactPoint | None:
    """A contact point by id in any workspace: only for an id from a signed link, which names no workspace."""
    return await session.get(ContactPoint, point_id)


async def consent_state(
    session: AsyncSession, workspace_id: uuid.UUID, point_id: uuid.UUID, purpose_id: uuid.UUID
) -> State:
    """The state of an address's consent to a purpose (``none`` without a row)."""
    state = await session.scalar(
        select(Consent.state).where(
            Consent.workspace_id == workspace_id, Consent.contact_point_id == point_id, Consent.purpose_id == purpose_id
        )
    )
    return State(state) if state else State.NONE


async def consent_notice_id(
    session: AsyncSession, workspace_id: uuid.UUID, point_id: uuid.UUID, purpose_id: uuid.UUID
) -> uuid.UUID | None:
    """The notice an address's consent to a purpose rests on."""
    return await session.scalar(
        select(Consent.notice_id).where(
            Consent.workspace_id == workspace_id, Consent.contact_point_id == point_id, Consent.purpose_id == purpose_id
        )
    )


async def contacts_by_refs(session: AsyncSession, workspace_id: uuid.UUID, refs: Collection[str]) -> Sequence[Contact]:
    """The workspace's contacts whose id or ``external_id`` is one of ``refs`` (one query for a batch)."""
    ids = []
    for ref in refs:
        with contextlib.suppress(ValueError):
            ids.append(uuid.UUID(ref))
    return (
        await session.scalars(
            select(Contact).where(
                Contact.workspace_id == workspace_id, or_(Contact.external_id.in_(refs), Contact.id.in_(ids))
            )
        )
    ).all()


async def contact_points_with_values(
    session: AsyncSession, workspace_id: uuid.UUID, values: Collection[str]
) -> Sequence[ContactPoint]:
    """The workspace's contact points (any channel) whose normalised value is one of ``values``."""
    return (
        await session.scalars(
            select(ContactPoint).where(ContactPoint.workspace_id == workspace_id, ContactPoint.value.in_(values))
        )
    ).all()


async def external_ids(
    session: AsyncSession, workspace_id: uuid.UUID, contact_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, str | None]:
    """The ``external_id`` of each of the workspace's contacts with these ids."""
    rows = await session.execute(
        text("SELECT id, external_id FROM contacts WHERE workspace_id = :workspace_id AND id = ANY(:ids)"),
        {"workspace_id": workspace_id, "ids": list(contact_ids)},
    )
    return {row.id: row.external_id for row in rows}


async def suppressions_with_keys(
    session: AsyncSession, workspace_id: uuid.UUID, keys: Collection[bytes]
) -> set[tuple[bytes, SuppressionScope, uuid.UUID | None]]:
    """``(key, scope, purpose id)`` of the workspace's permanent suppressions holding one of ``keys``.

    A pause is left out: it stops sends for a while, not the recording of a consent.
    """
    rows = await session.execute(
        select(Suppression.key, Suppression.scope, Suppression.purpose_id).where(
            Suppression.workspace_id == workspace_id, Suppression.key.in_(keys), Suppression.until.is_(None)
        )
    )
    found = {(bytes(key), SuppressionScope(scope), purpose_id) for key, scope, purpose_id in rows.all()}
    listed = await session.scalars(
        select(RobinsonKey.key).where(RobinsonKey.workspace_id == workspace_id, RobinsonKey.key.in_(keys))
    )
    return found | {(bytes(key), SuppressionScope.ALL_MARKETING, None) for key in listed}


def _keys_table(name: str) -> str:
    """A temporary table of the caller's, named in code (never input); checked all the same, as it goes into SQL."""
    if not name.isidentifier():
        raise ValueError(f"not a table name: {name!r}")
    return name


async def add_robinson_keys_from_table(session: AsyncSession, workspace_id: uuid.UUID, keys_table: str) -> int:
    """Add every key of ``keys_table`` (columns ``key, key_version``) to the workspace's Robinson keys; how many new.

    For lists too long to pass as parameters: the caller fills a (temporary) table of its own, e.g. by COPY.
    One plain insert of the new keys in key order into one B-tree: no foreign key checked per row (the workspace
    row is locked ``FOR SHARE`` once instead: a workspace deletion, which locks it ``FOR NO KEY UPDATE``, waits
    for the import, and an import after a deletion began finds it marked and stops), no ``ON CONFLICT`` per row
    (imports of one workspace take turns, under an advisory lock, so the keys found absent stay absent).
    Counted as new, as when the keys were rows of ``suppressions`` (migration 0042): a key not yet stopping all
    marketing on print for good; a pause of such a key becomes this permanent suppression (the pause row goes).
    """
    table = _keys_table(keys_table)
    locked = await session.scalar(
        text("SELECT deleted_at IS NULL FROM workspaces WHERE id = :workspace_id FOR SHARE"),
        {"workspace_id": workspace_id},
    )
    if not locked:
        # the key was valid when the import began: its workspace is being deleted (a conflict with its state, as the
        # operator's export of a tombstone answers), not an unknown one
        raise Conflict("The workspace is being deleted; nothing of the list was imported.", code="workspace_deleted")
    await session.execute(select(func.pg_advisory_xact_lock(func.hashtextextended(f"robinson_keys:{workspace_id}", 0))))
    # the sort of a million keys in memory rather than in temporary files, for this statement only
    work_mem = await session.scalar(text("SELECT current_setting('work_mem')"))
    await session.execute(text("SELECT set_config('work_mem', '128MB', true)"))
    inserted = await session.execute(
        text(
            f"""
            INSERT INTO robinson_keys (workspace_id, key, key_version)
            SELECT :workspace_id, r.key, min(r.key_version)
              FROM {table} r
             WHERE NOT EXISTS (SELECT 1 FROM robinson_keys k WHERE k.workspace_id = :workspace_id AND k.key = r.key)
               AND NOT EXISTS (SELECT 1 FROM suppressions s
                                WHERE s.workspace_id = :workspace_id AND s.key = r.key AND s.scope = :scope
                                  AND s.purpose_id IS NULL AND s.until IS NULL)
             GROUP BY r.key
             ORDER BY r.key
            """  # noqa: S608  # the table name is checked to be an identifier, the values are parameters
        ),
        {"workspace_id": workspace_id, "scope": SuppressionScope.ALL_MARKETING.value},
    )
    await session.execute(text("SELECT set_config('work_mem', :value, true)"), {"value": work_mem})
    scope = {"workspace_id": workspace_id, "scope": SuppressionScope.ALL_MARKETING.value}
    paused = await session.scalar(
        text(
            """
            SELECT EXISTS (SELECT 1 FROM suppressions s
                            WHERE s.workspace_id = :workspace_id AND s.until IS NOT NULL AND s.scope = :scope
                              AND s.purpose_id IS NULL)
            """
        ),
        scope,
    )
    if paused:  # (seldom: a pause of marketing that a listing now makes permanent)
        async with _without_nested_loops(session):
            await session.execute(
                text(
                    f"""
                    DELETE FROM suppressions s
                     WHERE s.workspace_id = :workspace_id AND s.until IS NOT NULL AND s.scope = :scope
                       AND s.purpose_id IS NULL AND EXISTS (SELECT 1 FROM {table} r WHERE r.key = s.key)
                    """  # noqa: S608  # the table name is checked to be an identifier, the values are parameters
                ),
                scope,
            )
    return int(inserted.rowcount)  # type: ignore[attr-defined]  # CursorResult of an INSERT


@asynccontextmanager
async def _without_nested_loops(session: AsyncSession) -> AsyncIterator[None]:
    """No nested-loop join in the statements inside (this transaction only; the setting is restored after).

    For a join against a caller's unindexed key table (a list of a million keys): a nested loop would scan it once
    per row of the other side, which a planner that underestimates that side (statistics not yet updated after
    a load) chooses: 117 s for 100,000 rows (docs/benchmarks.md, 2026-12-04). Without it, the join is a hash or a
    merge join: one pass over each side, whatever the estimates.
    """
    before = await session.scalar(text("SELECT current_setting('enable_nestloop')"))
    await session.execute(text("SELECT set_config('enable_nestloop', 'off', true)"))
    yield  # not restored when a statement inside failed: the transaction is aborted (and the setting was local to
    # it); restoring there would hide the statement's own error behind "current transaction is aborted" (review)
    await session.execute(text("SELECT set_config('enable_nestloop', :value, true)"), {"value": before})


async def unobjected_print_points_in_table(
    session: AsyncSession, workspace_id: uuid.UUID, keys_table: str
) -> list[uuid.UUID]:
    """Ids of the workspace's print addresses holding a key of ``keys_table`` (column ``key``), not objected yet.

    In two steps, so that the caller's table needs no index: the workspace's print addresses not objected, with
    their keys, into a temporary table (the planner free to use every index of the ledger's tables), then that
    table joined with ``keys_table`` without nested loops (:func:`_without_nested_loops`: both are the session's
    own tables, so a hash join is all it costs: one pass over the list).
    """
    await session.execute(
        text("CREATE TEMP TABLE IF NOT EXISTS robinson_print_keys (id uuid, key bytea) ON COMMIT DROP")
    )
    await session.execute(text("TRUNCATE robinson_print_keys"))
    await session.execute(
        text(
            """
            INSERT INTO robinson_print_keys (id, key)
            SELECT cp.id, k.key
              FROM contact_points cp
              CROSS JOIN LATERAL unnest(cp.suppression_keys) AS k(key)
              LEFT JOIN consents c ON c.contact_point_id = cp.id AND c.purpose_id IS NULL
             WHERE cp.workspace_id = :workspace_id AND cp.channel = 'print'
               AND coalesce(c.state, 'none') <> :objected
            """
        ),
        {"workspace_id": workspace_id, "objected": State.OBJECTED.value},
    )
    async with _without_nested_loops(session):
        rows = (
            await session.execute(
                text(
                    f"""
                    SELECT DISTINCT p.id
                      FROM robinson_print_keys p
                      JOIN {_keys_table(keys_table)} r ON r.key = p.key
                     ORDER BY p.id
                    """  # noqa: S608  # the table name is checked to be an identifier
                )
            )
        ).all()
    return [row.id for row in rows]


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


# --- identity merge (:mod:`app.ledger.merge`) ------------------------------------------------------------------


async def move_contact_references(session: AsyncSession, survivor: uuid.UUID, duplicate: uuid.UUID) -> dict[str, int]:
    """Point every row that references the duplicate contact at the survivor, in whatever table holds one.

    The tables are read from the catalog (every foreign key to ``contacts``, by its column beside ``workspace_id``),
    so a table added later moves too. Answers the rows moved per table.
    """
    columns = (
        await session.execute(
            text(
                """
                SELECT c.conrelid::regclass::text AS tbl, a.attname AS col
                  FROM pg_constraint c
                  JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = ANY(c.conkey)
                   AND a.attname <> 'workspace_id'  -- the keys are co-located (migration 0040)
                 WHERE c.contype = 'f' AND c.confrelid = 'contacts'::regclass
                   AND c.conrelid <> 'contacts'::regclass
                 ORDER BY 1, 2
                """
            )
        )
    ).all()
    moved: dict[str, int] = {}
    for row in columns:
        table, column = _identifier(row.tbl), _identifier(row.col)
        result = await session.execute(
            text(f"UPDATE {table} SET {column} = :survivor WHERE {column} = :duplicate"),  # noqa: S608  # catalog names
            {"survivor": survivor, "duplicate": duplicate},
        )
        if result.rowcount:  # type: ignore[attr-defined]
            moved[row.tbl.strip('"')] = result.rowcount  # type: ignore[attr-defined]
    # Erasure requests name the contact without a foreign key (the id outlives the contact): a pending one of the
    # duplicate is the survivor's now (the person asked), unless the survivor has one pending already.
    requests = await session.execute(
        text(
            """
            UPDATE erasure_requests r SET contact_id = :survivor
             WHERE r.contact_id = :duplicate
               AND NOT EXISTS (SELECT 1 FROM erasure_requests o
                                WHERE o.contact_id = :survivor AND o.status = 'pending' AND r.status = 'pending')
            """
        ),
        {"survivor": survivor, "duplicate": duplicate},
    )
    if requests.rowcount:  # type: ignore[attr-defined]
        moved["erasure_requests"] = requests.rowcount  # type: ignore[attr-defined]
    return moved


def _identifier(name: str) -> str:
    """A catalog name as a quoted SQL identifier (``regclass::text`` quotes only where it must)."""
    bare = name[1:-1] if name.startswith('"') and name.endswith('"') else name
    if not bare or not all(ch.isalnum() or ch == "_" for ch in bare):
        raise ValueError(name)
    return f'"{bare}"'


async def merged_into(session: AsyncSession, workspace_id: uuid.UUID, contact_id: uuid.UUID) -> list[uuid.UUID]:
    """The contacts merged into this one (their stubs)."""
    return list(
        (
            await session.scalars(
                select(Contact.id).where(Contact.workspace_id == workspace_id, Contact.merged_into == contact_id)
            )
        ).all()
    )


async def repoint_stubs(
    session: AsyncSession, workspace_id: uuid.UUID, survivor: uuid.UUID, duplicate: uuid.UUID
) -> None:
    """Contacts merged into the duplicate earlier now name the survivor (a stub never points at a stub)."""
    await session.execute(
        update(Contact)
        .where(Contact.workspace_id == workspace_id, Contact.merged_into == duplicate)
        .values(merged_into=survivor)
    )


async def reload(session: AsyncSession, rows: Sequence[Any]) -> None:
    """Read the rows again from the database (another statement changed them)."""
    for row in rows:
        await session.refresh(row)


async def write(session: AsyncSession) -> None:
    """Write the session's pending changes now (an order that a unique constraint needs)."""
    await session.flush()


async def queue_contact_merged(
    session: AsyncSession, workspace_id: uuid.UUID, survivor: Contact, duplicate_id: uuid.UUID, now: datetime
) -> None:
    """Queue ``contact.merged`` for the workspace's webhook subscriptions that ask for it (same transaction)."""
    event_id = uuid.uuid4()
    await session.execute(
        text(
            """
            INSERT INTO webhook_deliveries (id, workspace_id, subscription_id, event_id, event_type, payload)
            SELECT gen_random_uuid(), :ws, s.id, :event_id, 'contact.merged',
                   jsonb_build_object('id', CAST(:event_text AS text), 'type', 'contact.merged',
                       'created_at', CAST(:now AS text),
                       'data', jsonb_build_object('contact_id', CAST(:survivor AS text),
                                                  'external_id', CAST(:external_id AS text),
                                                  'merged_contact_id', CAST(:duplicate AS text)))
              FROM webhook_subscriptions s
             WHERE s.workspace_id = :ws AND 'contact.merged' = ANY(s.events)
            """
        ),
        {
            "ws": workspace_id,
            "event_id": event_id,
            "event_text": str(event_id),
            "now": now.isoformat(),
            "survivor": str(survivor.id),
            "external_id": survivor.external_id,
            "duplicate": str(duplicate_id),
        },
    )


async def lift_suppressions(
    session: AsyncSession, workspace_id: uuid.UUID, keys: Collection[bytes], before: datetime
) -> list[str]:
    """Delete the workspace's suppressions of these keys made before ``before``; answers their reasons, sorted.

    For a recycled phone number (:mod:`app.ledger.reassigned`): they spoke for its former owner.
    """
    if not keys:
        return []
    deleted = await session.execute(
        text(
            "DELETE FROM suppressions WHERE workspace_id = :workspace_id AND key = ANY(:keys) AND created_at < :before "
            "RETURNING reason"
        ),
        {"workspace_id": workspace_id, "keys": list(keys), "before": before},
    )
    return sorted(deleted.scalars().all())


# --- recycled numbers (:mod:`app.ledger.reassigned`) -----------------------------------------------------------


async def said_no_since(session: AsyncSession, point_ids: Sequence[uuid.UUID], since: datetime) -> bool:
    """Whether the ledger records a no on one of the addresses at or after ``since``.

    A withdrawal, an objection or a pause, said again or anew: a suppression's ``created_at`` stays that of its
    first row when the same no is said again, so only the ledger knows who said it last.
    """
    found = await session.scalar(
        select(ConsentEvent.id)
        .where(
            ConsentEvent.contact_point_id.in_(list(point_ids)),
            ConsentEvent.occurred_at >= since,
            or_(ConsentEvent.to_state.in_([s.value for s in WITHDRAWN_STATES]), ConsentEvent.trigger == Trigger.PAUSE),
        )
        .limit(1)
    )
    return found is not None


async def detach_points(session: AsyncSession, points: Sequence[ContactPoint], contact_id: uuid.UUID) -> None:
    """Move addresses and their consents to ``contact_id`` (a new owner's); unverified, no external id.

    The ledger events, messages and deliveries stay with the contact they were recorded for. ``points`` are
    read again afterwards.
    """
    ids = [point.id for point in points]
    await session.execute(
        update(ContactPoint)
        .where(ContactPoint.id.in_(ids))
        .values(contact_id=contact_id, contact_external_id=None, verified_at=None, verified_via=None)
        .execution_options(synchronize_session=False)
    )
    await session.execute(
        update(Consent)
        .where(Consent.contact_point_id.in_(ids))
        .values(contact_id=contact_id)
        .execution_options(synchronize_session=False)
    )
    for point in points:
        await session.refresh(point)


async def first_events(session: AsyncSession, points: Sequence[ContactPoint]) -> dict[uuid.UUID, datetime]:
    """The earliest ledger event of each address under the contact that holds it now; none: left out.

    When it happened: an import's ``captured_at`` included.
    """
    if not points:
        return {}
    rows = await session.execute(
        select(ConsentEvent.contact_point_id, func.min(ConsentEvent.occurred_at))
        .where(
            or_(
                *(
                    (ConsentEvent.contact_point_id == point.id) & (ConsentEvent.contact_id == point.contact_id)
                    for point in points
                )
            )
        )
        .group_by(ConsentEvent.contact_point_id)
    )
    return {row[0]: row[1] for row in rows.all() if row[0] is not None}


async def held_before(session: AsyncSession, contact_id: uuid.UUID, point_ids: Sequence[uuid.UUID]) -> bool:
    """Whether the ledger records an event of ``contact_id`` on one of the addresses (it held them once)."""
    found = await session.scalar(
        select(ConsentEvent.id)
        .where(ConsentEvent.contact_id == contact_id, ConsentEvent.contact_point_id.in_(list(point_ids)))
        .limit(1)
    )
    return found is not None


# --- set-based writes of a large batch (the consent import): a few statements per batch, no ORM objects ---


@dataclass(frozen=True, slots=True)
class ConsentRow:
    """A locked consent row as :func:`lock_consent_rows` reads it: what planning and chaining need."""

    id: uuid.UUID
    state: str
    since: datetime | None
    notice_id: uuid.UUID | None
    version: int
    legal_basis: str | None = None
    last_event_id: uuid.UUID | None = None


#: A consent's projection: the columns a change moves (and what a loaded ORM object is refreshed with).
PROJECTION = ("state", "legal_basis", "notice_id", "since", "last_event_id", "version")


def refresh_loaded(session: AsyncSession, rows: Iterable[tuple[uuid.UUID, Mapping[str, Any]]]) -> None:
    """Give the consents this session has loaded the projection values written by SQL (``(id, values)`` pairs).

    What ``populate_existing`` does for an ORM statement: a caller that holds a :class:`Consent` of a row that a
    statement on tuples locked or moved sees what was locked or written, without a read.
    """
    identity_map = session.sync_session.identity_map
    if not any(key[0] is Consent for key in identity_map.keys()):  # noqa: SIM118  # the map's keys, not a dict's
        return  # none loaded (an import's batch): the pairs are not even made
    for consent_id, values in rows:
        loaded = identity_map.get(identity_key(Consent, (consent_id,)))  # the mapper's identity is the id
        if loaded is not None:
            for name, value in values.items():
                set_committed_value(loaded, name, value)


async def lock_consent_rows(
    session: AsyncSession, workspace_id: uuid.UUID, wanted: Sequence[ConsentKey]
) -> dict[tuple[uuid.UUID, uuid.UUID | None], ConsentRow]:
    """:func:`lock_consents` for a large batch: one statement, rows as tuples (no ORM objects to build).

    The rows are taken in the order given (``WITH ORDINALITY`` … ``ORDER BY``): callers pass them sorted as
    :func:`lock_consents` asks, so concurrent writers lock in one order. Loaded ORM objects of these rows are not
    refreshed here: the caller does that (:func:`refresh_loaded`).
    """
    if not wanted:
        return {}
    rows = await session.execute(
        text(
            """
            INSERT INTO consents (id, workspace_id, contact_id, contact_point_id, purpose_id, channel)
            SELECT u.id, :workspace_id, u.contact_id, u.contact_point_id, u.purpose_id, u.channel
              FROM unnest(CAST(:ids AS uuid[]), CAST(:contact_ids AS uuid[]), CAST(:point_ids AS uuid[]),
                          CAST(:purpose_ids AS uuid[]), CAST(:channels AS text[]))
                   WITH ORDINALITY AS u(id, contact_id, contact_point_id, purpose_id, channel, n)
             ORDER BY u.n
            ON CONFLICT ON CONSTRAINT uq_consents_contact_point_id_purpose_id
            DO UPDATE SET version = consents.version
            RETURNING id, contact_point_id, purpose_id, state, since, notice_id, version, legal_basis, last_event_id
            """
        ),
        {
            "workspace_id": workspace_id,
            "ids": uuid7s(len(wanted)),
            "contact_ids": [key.contact_id for key in wanted],
            "point_ids": [key.contact_point_id for key in wanted],
            "purpose_ids": [key.purpose_id for key in wanted],
            "channels": [key.channel for key in wanted],
        },
    )
    return {
        (point_id, purpose_id): ConsentRow(consent_id, state, since, notice_id, version, legal_basis, last_event_id)
        for consent_id, point_id, purpose_id, state, since, notice_id, version, legal_basis, last_event_id in rows
    }


#: :func:`lock_consent_rows`'s statement in the driver's parameters.
_LOCK_ROWS_SQL = """
INSERT INTO consents (id, workspace_id, contact_id, contact_point_id, purpose_id, channel)
SELECT u.id, $1, u.contact_id, u.contact_point_id, u.purpose_id, u.channel
  FROM unnest($2::uuid[], $3::uuid[], $4::uuid[], $5::uuid[], $6::text[])
       WITH ORDINALITY AS u(id, contact_id, contact_point_id, purpose_id, channel, n)
 ORDER BY u.n
ON CONFLICT ON CONSTRAINT uq_consents_contact_point_id_purpose_id
DO UPDATE SET version = consents.version
RETURNING id, contact_point_id, purpose_id, state, since, notice_id, version, legal_basis, last_event_id
"""


async def lock_consent_rows_on_driver(
    driver: Any, workspace_id: uuid.UUID, wanted: Sequence[ConsentKey]
) -> dict[tuple[uuid.UUID, uuid.UUID | None], ConsentRow]:
    """:func:`lock_consent_rows` on the driver connection of the caller's transaction (:func:`transaction_driver`)."""
    if not wanted:
        return {}
    with _as_dbapi_errors(_LOCK_ROWS_SQL):
        rows = await driver.fetch(
            _LOCK_ROWS_SQL,
            workspace_id,
            [uuid7() for _ in wanted],
            [key.contact_id for key in wanted],
            [key.contact_point_id for key in wanted],
            [key.purpose_id for key in wanted],
            [key.channel for key in wanted],
        )
    return {(row[1], row[2]): ConsentRow(row[0], row[3], row[4], row[5], row[6], row[7], row[8]) for row in rows}


#: The columns of an event row that :func:`insert_events` takes per event, with their SQL types.
_EVENT_COLUMN_TYPES = {
    "id": "uuid",
    "seq": "bigint",
    "contact_id": "uuid",
    "contact_point_id": "uuid",
    "purpose_id": "uuid",
    "channel": "text",
    "trigger": "text",
    "from_state": "text",
    "to_state": "text",
    "legal_basis": "text",
    "notice_id": "uuid",
    "personal": "text",  # JSON text, stored as jsonb
    "personal_digest": "bytea",
    "occurred_at": "timestamptz",
    "prev_hash": "bytea",
    "hash": "bytea",
}
EVENT_COLUMNS = tuple(_EVENT_COLUMN_TYPES)


async def insert_events(
    session: AsyncSession,
    workspace_id: uuid.UUID,
    events: Sequence[Mapping[str, Any]],
    *,
    actor_type: str,
    actor_id: str | None,
    recorded_at: datetime,
) -> None:
    """:func:`append_events` for a large batch of one actor: one ``INSERT … SELECT FROM unnest`` and the head.

    ``personal`` comes as JSON text (the database stores it as ``jsonb``); the chain head moves to the last event,
    unless the events are unsealed (``seq`` None: the sealer's to chain).
    """
    arrays = ", ".join(f"CAST(:{name} AS {kind}[])" for name, kind in _EVENT_COLUMN_TYPES.items())
    columns = ", ".join(EVENT_COLUMNS)
    selected = ", ".join(f"u.{name}::jsonb" if name == "personal" else f"u.{name}" for name in EVENT_COLUMNS)
    await session.execute(
        text(
            f"INSERT INTO consent_events ({columns}, workspace_id, actor_type, actor_id, recorded_at) "  # noqa: S608  # names of ours
            f"SELECT {selected}, :workspace_id, :actor_type, :actor_id, :recorded_at "
            f"FROM unnest({arrays}) AS u({columns})"
        ),
        {
            **{name: [event[name] for event in events] for name in EVENT_COLUMNS},
            "workspace_id": workspace_id,
            "actor_type": actor_type,
            "actor_id": actor_id,
            "recorded_at": recorded_at,
        },
    )
    last = events[-1]
    if last["seq"] is None:
        return
    await session.execute(
        text("UPDATE ledger_heads SET last_seq = :seq, last_hash = :hash WHERE workspace_id = :workspace_id"),
        {"seq": last["seq"], "hash": last["hash"], "workspace_id": workspace_id},
    )


async def update_projections(session: AsyncSession, workspace_id: uuid.UUID, rows: Sequence[Mapping[str, Any]]) -> None:
    """Move the projections of a batch to the state of their newest event: one ``UPDATE … FROM unnest``."""
    if not rows:
        return
    await session.execute(
        text(
            """
            UPDATE consents c
               SET state = u.state, legal_basis = u.legal_basis, notice_id = u.notice_id, since = u.since,
                   last_event_id = u.last_event_id, version = u.version
              FROM unnest(CAST(:ids AS uuid[]), CAST(:states AS text[]), CAST(:bases AS text[]),
                          CAST(:notices AS uuid[]), CAST(:sinces AS timestamptz[]), CAST(:events AS uuid[]),
                          CAST(:versions AS int[]))
                   AS u(id, state, legal_basis, notice_id, since, last_event_id, version)
             WHERE c.id = u.id AND c.workspace_id = :workspace_id
            """
        ),
        {
            "workspace_id": workspace_id,
            "ids": [row["id"] for row in rows],
            "states": [row["state"] for row in rows],
            "bases": [row["legal_basis"] for row in rows],
            "notices": [row["notice_id"] for row in rows],
            "sinces": [row["since"] for row in rows],
            "events": [row["last_event_id"] for row in rows],
            "versions": [row["version"] for row in rows],
        },
    )


async def mark_verified_many(
    session: AsyncSession, point_ids: Collection[uuid.UUID], via: VerifiedVia, at: datetime
) -> None:
    """Record how the addresses were verified, unless they already were (the first proof stays); one statement.

    An address a form attached to an existing contact is verified only by the tenant's records (``api``): its own
    proof shows control of the address, not that it is the contact's.
    """
    if not point_ids:
        return
    attached = "" if via is VerifiedVia.API else " AND NOT attached_by_form"
    await session.execute(
        text(
            "UPDATE contact_points SET verified_at = :at, verified_via = :via "  # noqa: S608  # a fixed condition
            f"WHERE id = ANY(:ids) AND verified_at IS NULL{attached}"
        ),
        {"at": at, "via": via.value, "ids": list(point_ids)},
    )


@dataclass(frozen=True, slots=True)
class NewContact:
    """A contact a batch creates: its id (made by the caller), external id, locale and time zone."""

    id: uuid.UUID
    external_id: str
    locale: str | None
    timezone: str | None


async def insert_contacts(
    session: AsyncSession, workspace_id: uuid.UUID, contacts: Sequence[NewContact]
) -> dict[str, uuid.UUID]:
    """Insert contacts by external id in one statement; answers each external id's contact id.

    A contact created meanwhile by another writer under the same external id is not inserted twice: its row is
    read instead (and a merged duplicate's survivor answered, as :func:`add_contact` does).
    """
    if not contacts:
        return {}
    inserted = await session.execute(
        text(
            """
            INSERT INTO contacts (id, workspace_id, external_id, locale, timezone)
            SELECT u.id, :workspace_id, u.external_id, u.locale, u.timezone
              FROM unnest(CAST(:ids AS uuid[]), CAST(:external_ids AS text[]), CAST(:locales AS text[]),
                          CAST(:timezones AS text[])) AS u(id, external_id, locale, timezone)
            ON CONFLICT (workspace_id, external_id) DO NOTHING
            RETURNING id, external_id
            """
        ),
        {
            "workspace_id": workspace_id,
            "ids": [c.id for c in contacts],
            "external_ids": [c.external_id for c in contacts],
            "locales": [c.locale for c in contacts],
            "timezones": [c.timezone for c in contacts],
        },
    )
    found = {row.external_id: row.id for row in inserted}
    missing = [c.external_id for c in contacts if c.external_id not in found]
    if missing:
        rows = await session.execute(
            text(
                "SELECT external_id, coalesce(merged_into, id) AS id FROM contacts "
                "WHERE workspace_id = :workspace_id AND external_id = ANY(:external_ids)"
            ),
            {"workspace_id": workspace_id, "external_ids": missing},
        )
        found |= {row.external_id: row.id for row in rows}
    return found


async def delete_contacts_without_points(
    session: AsyncSession, workspace_id: uuid.UUID, contact_ids: Collection[uuid.UUID]
) -> set[uuid.UUID]:
    """Delete the contacts of ``contact_ids`` that hold no address; answers their ids.

    For contacts a batch has just inserted whose every new address another writer added first (under another
    contact): nothing refers to them yet, and a contact is never left without the address it was made for.
    """
    if not contact_ids:
        return set()
    deleted = await session.scalars(
        text(
            """
            DELETE FROM contacts c
             WHERE c.workspace_id = :workspace_id AND c.id = ANY(:ids)
               AND NOT EXISTS (SELECT 1 FROM contact_points p WHERE p.workspace_id = :workspace_id
                                                                AND p.contact_id = c.id)
            RETURNING c.id
            """
        ),
        {"workspace_id": workspace_id, "ids": list(contact_ids)},
    )
    return set(deleted)


@dataclass(frozen=True, slots=True)
class NewPoint:
    """An address a batch creates; also what the ledger needs of any address (id, contact, channel)."""

    id: uuid.UUID
    contact_id: uuid.UUID
    channel: str
    value: str
    details: str
    """JSON text."""
    suppression_keys: list[bytes]


async def insert_points(
    session: AsyncSession, workspace_id: uuid.UUID, points: Sequence[NewPoint], *, verified: VerifiedVia
) -> dict[tuple[str, str], tuple[uuid.UUID, uuid.UUID]]:
    """Insert addresses, verified by ``verified``, in one statement: ``(channel, value) → (id, contact id)``.

    An address another writer added meanwhile is not inserted: its row is answered instead, which may belong to
    another contact (the caller compares). The suppression keys go in as one ``bytea[]`` per address, sent as
    arrays of hex text (a ragged array of arrays is no SQL array).
    """
    if not points:
        return {}
    inserted = await session.execute(
        text(
            """
            INSERT INTO contact_points (id, workspace_id, contact_id, channel, value, details, suppression_keys,
                                        verified_at, verified_via)
            SELECT u.id, :workspace_id, u.contact_id, u.channel, u.value, u.details::jsonb,
                   ARRAY(SELECT decode(k, 'hex') FROM unnest(string_to_array(u.keys, ',')) AS k), now(), :via
              FROM unnest(CAST(:ids AS uuid[]), CAST(:contact_ids AS uuid[]), CAST(:channels AS text[]),
                          CAST(:vals AS text[]), CAST(:details AS text[]), CAST(:keys AS text[]))
                   AS u(id, contact_id, channel, value, details, keys)
            ON CONFLICT (workspace_id, channel, value) DO NOTHING
            RETURNING id, contact_id, channel, value
            """
        ),
        {
            "workspace_id": workspace_id,
            "via": verified.value,
            "ids": [p.id for p in points],
            "contact_ids": [p.contact_id for p in points],
            "channels": [p.channel for p in points],
            "vals": [p.value for p in points],
            "details": [p.details for p in points],
            "keys": [",".join(key.hex() for key in p.suppression_keys) for p in points],
        },
    )
    found = {(row.channel, row.value): (row.id, row.contact_id) for row in inserted}
    missing = [(p.channel, p.value) for p in points if (p.channel, p.value) not in found]
    return found | await points_by_values(session, workspace_id, missing)


async def points_by_values(
    session: AsyncSession, workspace_id: uuid.UUID, wanted: Collection[tuple[str, str]]
) -> dict[tuple[str, str], tuple[uuid.UUID, uuid.UUID]]:
    """``(channel, value) → (address id, contact id)`` of the workspace's addresses among ``wanted``.

    One index probe per pair (``workspace_id, channel, value``): a condition on the values alone cannot use that
    index and read every address of the workspace for each batch of an import.
    """
    if not wanted:
        return {}
    rows = await session.execute(
        text(
            """
            SELECT cp.id, cp.contact_id, cp.channel, cp.value
              FROM unnest(CAST(:channels AS text[]), CAST(:vals AS text[])) AS u(channel, value)
              JOIN contact_points cp
                ON cp.workspace_id = :workspace_id AND cp.channel = u.channel AND cp.value = u.value
            """
        ),
        {"workspace_id": workspace_id, "channels": [c for c, _ in wanted], "vals": [v for _, v in wanted]},
    )
    return {(row.channel, row.value): (row.id, row.contact_id) for row in rows}


# --- the single change on the driver connection (a STOP flood's path, where a sealer runs) ---


async def transaction_driver(session: AsyncSession) -> Any | None:
    """The asyncpg connection of ``session``'s open transaction (pending ORM changes autoflushed), else ``None``.

    ``None`` when the session's connection has no transaction begun on it yet (SQLAlchemy begins lazily, at the
    first statement): a statement sent on the driver then would commit on its own.
    """
    if session.sync_session.autoflush:  # as a statement through the session would (not within ``no_autoflush``)
        await session.flush()  # what the session holds pending must be there for the statements sent past it
    raw = await (await session.connection()).get_raw_connection()
    driver = raw.driver_connection
    return driver if driver is not None and driver.is_in_transaction() else None


@contextlib.contextmanager
def _as_dbapi_errors(statement: str) -> Iterator[None]:
    """A database error of a statement sent on the driver raised as SQLAlchemy's (as the session's statements do).

    Callers catch :class:`DBAPIError` around ledger writes (a sweep's savepoint per purpose) and read its SQLSTATE
    through ``orig`` (:mod:`app.lib.errors`): the driver path must fail the same way.
    """
    try:
        yield
    except asyncpg.PostgresError as error:
        raise DBAPIError(statement, None, error) from error


#: How many new consent ids :func:`lock_point_consents_on_driver` sends (at most one row is new but for a race).
_NEW_IDS = 4

#: The consent rows one withdrawal of an address touches, read and locked in one statement, in the ledger's one
#: order (purpose id, the channel-level row first): with ``$4`` NULL, the channel-level row and the address's rows of
#: marketing purposes; else that purpose's row; with ``$5`` false (no repeat) not those already withdrawn (as read
#: before the lock). Missing rows are created in state ``none``; the rows come back as locked (their newest version).
_LOCK_POINT_SQL = """
WITH wanted AS (
    SELECT w.purpose_id
      FROM (SELECT NULL::uuid AS purpose_id WHERE $4::uuid IS NULL
            UNION ALL
            SELECT c.purpose_id FROM consents c JOIN purposes p ON p.id = c.purpose_id
             WHERE $4::uuid IS NULL AND c.workspace_id = $1 AND c.contact_point_id = $2 AND p.kind = 'marketing'
            UNION ALL
            SELECT $4::uuid WHERE $4::uuid IS NOT NULL) AS w
     WHERE $5::bool OR NOT EXISTS (
               SELECT 1 FROM consents s
                WHERE s.workspace_id = $1 AND s.contact_point_id = $2 AND s.purpose_id IS NOT DISTINCT FROM w.purpose_id
                  AND s.state = ANY($6::text[]))
), ordered AS (
    SELECT purpose_id, row_number() OVER (ORDER BY purpose_id NULLS FIRST) AS n FROM wanted
)
INSERT INTO consents (id, workspace_id, contact_id, contact_point_id, purpose_id, channel)
SELECT coalesce(($7::uuid[])[o.n], gen_random_uuid()), $1, $3, $2, o.purpose_id, $8
  FROM ordered o
 ORDER BY o.n
ON CONFLICT ON CONSTRAINT uq_consents_contact_point_id_purpose_id
DO UPDATE SET version = consents.version
RETURNING id, purpose_id, state, since, notice_id, version, legal_basis, last_event_id
"""


async def lock_point_consents_on_driver(
    driver: Any,
    workspace_id: uuid.UUID,
    point: Any,
    *,
    purpose_id: uuid.UUID | None,
    repeat: bool,
) -> list[tuple[uuid.UUID | None, ConsentRow]]:
    """The consent rows a withdrawal of ``point`` touches, locked: (purpose id, row) in the ledger's lock order.

    What :func:`point_consent_kinds` and then :func:`lock_consent_rows` do for ``withdraw_point``, in one round trip
    on the driver connection of the caller's transaction (:func:`transaction_driver`).
    """
    with _as_dbapi_errors(_LOCK_POINT_SQL):
        rows = await driver.fetch(
            _LOCK_POINT_SQL,
            workspace_id,
            point.id,
            point.contact_id,
            purpose_id,
            repeat,
            [state.value for state in WITHDRAWN_STATES],
            [uuid7() for _ in range(_NEW_IDS)],
            point.channel,
        )
    locked = [(row[1], ConsentRow(row[0], row[2], row[3], row[4], row[5], row[6], row[7])) for row in rows]
    locked.sort(key=lambda pair: str(pair[0] or ""))  # RETURNING's order is the insert's, but not promised
    return locked


#: The events of one change (unsealed: the sealer chains them) and the projections they move, in one statement.
_WRITE_UNSEALED_SQL = """
WITH added AS (
    INSERT INTO consent_events (id, contact_id, contact_point_id, purpose_id, channel, trigger, from_state, to_state,
                                legal_basis, notice_id, personal, personal_digest, occurred_at,
                                workspace_id, actor_type, actor_id, recorded_at)
    SELECT u.id, u.contact_id, u.contact_point_id, u.purpose_id, u.channel, u.trigger, u.from_state, u.to_state,
           u.legal_basis, u.notice_id, u.personal::jsonb, u.personal_digest, u.occurred_at, $1, $2, $3, $4
      FROM unnest($5::uuid[], $6::uuid[], $7::uuid[], $8::uuid[], $9::text[], $10::text[], $11::text[], $12::text[],
                  $13::text[], $14::uuid[], $15::text[], $16::bytea[], $17::timestamptz[])
           AS u(id, contact_id, contact_point_id, purpose_id, channel, trigger, from_state, to_state, legal_basis,
                notice_id, personal, personal_digest, occurred_at)
    RETURNING 1
), moved AS (
    UPDATE consents c
       SET state = m.state, legal_basis = m.legal_basis, notice_id = m.notice_id, since = m.since,
           last_event_id = m.last_event_id, version = m.version
      FROM unnest($18::uuid[], $19::text[], $20::text[], $21::uuid[], $22::timestamptz[], $23::uuid[], $24::int[])
           AS m(id, state, legal_basis, notice_id, since, last_event_id, version)
     WHERE c.id = m.id AND c.workspace_id = $1
    RETURNING 1
)
SELECT (SELECT count(*) FROM added), (SELECT count(*) FROM moved)
"""


async def write_unsealed_on_driver(
    driver: Any,
    workspace_id: uuid.UUID,
    events: Sequence[Mapping[str, Any]],
    projections: Sequence[Mapping[str, Any]],
    *,
    actor_type: str,
    actor_id: str | None,
    recorded_at: datetime,
) -> None:
    """:func:`insert_events` (unsealed events) and :func:`update_projections` in one statement, on the driver.

    On the driver connection of the caller's transaction (:func:`transaction_driver`); ``personal`` as JSON text.
    The events are inserted in the order given (their ``intake``, the sealer's order, is drawn so).
    """
    with _as_dbapi_errors(_WRITE_UNSEALED_SQL):
        added, moved = await driver.fetchrow(
            _WRITE_UNSEALED_SQL,
            workspace_id,
            actor_type,
            actor_id,
            recorded_at,
            *([event[name] for event in events] for name in _UNSEALED_EVENT_COLUMNS),
            *([row[name] for row in projections] for name in ("id", "state", "legal_basis", "notice_id", "since")),
            [row["last_event_id"] for row in projections],
            [row["version"] for row in projections],
        )
    if added != len(events) or moved != len(projections):  # a consent row of another workspace: never commit that
        raise RuntimeError(f"wrote {added} of {len(events)} events and {moved} of {len(projections)} projections")


#: The per-event columns :func:`write_unsealed_on_driver` sends, in the order of its statement's arrays.
_UNSEALED_EVENT_COLUMNS = (
    "id",
    "contact_id",
    "contact_point_id",
    "purpose_id",
    "channel",
    "trigger",
    "from_state",
    "to_state",
    "legal_basis",
    "notice_id",
    "personal",
    "personal_digest",
    "occurred_at",
)
