"""All SQL of messages: the messages, their deliveries (the transactional outbox) and the status history.

Workspace scoping lives here: every function that reads or writes a workspace's rows takes the workspace (or,
for the dispatcher, the workspaces of the deliveries it claimed) and filters on it. The one exception is
:func:`claim_due`, the dispatcher's claim of due deliveries, which runs across all workspaces on purpose (see
there why).

Deliveries are changed through the ORM (attribute writes flushed with the caller's transaction): the functions
that change them say what the change means, so the dispatcher never writes a column itself.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple, cast

import asyncpg
from sqlalchemy import Table, delete, select, text
from sqlalchemy import insert as sa_insert
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from app.eligibility.repository import DEFAULT_TIMEZONE, gate_facts_sql
from app.lib.ids import uuid7
from app.lib.orm import utcnow
from app.messages.models import SCANNED, Delivery, Message, MessageEvent, MessageToken
from app.messages.status import SIGNAL_STEPS, DeliveryStatus, MessageStatus, Step

#: The claim of due deliveries. Its inner SELECT must stay as it is: its WHERE clause implies the predicate of the
#: partial index ``ix_deliveries_due`` (``status IN ('queued', 'sending')``), so the scan reads only work that is
#: due or whose lease ran out, however many finished deliveries the table holds. The literals are
#: ``DeliveryStatus.QUEUED`` and ``SENDING``, written out like the index's predicate so the planner matches them.
#: The rows it locked are updated through ``id = ANY(ARRAY(...))``: the array is computed once and its ids looked up
#: in the primary key. Written ``id IN (SELECT ...)``, the planner joined the locked ids to the whole table and chose
#: a hash join over a sequential scan of ``deliveries`` while 128 index lookups were priced above reading the table
#: (up to some 40,000 rows, the finished ones and dead versions included): every claim read all of it.
_CLAIM = text(
    """
    UPDATE deliveries d
       SET status = 'sending', lease_until = clock_timestamp() + make_interval(secs => :lease),
           leased_by = :worker, attempts = d.attempts + 1, updated_at = clock_timestamp()
     WHERE d.id = ANY(ARRAY(
           SELECT id FROM deliveries
            WHERE (status = 'queued' AND next_attempt_at <= clock_timestamp())
               OR (status = 'sending' AND lease_until < clock_timestamp())
            ORDER BY next_attempt_at
            LIMIT :batch
              FOR UPDATE SKIP LOCKED))
    RETURNING d.id, d.workspace_id, d.message_id, d.channel, d.attempts
    """
)


class Claimed(NamedTuple):
    """A delivery a dispatcher has just claimed."""

    id: uuid.UUID
    workspace_id: uuid.UUID
    message_id: uuid.UUID
    channel: str
    attempts: int


async def claim_due(session: AsyncSession, worker: str, *, lease_seconds: float, batch: int) -> list[Claimed]:
    """Lease up to ``batch`` due deliveries (or ones whose lease ran out) to ``worker``, of every workspace.

    Not scoped to a workspace, by design: dispatchers serve all workspaces, and the claim must be one
    ``FOR UPDATE SKIP LOCKED`` statement so that any number of workers take disjoint rows in due order with one
    round trip. A claim per workspace would need the list of workspaces with due work first (another scan, racing
    the other workers) and could starve a workspace behind a busy one. Everything the dispatcher reads afterwards
    is scoped to the workspaces of the claimed rows.
    """
    rows = await session.execute(_CLAIM, {"lease": lease_seconds, "worker": worker, "batch": batch})
    return [Claimed(*row) for row in rows.all()]


async def deliveries_by_id(
    session: AsyncSession, workspace_ids: Collection[uuid.UUID], delivery_ids: Collection[uuid.UUID]
) -> Sequence[Delivery]:
    """Deliveries by id, of the given workspaces only."""
    return (
        await session.scalars(
            select(Delivery).where(Delivery.id.in_(list(delivery_ids)), Delivery.workspace_id.in_(list(workspace_ids)))
        )
    ).all()


#: What the dispatcher's prepare reads of a claimed batch, in one statement (:func:`batch_to_send`). Only the
#: deliveries of the given workspaces; their message, address, purpose and contact are joined within the delivery's
#: own workspace (the foreign keys include ``workspace_id``, so that is where they are). A row whose message or
#: address is missing has NULLs there (the foreign keys cascade, so none is expected; the dispatcher fails it).
_TO_SEND = """
    SELECT d.id, d.workspace_id, d.message_id, d.contact_point_id, d.channel, d.in_flight_at,
           m.id IS NOT NULL AS has_message, m.purpose_id, m.content ? d.channel AS has_content,
           m.content -> d.channel AS content,
           cp.id IS NOT NULL AS has_point, cp.contact_id, cp.value, cp.details, c.locale, p.kind
      FROM deliveries d
      LEFT JOIN messages m ON m.workspace_id = d.workspace_id AND m.id = d.message_id
      LEFT JOIN contact_points cp ON cp.workspace_id = d.workspace_id AND cp.id = d.contact_point_id
      LEFT JOIN purposes p ON p.workspace_id = d.workspace_id AND p.id = m.purpose_id
      LEFT JOIN contacts c ON c.workspace_id = d.workspace_id AND c.id = cp.contact_id
     WHERE d.id = ANY($2::uuid[]) AND d.workspace_id = ANY($1::uuid[])
