"""All SQL of chains.

Every function takes the workspace and filters on it, except :func:`claim_due` (the runner's claim across
workspaces, like the dispatcher's :func:`app.messages.repository.claim_due`) and :func:`steps_by_id` (the steps it
just claimed); what the runner reads afterwards is scoped to the workspaces of the claimed steps.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Collection, Iterable, Sequence
from datetime import datetime
from typing import Any, NamedTuple

import asyncpg
from sqlalchemy import Table, bindparam, delete, func, inspect, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstanceState

from app.chains.models import Chain, ChainRun, ChainStep, StepStatus
from app.domain.model import State
from app.ledger.models import ConsentEvent
from app.lib.idempotency import KeptAnswer
from app.lib.repository import keep_idempotency_answer_sql
from app.messages.models import Delivery, MessageEvent, MessageToken

#: Due steps of active runs, each locked with its run (``SKIP LOCKED``: a step another runner or a cancellation
#: holds is left alone). Its WHERE clause implies the predicate of the partial index ``ix_chain_steps_due``, and
#: the time is a parameter, not ``clock_timestamp()`` (volatile: no index condition), so the scan stops at the
#: first step not yet due however many runs wait for days.
_CLAIM = text(
    """
    SELECT s.id
      FROM chain_steps s JOIN chain_runs r ON r.id = s.run_id
     WHERE s.status = 'pending' AND s.due_at IS NOT NULL AND s.due_at <= :now
       AND r.status = 'active'
     ORDER BY s.due_at
     LIMIT :batch
       FOR UPDATE OF s, r SKIP LOCKED
    """
)


async def lock_key(session: AsyncSession, workspace_id: uuid.UUID, key: str) -> None:
    """Serialise the numbering of a chain key's versions (until the transaction ends)."""
    await session.execute(select(func.pg_advisory_xact_lock(func.hashtextextended(f"chain:{workspace_id}:{key}", 0))))


async def newest(session: AsyncSession, workspace_id: uuid.UUID, key: str) -> Chain | None:
    """The newest version of the chain ``key``."""
    return await session.scalar(
        select(Chain)
        .where(Chain.workspace_id == workspace_id, Chain.key == key)
        .order_by(Chain.version.desc())
        .limit(1)
    )


async def add_chain(session: AsyncSession, chain: Chain) -> Chain:
    """Write a new chain version (with its ``created_at``)."""
    session.add(chain)
    await session.flush()
    await session.refresh(chain, ["created_at"])
    return chain


#: A run and its steps in one statement (one round trip; the run is a data-modifying ``WITH``, and the steps'
#: foreign key is checked at the statement's end, when the run is there). Text, so it is compiled once.
_ADD_RUN = text(
    """
    WITH run AS (
        INSERT INTO chain_runs (id, workspace_id, chain_id, contact_id, variables, campaign, status, started_at)
        VALUES (:run_id, :workspace_id, :chain_id, :contact_id, CAST(:variables AS jsonb), :campaign, :status,
                :started_at))
    INSERT INTO chain_steps (id, workspace_id, run_id, position, key, status, due_at, attempts)
    SELECT s.id, :workspace_id, :run_id, s.position, s.key, s.status, s.due_at, s.attempts
      FROM unnest(CAST(:ids AS uuid[]), CAST(:positions AS int[]), CAST(:keys AS text[]), CAST(:statuses AS text[]),
                  CAST(:due AS timestamptz[]), CAST(:attempts AS int[]))
           AS s(id, position, key, status, due_at, attempts)
    """
)