"""


class ToSend(NamedTuple):
    """A claimed delivery and what its send needs (:func:`batch_to_send`): plain values, no ORM objects."""

    id: uuid.UUID
    workspace_id: uuid.UUID
    message_id: uuid.UUID
    contact_point_id: uuid.UUID
    channel: str
    in_flight_at: datetime | None
    has_message: bool
    purpose_id: uuid.UUID | None
    """The message's purpose (``None``: the message is gone)."""
    has_content: bool | None
    """The message's content has a part for the delivery's channel."""
    content: Any
    """That part (``None`` where there is none)."""
    has_point: bool
    contact_id: uuid.UUID | None
    """The address's contact (``None``: the address is gone)."""
    address: str | None
    details: dict[str, Any] | None
    locale: str | None
    """The contact's locale (``None``: unknown, or the contact is gone)."""
    kind: str | None
    """The purpose's kind (``None``: the purpose is gone)."""

    def channel_content(self) -> dict[str, Any]:
        """The message's content for the delivery's channel; :class:`KeyError` if it has none (as the dict would).

        :class:`TypeError` if what is stored there is no JSON object (``null``, say: the API never stores one): the
        dispatcher's prepare fails that delivery alone, where the adapter would have failed during the call (and a
        marketing message ended ``unknown``, as if it might have gone out).
        """
        if not self.has_content:
            raise KeyError(self.channel)
        if not isinstance(self.content, dict):
            msg = f"the message's {self.channel} content is no JSON object"
            raise TypeError(msg)
        return cast("dict[str, Any]", self.content)


async def batch_to_send(
    driver: Any, workspace_ids: Collection[uuid.UUID], delivery_ids: Collection[uuid.UUID]
) -> list[ToSend]:
    """The deliveries by id, of the given workspaces only, each with its message, address, contact and purpose.

    One statement on the asyncpg connection ``driver`` (the dispatcher's open transaction) into plain tuples: the
    dispatcher's prepare read five tables one query and one ORM object per row each, most of its CPU per message.
    Reads across the tables of the ledger and purposes on purpose (the one hot read of the send path; the rows are
    only read, never written here).
    """
    rows = await driver.fetch(_TO_SEND, list(workspace_ids), list(delivery_ids))
    return [ToSend(*row) for row in rows]


# An in-flight mark renews the lease to cover the call that begins now:
#   lease_until = greatest(lease_until, clock_timestamp() + make_interval(secs => <lease>))
# A call that waited for a slot (a later wave of its batch, behind a slow provider) may begin when the claim's lease
# is nearly or already gone; another worker (or this one's next claim) then took the row over while the call was
# under way and sent it again (hostile review 2026-12-06). Renewed rather than refused: a refused call would wait
# for the lease to run out and be claimed again (an attempt counted, the lease's time lost), for every later wave of
# a batch behind a slow provider. Renewing is safe: the mark holds the row's lock and writes only while ``leased_by``
# is this worker and the row is ``sending``, so a row another worker claimed (``leased_by`` changed) or settled is
# never renewed, and a claim after the mark sees the renewed lease (its ``SKIP LOCKED`` skips the row meanwhile).
# The lease is ``DispatchConfig.lease``, which covers a call and its writes.


#: The deliveries among ``$3`` whose send gate's facts are still those their decision was made on: the digest of
#: their address's facts for their message's purpose (:func:`app.eligibility.repository.gate_facts_sql`, the same SQL
#: the gate read them with) recomputed here, as of the snapshot of the statement it is part of, equal to ``$digests``
#: (in ``$3``'s order). A change committed before that statement began is always seen, whenever its ledger event
#: was stamped and whether or not it has one (a pause, a suppression, a Robinson key); no clock is compared. A
#: delivery whose message or address is gone has no facts: it is not unchanged.
#: ``$untils`` (in ``$3``'s order): the moment each decision stops holding on the same facts (the end of its consent,
#: the close of its send window: :attr:`app.domain.gate.GateDecision.holds_until`; NULL: never by itself), compared
#: with this statement's clock: past it, a delivery is not unchanged either (it is decided again: blocked, or waiting
#: for its window). Its facts did not change, so the digest alone let a call that waited for its slot past a consent's
#: end or a window's close be sent (hostile review 2026-12-06, R3).
def _unchanged_sql(digests: str, untils: str, default_tz: str) -> str:
    facts = gate_facts_sql(
        """SELECT cp.id, cp.workspace_id, cp.contact_id, cp.channel, cp.value, cp.reachability, cp.suppression_keys,
                  cp.verified_at, m.purpose_id, d.id AS delivery_id
             FROM deliveries d
             JOIN messages m ON m.workspace_id = d.workspace_id AND m.id = d.message_id
             JOIN contact_points cp ON cp.workspace_id = d.workspace_id AND cp.id = d.contact_point_id
            WHERE d.id = ANY($3::uuid[]) AND d.workspace_id = ANY($1::uuid[])""",
        workspace="pts.workspace_id",
        default_tz=default_tz,
        carry="pts.delivery_id, ",
    )
    return f"""
        SELECT g.delivery_id AS id
          FROM ({facts}) g
          JOIN unnest($3::uuid[], {digests}::text[], {untils}::timestamptz[]) AS s(id, digest, until)
            ON s.id = g.delivery_id AND s.digest = g.digest
         WHERE s.until IS NULL OR s.until > clock_timestamp()"""  # noqa: S608  # our own SQL only


#: The first calls' marks, in prepare's transaction (:func:`mark_in_flight_on_driver`): marked (true) or held but
#: changed since the gate (false, not marked).
_MARK_IN_FLIGHT = f"""
    WITH unchanged AS ({_unchanged_sql("$6", "$8", "$7")}
    ), marked AS (
        UPDATE deliveries
           SET in_flight_at = $4, lease_until = greatest(lease_until, clock_timestamp() + make_interval(secs => $5))
         WHERE id IN (SELECT id FROM unchanged) AND workspace_id = ANY($1::uuid[]) AND leased_by = $2
           AND status = 'sending'
        RETURNING id
    )
    SELECT id, true FROM marked
    UNION ALL
    SELECT id, false FROM deliveries
     WHERE id = ANY($3::uuid[]) AND workspace_id = ANY($1::uuid[]) AND leased_by = $2 AND status = 'sending'
       AND id NOT IN (SELECT id FROM unchanged)
"""  # noqa: S608  # our own SQL only


async def database_now(driver: Any) -> datetime:
    """The database's clock (``clock_timestamp()``), on the asyncpg connection ``driver``.

    The send decision's moment: the in-flight marks compare a decision's ``holds_until`` with this clock, so the
    decision takes it too (one clock: an application clock behind the database's burnt attempts at a window's close).
    """
    now: datetime = await driver.fetchval("SELECT clock_timestamp()")
    return now


async def mark_in_flight_on_driver(
    driver: Any,
    workspace_ids: Collection[uuid.UUID],
    delivery_ids: Sequence[uuid.UUID],
    digests: Sequence[str],
    worker: str,
    *,
    untils: Sequence[datetime | None],
    at: datetime,
    lease_seconds: float,
) -> tuple[set[uuid.UUID], set[uuid.UUID]]:
    """Mark that the provider calls of these deliveries begin, where their gate's facts are unchanged.

    One statement on the asyncpg connection ``driver`` (the caller's transaction), committed before the calls, so
    that a worker dying during one leaves the evidence (see :mod:`app.messages.policy`). Each mark renews the lease
    for ``lease_seconds`` from now (see above why). ``digests``: each delivery's gate facts digest as its decision
    read it (in the order of ``delivery_ids``); a delivery whose facts changed since is not marked
    (:data:`_MARK_IN_FLIGHT`), nor one whose decision stopped holding (``untils``, in the same order: past it by
    the statement's clock). Answers the deliveries marked, and those ``worker`` still holds whose facts changed or
    whose decision stopped holding (to be decided again on the facts of now). A database error is raised as
    :class:`DBAPIError` (as the session's statements raise it), so the caller can roll back its savepoint.
    """
    try:
        rows = await driver.fetch(
            _MARK_IN_FLIGHT,
            list(workspace_ids),
            worker,
            list(delivery_ids),
            at,
            lease_seconds,
            list(digests),
            DEFAULT_TIMEZONE,
            list(untils),
        )
    except asyncpg.PostgresError as error:
        raise DBAPIError("mark_in_flight", None, error) from error
    return {row[0] for row in rows if row[1]}, {row[0] for row in rows if not row[1]}