async def add_run(session: AsyncSession, run: ChainRun, steps: Sequence[ChainStep]) -> None:
    """Write a run and its steps in one statement.

    The rows are written past the ORM: ``run`` and ``steps`` stay as given (not added to the session).
    """
    assert all(step.run_id == run.id and step.workspace_id == run.workspace_id for step in steps)
    await session.execute(
        _ADD_RUN,
        {
            "run_id": run.id,
            "workspace_id": run.workspace_id,
            "chain_id": run.chain_id,
            "contact_id": run.contact_id,
            "variables": json.dumps(run.variables) if run.variables is not None else None,
            "campaign": run.campaign,
            "status": run.status,
            "started_at": run.started_at,
            "ids": [step.id for step in steps],
            "positions": [step.position for step in steps],
            "keys": [step.key for step in steps],
            "statuses": [step.status for step in steps],
            "due": [step.due_at for step in steps],
            "attempts": [step.attempts for step in steps],
        },
    )


#: :data:`_ADD_RUN` for the driver connection (asyncpg's numbered parameters).
_ADD_RUN_DRIVER = """
    WITH run AS (
        INSERT INTO chain_runs (id, workspace_id, chain_id, contact_id, variables, campaign, status, started_at)
        VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7, $8))
    INSERT INTO chain_steps (id, workspace_id, run_id, position, key, status, due_at, attempts)
    SELECT s.id, $2, $1, s.position, s.key, s.status, s.due_at, s.attempts
      FROM unnest($9::uuid[], $10::int[], $11::text[], $12::text[], $13::timestamptz[], $14::int[])
           AS s(id, position, key, status, due_at, attempts)
"""

_CHAIN_STEPS_DRIVER = "SELECT steps::text FROM chains WHERE id = $1 AND workspace_id = $2"


async def chain_steps_on_driver(
    connection: Any, workspace_id: uuid.UUID, chain_id: uuid.UUID
) -> list[dict[str, Any]] | None:
    """The steps of a chain version of the workspace, on a raw asyncpg ``connection`` (the runs' hot path)."""
    steps: str | None = await connection.fetchval(_CHAIN_STEPS_DRIVER, chain_id, workspace_id)
    return None if steps is None else json.loads(steps)


async def add_run_on_driver(connection: Any, run: ChainRun, steps: Sequence[ChainStep]) -> None:
    """:func:`add_run` on a raw asyncpg ``connection`` (in the caller's transaction)."""
    assert all(step.run_id == run.id and step.workspace_id == run.workspace_id for step in steps)
    await connection.execute(
        _ADD_RUN_DRIVER,
        run.id,
        run.workspace_id,
        run.chain_id,
        run.contact_id,
        json.dumps(run.variables) if run.variables is not None else None,
        run.campaign,
        run.status,
        run.started_at,
        [step.id for step in steps],
        [step.position for step in steps],
        [step.key for step in steps],
        [step.status for step in steps],
        [step.due_at for step in steps],
        [step.attempts for step in steps],
    )


#: Runs of a batch and their steps in one statement (``POST /v1/chains/{id}/runs/batch``), the rows
#: :func:`add_run_on_driver` writes, one per run, plus the item's ``key``. A key that names a run already (one a
#: concurrent batch committed meanwhile: the insert waits for it on the unique index) writes neither that run nor its
#: steps (they are joined to the runs written); the runs are written in key order, so two batches sharing keys wait
#: for each other in one order and cannot deadlock. Answers the ids of the runs written.
_ADD_RUNS_DRIVER = """
    WITH run AS (
        INSERT INTO chain_runs (id, workspace_id, chain_id, contact_id, variables, campaign, status, started_at, key)
        SELECT r.id, $1, $2, r.contact_id, r.variables::jsonb, r.campaign, 'active', $3, r.key
          FROM unnest($4::uuid[], $5::uuid[], $6::text[], $7::text[], $8::text[])
               AS r(id, contact_id, variables, campaign, key)
         ORDER BY r.key
            ON CONFLICT (workspace_id, chain_id, key) WHERE key IS NOT NULL DO NOTHING
        RETURNING id
    ),
    steps AS (
        INSERT INTO chain_steps (id, workspace_id, run_id, position, key, status, due_at, attempts)
        SELECT s.id, $1, s.run_id, s.position, s.key, 'pending', CASE WHEN s.position = 0 THEN $9::timestamptz END, 0
          FROM unnest($10::uuid[], $11::uuid[], $12::int[], $13::text[]) AS s(id, run_id, position, key)
          JOIN run ON run.id = s.run_id
    )
    SELECT id FROM run
"""