async def lock_held(
    session: AsyncSession, workspace_ids: Collection[uuid.UUID], delivery_ids: Collection[uuid.UUID], worker: str
) -> Sequence[Delivery]:
    """The deliveries among ``delivery_ids`` that ``worker`` still holds the lease of, locked, in id order.

    Their messages are locked first (``FOR KEY SHARE``, as the history steps written for them will through their
    foreign key): an erasure deletes a message, then its deliveries with it, so taking the delivery first and the
    message at the commit's insert deadlocked with an erasure committed meanwhile (hostile review 2026-12-06); this
    way one waits for the other.
    """
    held = (
        Delivery.id.in_(list(delivery_ids)),
        Delivery.workspace_id.in_(list(workspace_ids)),
        Delivery.leased_by == worker,
        Delivery.status == DeliveryStatus.SENDING,
    )
    await session.execute(
        select(Message.id)
        .where(Message.id.in_(select(Delivery.message_id).where(*held)))
        .order_by(Message.id)
        .with_for_update(read=True, key_share=True)
    )
    return (await session.scalars(select(Delivery).where(*held).order_by(Delivery.id).with_for_update())).all()


#: The journal's common write as one statement (:func:`mark_and_settle_sent`): in-flight marks, and answers the
#: provider accepted settled ``sent`` with their history step. Every row is written only while ``$2`` holds its lease
#: (the same predicates as :func:`mark_in_flight_on_driver` and :func:`lock_held`); a mark renews the lease for
#: ``$10`` seconds (as :func:`mark_in_flight_on_driver` does); the ids written come back. ``detail`` is written as
#: the ORM writes a dict or ``None`` to the JSONB column (JSON ``null``).
_MARK_AND_SETTLE_SENT = f"""
    WITH unchanged AS ({_unchanged_sql("$9", "$12", "$11")}
    ), marked AS (
        UPDATE deliveries
           SET in_flight_at = $4, lease_until = greatest(lease_until, clock_timestamp() + make_interval(secs => $10))
         WHERE id IN (SELECT id FROM unchanged)
           AND workspace_id = ANY($1::uuid[]) AND leased_by = $2 AND status = 'sending'
        RETURNING id
    ), changed AS (
        -- held, not begun: its gate's facts changed since its decision (the dispatcher decides it again)
        SELECT id FROM deliveries
         WHERE id = ANY($3::uuid[]) AND workspace_id = ANY($1::uuid[]) AND leased_by = $2 AND status = 'sending'
           AND id NOT IN (SELECT id FROM unchanged)
    ), answered AS (
        SELECT * FROM unnest($5::uuid[], $6::uuid[], $7::text[], $8::text[]) AS a(id, event_id, provider_id, provider)
    ), sent AS (
        UPDATE deliveries d
           SET status = 'sent', lease_until = NULL, in_flight_at = NULL, last_error = NULL, updated_at = $4,
               provider_message_id = coalesce(a.provider_id, d.provider_message_id)
          FROM answered a
         WHERE d.id = a.id AND d.workspace_id = ANY($1::uuid[]) AND d.leased_by = $2 AND d.status = 'sending'
        RETURNING d.id, d.workspace_id, d.message_id, d.channel, a.event_id, a.provider_id, a.provider
    ), recorded AS (
        INSERT INTO message_events
               (id, workspace_id, message_id, delivery_id, channel, status, provider_message_id, error, detail, at)
        SELECT event_id, workspace_id, message_id, id, channel, 'sent', provider_id, NULL,
               CASE WHEN provider IS NULL THEN 'null'::jsonb ELSE jsonb_build_object('provider', provider) END, $4
          FROM sent
        RETURNING delivery_id
    )
    SELECT id, true FROM marked UNION ALL SELECT delivery_id, true FROM recorded
    UNION ALL SELECT id, false FROM changed
"""  # noqa: S608  # our own SQL only


class Accepted(NamedTuple):
    """A delivery whose provider accepted it: what :func:`mark_and_settle_sent` writes."""

    id: uuid.UUID
    provider_message_id: str | None
    provider: str | None
    """The provider the delivery went to, as reports name it (the step's ``detail.provider``)."""


async def mark_and_settle_sent(
    connection: Any,
    workspace_ids: Collection[uuid.UUID],
    worker: str,
    *,
    starting: Sequence[uuid.UUID],
    digests: Sequence[str],
    untils: Sequence[datetime | None],
    accepted: Sequence[Accepted],
    at: datetime,
    lease_seconds: float,
) -> tuple[set[uuid.UUID], set[uuid.UUID]]:
    """Mark calls beginning and settle accepted deliveries ``sent`` in one statement on the driver ``connection``.

    What :func:`mark_in_flight_on_driver`, then :func:`lock_held`, :func:`settle` and :func:`add_event` write for a
    ``sent`` outcome, in one round trip and no ORM (the dispatcher's hot path: most answers are acceptances). Atomic
    without a transaction of its own. A mark renews the lease for ``lease_seconds`` from now (as
    :func:`mark_in_flight_on_driver` does). A call of ``starting`` is marked only while its gate's facts are those
    its decision was made on (``digests``, in the order of ``starting``: :func:`_unchanged_sql`, as of this
    statement) and its decision still holds (``untils``); one whose facts changed is not marked and keeps its lease
    (the dispatcher decides it again at once).
    Answers the deliveries ``worker`` still held the lease of and wrote, and those it holds whose facts changed.
    """
    try:
        rows = await connection.fetch(
            _MARK_AND_SETTLE_SENT,
            list(workspace_ids),
            worker,
            list(starting),
            at,
            [a.id for a in accepted],
            [uuid7() for _ in accepted],
            [a.provider_message_id for a in accepted],
            [a.provider for a in accepted],
            list(digests),
            lease_seconds,
            DEFAULT_TIMEZONE,
            list(untils),
        )
    except asyncpg.PostgresError as error:  # as the session's statements raise it
        raise DBAPIError("mark_and_settle_sent", None, error) from error
    return {row[0] for row in rows if row[1]}, {row[0] for row in rows if not row[1]}


async def lock_unresolved(session: AsyncSession, workspace_id: uuid.UUID, delivery_id: uuid.UUID) -> Delivery | None:
    """The workspace's delivery ``delivery_id`` if the provider may have it without our knowing, locked.

    That is one whose outcome is ``unknown``, or whose provider call is in flight (its worker may be dead, its
    lease not yet run out).
    """
    return await session.scalar(
        select(Delivery)
        .where(
            Delivery.id == delivery_id,
            Delivery.workspace_id == workspace_id,
            (Delivery.status == DeliveryStatus.UNKNOWN)
            | ((Delivery.status == DeliveryStatus.SENDING) & Delivery.in_flight_at.is_not(None)),
        )
        .with_for_update()
    )


async def messages_by_id(
    session: AsyncSession, workspace_ids: Collection[uuid.UUID], message_ids: Collection[uuid.UUID]
) -> dict[uuid.UUID, Message]:
    """Messages by id, of the given workspaces only."""
    if not message_ids:
        return {}
    rows = await session.scalars(
        select(Message).where(Message.id.in_(list(message_ids)), Message.workspace_id.in_(list(workspace_ids)))
    )
    return {message.id: message for message in rows}


async def get_message(session: AsyncSession, workspace_id: uuid.UUID, message_id: uuid.UUID) -> Message | None:
    """A message of the workspace."""
    return await session.scalar(select(Message).where(Message.id == message_id, Message.workspace_id == workspace_id))


async def deliveries_of(session: AsyncSession, workspace_id: uuid.UUID, message_id: uuid.UUID) -> Sequence[Delivery]:
    """A message's deliveries, in the order they were written."""
    return (
        await session.scalars(
            select(Delivery)
            .where(Delivery.message_id == message_id, Delivery.workspace_id == workspace_id)
            .order_by(Delivery.id)
        )
    ).all()


async def events_of(session: AsyncSession, workspace_id: uuid.UUID, message_id: uuid.UUID) -> Sequence[MessageEvent]:
    """A message's history, oldest first (events carry no workspace: scoped through their message)."""
    return (
        await session.scalars(
            select(MessageEvent)
            .join(Message, Message.id == MessageEvent.message_id)
            .where(MessageEvent.message_id == message_id, Message.workspace_id == workspace_id)
            .order_by(MessageEvent.at, MessageEvent.id)
        )
    ).all()


async def lock_by_provider_id(
    session: AsyncSession, workspace_id: uuid.UUID, provider_message_id: str
) -> Delivery | None:
    """The workspace's delivery the provider knows as ``provider_message_id``, locked until commit."""
    return await session.scalar(
        select(Delivery)
        .where(Delivery.workspace_id == workspace_id, Delivery.provider_message_id == provider_message_id)
        .with_for_update()
    )


async def add_message(  # the row's own fields
    session: AsyncSession,
    workspace_id: uuid.UUID,
    *,
    contact_id: uuid.UUID,
    purpose_id: uuid.UUID,
    strategy: str,
    route: list[str],
    content: dict[str, Any],
    decision: dict[str, Any],
    status: MessageStatus,
    send_at: datetime | None,
    campaign: str | None = None,
) -> Message:
    """Insert a message."""
    message = Message(
        id=uuid7(),
        workspace_id=workspace_id,
        contact_id=contact_id,
        purpose_id=purpose_id,
        strategy=strategy,
        route=route,
        content=content,
        decision=decision,
        status=status,
        send_at=send_at,
        campaign=campaign,
    )
    session.add(message)
    await session.flush()
    return message