class NewRun(NamedTuple):
    """A run of a batch to write (:func:`add_runs_on_driver`)."""

    id: uuid.UUID
    contact_id: uuid.UUID
    variables: dict[str, str] | None
    campaign: str | None
    key: str | None
    step_ids: Sequence[uuid.UUID]


async def add_runs_on_driver(
    connection: Any,
    workspace_id: uuid.UUID,
    chain_id: uuid.UUID,
    runs: Sequence[NewRun],
    step_keys: Sequence[str],
    *,
    started_at: datetime,
    first_due_at: datetime,
) -> set[uuid.UUID]:
    """Write ``runs`` and their steps in one statement, in the caller's transaction; answers the ids written.

    The runs ``active``, started at ``started_at``; their steps ``pending``, the first due at ``first_due_at``. A run
    whose ``key`` names a run already is not written.
    """
    step_ids: list[uuid.UUID] = []
    step_runs: list[uuid.UUID] = []
    positions: list[int] = []
    keys: list[str] = []
    for run in runs:
        assert len(run.step_ids) == len(step_keys)
        step_ids += run.step_ids
        step_runs += [run.id] * len(step_keys)
        positions += range(len(step_keys))
        keys += step_keys
    rows = await connection.fetch(
        _ADD_RUNS_DRIVER,
        workspace_id,
        chain_id,
        started_at,
        [run.id for run in runs],
        [run.contact_id for run in runs],
        [json.dumps(run.variables) if run.variables is not None else None for run in runs],
        [run.campaign for run in runs],
        [run.key for run in runs],
        first_due_at,
        step_ids,
        step_runs,
        positions,
        keys,
    )
    return {row[0] for row in rows}


class KeyedRun(NamedTuple):
    """A run named by its ``key``: what a repeated item must match to be answered with it."""

    id: uuid.UUID
    contact_id: uuid.UUID
    variables: dict[str, str] | None
    campaign: str | None


_RUNS_BY_KEY_DRIVER = """
    SELECT key, id, contact_id, variables::text, campaign FROM chain_runs
     WHERE workspace_id = $1 AND chain_id = $2 AND key = ANY($3::text[])
"""


async def runs_by_key_on_driver(
    connection: Any, workspace_id: uuid.UUID, chain_id: uuid.UUID, keys: Collection[str]
) -> dict[str, KeyedRun]:
    """The runs of the chain version that ``keys`` name (one statement; the unique index answers it)."""
    if not keys:
        return {}
    rows = await connection.fetch(_RUNS_BY_KEY_DRIVER, workspace_id, chain_id, list(keys))
    return {
        row[0]: KeyedRun(row[1], row[2], json.loads(row[3]) if row[3] is not None else None, row[4]) for row in rows
    }


#: The contact a run names, by id or external id, as :func:`app.ledger.repository.find_contact_on_driver` finds it
#: (an id wins over another contact's equal external id). Here, not in the ledger's repository, only so that the
#: fast path's one statement can hold it; ``tests/integration/test_chain_runs_fast.py`` checks that the two agree.
_CONTACT_BY_REF = """
    SELECT id, merged_into FROM contacts
     WHERE workspace_id = $2 AND (external_id = $4 OR id = $16)
     ORDER BY id = $16 DESC NULLS LAST
     LIMIT 1
"""