async def add_delivery(
    session: AsyncSession,
    workspace_id: uuid.UUID,
    message_id: uuid.UUID,
    *,
    channel: str,
    contact_point_id: uuid.UUID,
    status: DeliveryStatus,
    next_attempt_at: datetime,
    at: datetime,
) -> Delivery:
    """Insert a delivery (the outbox row dispatchers claim once ``next_attempt_at`` has come)."""
    delivery = Delivery(
        id=uuid7(),
        workspace_id=workspace_id,
        message_id=message_id,
        channel=channel,
        contact_point_id=contact_point_id,
        status=status,
        attempts=0,
        next_attempt_at=next_attempt_at,
        updated_at=at,
    )
    session.add(delivery)
    await session.flush()
    return delivery


def message_row(  # the row's own fields
    workspace_id: uuid.UUID,
    message_id: uuid.UUID,
    *,
    contact_id: uuid.UUID,
    purpose_id: uuid.UUID,
    strategy: str,
    route: list[str],
    content: dict[str, Any],
    decision: dict[str, Any],
    status: MessageStatus,
    send_at: datetime | None,
    campaign: str | None,
) -> dict[str, Any]:
    """A message row for :func:`add_messages`."""
    return {
        "id": message_id,
        "workspace_id": workspace_id,
        "contact_id": contact_id,
        "purpose_id": purpose_id,
        "strategy": strategy,
        "route": route,
        "content": content,
        "decision": decision,
        "status": status.value,
        "send_at": send_at,
        "campaign": campaign,
    }


def delivery_row(  # the row's own fields
    workspace_id: uuid.UUID,
    message_id: uuid.UUID,
    delivery_id: uuid.UUID,
    *,
    channel: str,
    contact_point_id: uuid.UUID,
    status: DeliveryStatus,
    next_attempt_at: datetime,
    at: datetime,
) -> dict[str, Any]:
    """A delivery row for :func:`add_messages` (the outbox row dispatchers claim once ``next_attempt_at`` has come)."""
    return {
        "id": delivery_id,
        "workspace_id": workspace_id,
        "message_id": message_id,
        "channel": channel,
        "contact_point_id": contact_point_id,
        "status": status.value,
        "attempts": 0,
        "next_attempt_at": next_attempt_at,
        "updated_at": at,
    }


def event_row(  # the event's own fields, in the table's order
    workspace_id: uuid.UUID,
    message_id: uuid.UUID,
    delivery_id: uuid.UUID | None,
    channel: str | None,
    status: Step,
    *,
    detail: dict[str, Any] | None,
    at: datetime,
) -> dict[str, Any]:
    """A history step for :func:`add_messages` (``workspace_id``: the message's)."""
    return {
        "id": uuid7(),
        "workspace_id": workspace_id,
        "message_id": message_id,
        "delivery_id": delivery_id,
        "channel": channel,
        "status": status.value,
        "provider_message_id": None,
        "error": None,
        "detail": detail,
        "at": at,
    }


async def add_messages(
    session: AsyncSession,
    messages: Sequence[dict[str, Any]],
    deliveries: Sequence[dict[str, Any]],
    events: Sequence[dict[str, Any]],
) -> None:
    """Insert new messages, their deliveries and history steps: one batched ``INSERT`` per table.

    Past the ORM (nothing of it is loaded into the session), in the caller's transaction: each table's rows go as
    one ``executemany`` of one prepared statement (asyncpg sends them in one pipeline). The rows come from
    :func:`message_row`, :func:`delivery_row` and :func:`event_row`, every row of a table with the same keys.
    """
    for model, rows in ((Message, messages), (Delivery, deliveries), (MessageEvent, events)):
        if rows:  # the table, not the entity: no ORM bookkeeping per row
            await session.execute(sa_insert(cast("Table", model.__table__)), list(rows))


def add_event(  # noqa: PLR0917  # the event's own fields, in the table's order
    session: AsyncSession,
    workspace_id: uuid.UUID,
    message_id: uuid.UUID,
    delivery_id: uuid.UUID | None,
    channel: str | None,
    status: Step,
    *,
    provider_id: str | None = None,
    error: str | None = None,
    detail: dict[str, Any] | None = None,
    at: datetime | None = None,
) -> None:
    """Add one step to a message's history (written with the caller's transaction).

    ``workspace_id`` is the message's: the caller names a message of its workspace (one it created or loaded
    through a scoped function of this module).
    """
    session.add(
        MessageEvent(
            id=uuid7(),
            workspace_id=workspace_id,
            message_id=message_id,
            delivery_id=delivery_id,
            channel=channel,
            status=status,
            provider_message_id=provider_id,
            error=error[:1000] if error else None,
            detail=detail,
            at=at or utcnow(),
        )
    )