#: A run started with its ``Idempotency-Key`` in one statement (``POST /v1/chains/{id}/runs``, the fast path): the
#: contact is found, the key is claimed with its answer, and the run and its steps are written only from the claimed
#: key's row, so an unknown or merged contact or a held key (answered, still running, or claimed by a concurrent
#: request that committed first, whose row the claim waits for) writes nothing. One statement, so atomic without
#: ``BEGIN``/``COMMIT``; the foreign keys (the chain, the contact, the run of the steps) are checked at its end.
#: The steps as :func:`add_run_on_driver` writes them: all pending, the first due at ``$7``. Its answer: 1 when the
#: run was written, else 0. Composed of constant SQL only (S608).
_START_KEYED_RUN_DRIVER = f"""
    WITH contact AS ({_CONTACT_BY_REF}),
    claimed AS ({
    keep_idempotency_answer_sql(
        "FROM contact WHERE contact.merged_into IS NULL",
        "$2",
        "$10",
        "$11",
        "$6::timestamptz",
        "$12::int",
        "$13::text",
        "$14::bytea",
        "$15",
        "$17",
    )
}),
    run AS (
        INSERT INTO chain_runs (id, workspace_id, chain_id, contact_id, variables, campaign, status, started_at)
        SELECT $1, $2, $3, contact.id, $5::jsonb, $18, 'active', $6 FROM claimed, contact
        RETURNING id
    ),
    steps AS (
        INSERT INTO chain_steps (id, workspace_id, run_id, position, key, status, due_at, attempts)
        SELECT s.id, $2, run.id, s.n - 1, s.key, 'pending', CASE WHEN s.n = 1 THEN $7::timestamptz END, 0
          FROM run, unnest($8::uuid[], $9::text[]) WITH ORDINALITY AS s(id, key, n)
    )
    SELECT count(*)::int FROM run
"""  # noqa: S608


async def start_keyed_run_on_driver(
    connection: Any,
    *,
    run_id: uuid.UUID,
    workspace_id: uuid.UUID,
    chain_id: uuid.UUID,
    contact_ref: str,
    variables: dict[str, str] | None,
    campaign: str | None,
    started_at: datetime,
    first_due_at: datetime,
    step_ids: Sequence[uuid.UUID],
    step_keys: Sequence[str],
    key: KeptAnswer,
) -> bool | None:
    """Claim ``key`` with its answer and write the run and its steps in one statement; False when it wrote nothing.

    The contact by ``contact_ref`` (its id or external id), the run ``active``, its steps ``pending``, the first due
    at ``first_due_at``. False, with nothing written, when the contact is unknown or merged or the key is held; None,
    with nothing written, when the chain or the contact went away meanwhile (a foreign key failed). On a raw asyncpg
    ``connection`` outside a transaction (the statement commits by itself). Plain values, not ORM instances: building
    those cost a tenth of the request's CPU on the hot path.
    """
    contact_id: uuid.UUID | None = None
    with contextlib.suppress(ValueError):
        contact_id = uuid.UUID(contact_ref)
    arguments = (
        run_id,
        workspace_id,
        chain_id,
        contact_ref,
        json.dumps(variables) if variables is not None else None,
        started_at,
        first_due_at,
        step_ids,
        step_keys,
        key.key,
        key.fingerprint,
        key.status,
        key.headers,
        key.body,
        key.retention,
        contact_id,
        key.abandoned_after,
        campaign,
    )
    try:
        if (
            connection.is_in_transaction()
        ):  # a caller's transaction (the tests' connection): keep a failure in a savepoint
            async with connection.transaction():
                written: int = await connection.fetchval(_START_KEYED_RUN_DRIVER, *arguments)
        else:
            written = await connection.fetchval(_START_KEYED_RUN_DRIVER, *arguments)
    except asyncpg.ForeignKeyViolationError:
        return None
    return written == 1


async def reload(session: AsyncSession, *rows: ChainRun | ChainStep) -> None:
    """Read rows again (after a savepoint that changed them was rolled back)."""
    for row in rows:
        await session.refresh(row)