def settle(
    delivery: Delivery,
    status: DeliveryStatus,
    *,
    provider_id: str | None = None,
    error: str | None = None,
    at: datetime,
) -> None:
    """The delivery's attempt is over with ``status``: the lease ends, the provider's id is kept."""
    delivery.status = status
    delivery.lease_until = delivery.in_flight_at = None
    delivery.provider_message_id = provider_id or delivery.provider_message_id
    delivery.last_error = error
    delivery.updated_at = at


def requeue_for_retry(delivery: Delivery, next_attempt_at: datetime, *, error: str | None, at: datetime) -> None:
    """Back to the queue after a failed attempt (counted), with the error that made it fail."""
    delivery.status, delivery.next_attempt_at = DeliveryStatus.QUEUED, next_attempt_at
    delivery.lease_until = delivery.leased_by = delivery.in_flight_at = None
    delivery.last_error, delivery.updated_at = error, at


def requeue_for_window(delivery: Delivery, opens: datetime, *, at: datetime) -> None:
    """Back to the queue until the send window opens; the claim that found it closed is not an attempt."""
    delivery.status = DeliveryStatus.QUEUED
    delivery.next_attempt_at = opens
    delivery.attempts = max(delivery.attempts - 1, 0)
    delivery.lease_until = delivery.leased_by = delivery.in_flight_at = None
    delivery.updated_at = at


def reconcile(delivery: Delivery, provider_id: str, *, at: datetime) -> None:
    """A provider's status report named an unresolved delivery: it was accepted (``sent``), the attempt is over."""
    settle(delivery, DeliveryStatus.SENT, provider_id=provider_id, at=at)


def report(delivery: Delivery, status: DeliveryStatus, *, error: str | None, at: datetime) -> None:
    """A provider's delivery report changed a sent delivery (the last error is kept when the report has none)."""
    delivery.status, delivery.updated_at = status, at
    delivery.last_error = error or delivery.last_error


class ContactMessages(NamedTuple):
    """Every message to one contact with its deliveries and history (for subject access)."""

    messages: Sequence[Message]
    deliveries: Sequence[Delivery]
    events: Sequence[MessageEvent]


async def messages_of_contact(session: AsyncSession, workspace_id: uuid.UUID, contact_id: uuid.UUID) -> ContactMessages:
    """The contact's messages (oldest first), their deliveries and their history."""
    messages = (
        await session.scalars(
            select(Message)
            .where(Message.workspace_id == workspace_id, Message.contact_id == contact_id)
            .order_by(Message.id)
        )
    ).all()
    ids = [m.id for m in messages]
    if not ids:
        return ContactMessages([], [], [])
    deliveries = (
        await session.scalars(
            select(Delivery)
            .where(Delivery.workspace_id == workspace_id, Delivery.message_id.in_(ids))
            .order_by(Delivery.id)
        )
    ).all()
    events = (
        await session.scalars(
            select(MessageEvent).where(MessageEvent.message_id.in_(ids)).order_by(MessageEvent.at, MessageEvent.id)
        )
    ).all()
    return ContactMessages(messages, deliveries, events)


async def delete_messages_of_contact(session: AsyncSession, workspace_id: uuid.UUID, contact_id: uuid.UUID) -> int:
    """Delete the contact's messages (their deliveries and history go with them); answers how many."""
    result = await session.execute(
        delete(Message).where(Message.workspace_id == workspace_id, Message.contact_id == contact_id)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]  # CursorResult of a DELETE


async def write_staged(session: AsyncSession) -> None:
    """Write the rows staged with :func:`add_event` now, inside the caller's transaction."""
    await session.flush()


@dataclass(frozen=True, slots=True)
class LastSent:
    """The newest message sent to an address: what a STOP after it is attributed to."""

    message_id: uuid.UUID
    purpose_id: uuid.UUID
    campaign: str | None
    sent_at: datetime


async def last_sent_to(
    session: AsyncSession,
    workspace_id: uuid.UUID,
    point_id: uuid.UUID,
    channel: str,
    *,
    since: datetime,
    until: datetime,
) -> LastSent | None:
    """The last message sent to the address on ``channel`` in ``(since, until]`` (its ``sent`` step), if any."""
    row = (
        await session.execute(
            text(
                """
                SELECT e.message_id, m.purpose_id, m.campaign, e.at
                  FROM deliveries d
                  JOIN message_events e ON e.message_id = d.message_id AND e.delivery_id = d.id AND e.status = 'sent'
                  JOIN messages m ON m.id = d.message_id AND m.workspace_id = :ws
                 WHERE d.workspace_id = :ws AND d.contact_point_id = :point AND d.channel = :channel
                   AND e.at > :since AND e.at <= :until
                 ORDER BY e.at DESC LIMIT 1
                """
            ),
            {"ws": workspace_id, "point": point_id, "channel": channel, "since": since, "until": until},
        )
    ).first()
    return LastSent(row.message_id, row.purpose_id, row.campaign, row.at) if row else None