async def write_changes(session: AsyncSession, rows: Iterable[ChainRun | ChainStep]) -> None:
    """Write what changed in these loaded rows: one ``executemany`` UPDATE per table and set of changed columns.

    Instead of the unit of work's flush, which writes a round's rows one UPDATE each (it batches only consecutive
    rows with the same changes, and a round's rows alternate: a decided step, its run's next step, the run). The
    rows written are expunged, so no flush writes them again; unchanged rows stay as they are.
    """
    groups: dict[tuple[Table, tuple[str, ...]], list[dict[str, Any]]] = {}
    written = []
    for row in rows:
        state: InstanceState[Any] = inspect(row)
        if not state.modified or state.session_id is None:
            continue
        changed = tuple(sorted(state.committed_state))  # the attributes set since the row was loaded
        if changed:
            table = row.__table__
            assert isinstance(table, Table)
            groups.setdefault((table, changed), []).append({"row_id": row.id, **{k: getattr(row, k) for k in changed}})
            written.append(row)
    for (table, changed), params in groups.items():
        statement = update(table).where(table.c.id == bindparam("row_id")).values({k: bindparam(k) for k in changed})
        await session.execute(statement, params)
    for row in written:
        session.expunge(row)


async def retry_later(session: AsyncSession, step_id: uuid.UUID, **values: Any) -> None:
    """Write a failed step's next attempt (or its giving up) past the ORM, whose copy the rollback expired."""
    await session.execute(
        update(ChainStep).where(ChainStep.id == step_id).values(**values).execution_options(synchronize_session=False)
    )


async def get_chain(session: AsyncSession, workspace_id: uuid.UUID, chain_id: uuid.UUID) -> Chain | None:
    """One chain version of the workspace."""
    return await session.scalar(select(Chain).where(Chain.id == chain_id, Chain.workspace_id == workspace_id))


async def list_chains(session: AsyncSession, workspace_id: uuid.UUID, key: str | None) -> Sequence[Chain]:
    """The workspace's chain versions (of one key), by key and version."""
    query = select(Chain).where(Chain.workspace_id == workspace_id)
    if key is not None:
        query = query.where(Chain.key == key)
    return (await session.scalars(query.order_by(Chain.key, Chain.version))).all()


async def chains_by_id(
    session: AsyncSession, workspace_ids: Collection[uuid.UUID], chain_ids: Collection[uuid.UUID]
) -> dict[uuid.UUID, Chain]:
    """Chain versions by id, of the given workspaces only."""
    rows = await session.scalars(
        select(Chain).where(Chain.id.in_(list(chain_ids)), Chain.workspace_id.in_(list(workspace_ids)))
    )
    return {c.id: c for c in rows}


async def get_run(
    session: AsyncSession, workspace_id: uuid.UUID, run_id: uuid.UUID, *, lock: bool = False
) -> ChainRun | None:
    """One run of the workspace (locked for an update with ``lock``)."""
    query = select(ChainRun).where(ChainRun.id == run_id, ChainRun.workspace_id == workspace_id)
    return await session.scalar(query.with_for_update() if lock else query)


async def steps_of(session: AsyncSession, workspace_id: uuid.UUID, run_id: uuid.UUID) -> Sequence[ChainStep]:
    """A run's steps in order."""
    return (
        await session.scalars(
            select(ChainStep)
            .where(ChainStep.run_id == run_id, ChainStep.workspace_id == workspace_id)
            .order_by(ChainStep.position)
        )
    ).all()


async def steps_of_runs(
    session: AsyncSession, workspace_ids: Collection[uuid.UUID], run_ids: Collection[uuid.UUID]
) -> dict[uuid.UUID, list[ChainStep]]:
    """The steps of each run, in order, of the given workspaces only."""
    rows = await session.scalars(
        select(ChainStep)
        .where(ChainStep.run_id.in_(list(run_ids)), ChainStep.workspace_id.in_(list(workspace_ids)))
        .order_by(ChainStep.run_id, ChainStep.position)
    )
    found: dict[uuid.UUID, list[ChainStep]] = {}
    for row in rows:
        found.setdefault(row.run_id, []).append(row)
    return found


async def close_pending(
    session: AsyncSession,
    workspace_id: uuid.UUID,
    run_id: uuid.UUID,
    status: StepStatus,
    *,
    at: datetime,
    reason: str | None = None,
    event_id: uuid.UUID | None = None,
    detail: dict[str, Any] | None = None,
    besides: uuid.UUID | None = None,
) -> int:
    """Close every step of the run still pending (cancelled, or ended by a ledger event) but ``besides``."""
    result = await session.execute(
        update(ChainStep)
        .where(
            ChainStep.run_id == run_id,
            ChainStep.workspace_id == workspace_id,
            ChainStep.status == StepStatus.PENDING,
            ChainStep.id != besides if besides is not None else ChainStep.id.is_not(None),
        )
        .values(status=status, decided_at=at, reason=reason, event_id=event_id, detail=detail, due_at=None)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]  # a CursorResult


async def claim_due(session: AsyncSession, *, now: datetime, batch: int) -> list[uuid.UUID]:
    """Lock up to ``batch`` steps of active runs (of every workspace) due at ``now`` until the transaction ends."""
    rows = await session.execute(_CLAIM, {"now": now, "batch": batch})
    return [row[0] for row in rows.all()]


async def steps_by_id(session: AsyncSession, step_ids: Collection[uuid.UUID]) -> Sequence[ChainStep]:
    """The claimed steps (already locked by :func:`claim_due`), in due order."""
    return (
        await session.scalars(
            select(ChainStep).where(ChainStep.id.in_(list(step_ids))).order_by(ChainStep.due_at, ChainStep.id)
        )
    ).all()


async def runs_by_id(
    session: AsyncSession, workspace_ids: Collection[uuid.UUID], run_ids: Collection[uuid.UUID]
) -> dict[uuid.UUID, ChainRun]:
    """Runs by id, of the given workspaces only."""
    rows = await session.scalars(
        select(ChainRun).where(ChainRun.id.in_(list(run_ids)), ChainRun.workspace_id.in_(list(workspace_ids)))
    )
    return {r.id: r for r in rows}


async def delivery_facts(
    session: AsyncSession, workspace_ids: Collection[uuid.UUID], message_ids: Collection[uuid.UUID]
) -> dict[uuid.UUID, list[tuple[str, str]]]:
    """Each message's deliveries as ``(channel, status)``, of the given workspaces only."""
    if not message_ids:
        return {}
    rows = await session.execute(
        select(Delivery.message_id, Delivery.channel, Delivery.status).where(
            Delivery.message_id.in_(list(message_ids)), Delivery.workspace_id.in_(list(workspace_ids))
        )
    )
    found: dict[uuid.UUID, list[tuple[str, str]]] = {}
    for message_id, channel, status in rows:
        found.setdefault(message_id, []).append((channel, status))
    return found


async def message_signals(session: AsyncSession, message_ids: Collection[uuid.UUID]) -> dict[uuid.UUID, set[str]]:
    """The statuses each message's history recorded (engagement signals appear here once they are recorded)."""
    if not message_ids:
        return {}
    rows = await session.execute(
        select(MessageEvent.message_id, MessageEvent.status)
        .where(MessageEvent.message_id.in_(list(message_ids)))
        .distinct()
    )
    found: dict[uuid.UUID, set[str]] = {}
    for message_id, status in rows:
        found.setdefault(message_id, set()).add(status)
    return found


#: Ledger transitions that end a consent: an opt-out or objection, or an opted-in consent lapsing or otherwise
#: leaving ``opted_in``.
_ENDING = or_(
    ConsentEvent.to_state.in_([State.OPTED_OUT.value, State.OBJECTED.value]),
    (ConsentEvent.from_state == State.OPTED_IN.value) & (ConsentEvent.to_state != State.OPTED_IN.value),
)