# --- engagement signals (issue 20): message tokens and the once-per-message signal steps ---------------------


async def add_tokens(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    """Store minted tokens (hashes); one already stored (the same delivery prepared again) is kept."""
    if rows:
        await session.execute(insert(MessageToken).values(list(rows)).on_conflict_do_nothing())


async def find_token(session: AsyncSession, token_hash: bytes) -> MessageToken | None:
    """The token stored under ``token_hash`` (a token is looked up by its hash alone: it names its message)."""
    return await session.scalar(select(MessageToken).where(MessageToken.token_hash == token_hash))


async def is_tracked(session: AsyncSession, workspace_id: uuid.UUID, message_id: uuid.UUID) -> bool:
    """Whether the message was sent with tracking (it has a token)."""
    found = await session.scalar(
        select(MessageToken.message_id)
        .where(MessageToken.message_id == message_id, MessageToken.workspace_id == workspace_id)
        .limit(1)
    )
    return found is not None


async def find_by_provider_id(
    session: AsyncSession, workspace_id: uuid.UUID, provider_message_id: str
) -> Delivery | None:
    """The workspace's delivery the provider knows as ``provider_message_id`` (not locked)."""
    return await session.scalar(
        select(Delivery).where(
            Delivery.workspace_id == workspace_id, Delivery.provider_message_id == provider_message_id
        )
    )


#: The predicate of ``uq_message_events_signal``, as written in the index (literals: the planner matches it).
_SIGNALS = f"status IN ({', '.join(repr(s.value) for s in SIGNAL_STEPS)})"
#: The predicates of ``uq_message_events_signal`` (a person's) and ``uq_message_events_scanner_signal``.
_SIGNAL_INDEX_WHERE = text(f"{_SIGNALS} AND NOT {SCANNED}")
_SCANNER_SIGNAL_INDEX_WHERE = text(f"{_SIGNALS} AND {SCANNED}")


async def add_signal(  # noqa: PLR0917  # the event's own fields, in the table's order
    session: AsyncSession,
    workspace_id: uuid.UUID,
    message_id: uuid.UUID,
    delivery_id: uuid.UUID | None,
    channel: str | None,
    status: Step,
    *,
    detail: dict[str, Any] | None,
    at: datetime,
) -> bool:
    """Record an engagement signal unless the message already has it; True if new.

    Once per message for a person's signal and once for a mail scanner's (``detail.scanner_signals``): a scanner
    that fetched first does not keep the person's later click from being recorded (hostile review 2026-12-05).
    """
    scanned = bool(detail and "scanner_signals" in detail)
    result = await session.execute(
        insert(MessageEvent)
        .values(
            id=uuid7(),
            workspace_id=workspace_id,
            message_id=message_id,
            delivery_id=delivery_id,
            channel=channel,
            status=status.value,
            detail=detail,
            at=at,
        )
        .on_conflict_do_nothing(
            index_elements=["message_id", "status", "workspace_id"],
            index_where=_SCANNER_SIGNAL_INDEX_WHERE if scanned else _SIGNAL_INDEX_WHERE,
        )
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]  # CursorResult of an INSERT


async def delivery_channel(session: AsyncSession, delivery_id: uuid.UUID) -> str | None:
    """The channel of a delivery named by a token of its own (the token scoped it)."""
    return await session.scalar(select(Delivery.channel).where(Delivery.id == delivery_id))


async def still_tracked(
    session: AsyncSession, workspace_id: uuid.UUID, delivery_id: uuid.UUID, purpose_key: str
) -> bool:
    """Whether the delivery's address is still ``opted_in`` to the tracking purpose ``purpose_key``."""
    found = await session.scalar(
        text(
            """
            SELECT 1 FROM deliveries d
              JOIN purposes p ON p.workspace_id = d.workspace_id AND p.key = :key
              JOIN consents c ON c.contact_point_id = d.contact_point_id AND c.purpose_id = p.id
             WHERE d.id = :delivery AND d.workspace_id = :ws AND c.state = 'opted_in'
            """
        ),
        {"ws": workspace_id, "delivery": delivery_id, "key": purpose_key},
    )
    return found is not None