async def ending_events(
    session: AsyncSession,
    workspace_ids: Collection[uuid.UUID],
    contact_ids: Collection[uuid.UUID],
    *,
    since: datetime,
) -> dict[uuid.UUID, list[ConsentEvent]]:
    """The contacts' ledger events since ``since`` that ended a consent, per contact in ledger order.

    The caller picks those of its purpose: an event on every marketing purpose of a channel (``purpose_id``
    empty: an objection, "withdraw everything") counts for each marketing purpose.
    """
    rows = await session.scalars(
        select(ConsentEvent)
        .where(
            ConsentEvent.workspace_id.in_(list(workspace_ids)),
            ConsentEvent.contact_id.in_(list(contact_ids)),
            ConsentEvent.recorded_at >= since,
            _ENDING,
        )
        # those waiting for the sealer after the sealed ones, in the order the sealer will give them
        .order_by(ConsentEvent.workspace_id, ConsentEvent.seq.asc().nulls_last(), ConsentEvent.intake)
    )
    found: dict[uuid.UUID, list[ConsentEvent]] = {}
    for row in rows:
        assert row.contact_id is not None  # filtered on it
        found.setdefault(row.contact_id, []).append(row)
    return found


async def runs_of_contact(session: AsyncSession, workspace_id: uuid.UUID, contact_id: uuid.UUID) -> Sequence[ChainRun]:
    """The contact's runs, oldest first."""
    return (
        await session.scalars(
            select(ChainRun)
            .where(ChainRun.workspace_id == workspace_id, ChainRun.contact_id == contact_id)
            .order_by(ChainRun.started_at, ChainRun.id)
        )
    ).all()


async def delete_runs_of_contact(session: AsyncSession, workspace_id: uuid.UUID, contact_id: uuid.UUID) -> int:
    """Delete the contact's runs (their steps go with them); answers how many."""
    result = await session.execute(
        delete(ChainRun)
        .where(ChainRun.workspace_id == workspace_id, ChainRun.contact_id == contact_id)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]  # a CursorResult


async def message_tracking(session: AsyncSession, message_ids: Collection[uuid.UUID]) -> dict[uuid.UUID, set[str]]:
    """The kinds of token each message was sent with (``link``, ``open``, ``event``): what it can record."""
    if not message_ids:
        return {}
    rows = await session.execute(
        select(MessageToken.message_id, MessageToken.kind)
        .where(MessageToken.message_id.in_(list(message_ids)))
        .distinct()
    )
    found: dict[uuid.UUID, set[str]] = {}
    for message_id, kind in rows:
        found.setdefault(message_id, set()).add(kind)
    return found


async def step_counts(session: AsyncSession, workspace_id: uuid.UUID, chain_id: uuid.UUID) -> list[Any]:
    """Per step position, status and reason: how many steps of the chain's runs, and how many of them converted."""
    converted = (
        select(MessageEvent.id)
        .where(MessageEvent.message_id == ChainStep.message_id, MessageEvent.status == "converted")
        .exists()
    )
    rows = await session.execute(
        select(
            ChainStep.position,
            ChainStep.status,
            ChainStep.reason,
            func.count(),
            func.count().filter(converted),
        )
        .join(ChainRun, ChainRun.id == ChainStep.run_id)
        .where(
            ChainRun.chain_id == chain_id, ChainRun.workspace_id == workspace_id, ChainStep.workspace_id == workspace_id
        )
        .group_by(ChainStep.position, ChainStep.status, ChainStep.reason)
    )
    return list(rows)


async def run_counts(session: AsyncSession, workspace_id: uuid.UUID, chain_id: uuid.UUID) -> dict[str, int]:
    """How many of the chain's runs are in each status."""
    rows = await session.execute(
        select(ChainRun.status, func.count())
        .where(ChainRun.chain_id == chain_id, ChainRun.workspace_id == workspace_id)
        .group_by(ChainRun.status)
    )
    return {status: int(n) for status, n in rows}
