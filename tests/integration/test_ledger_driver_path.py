"""The single change on the driver connection against the session's statements (issue 21, item 3: a STOP flood).

Where a sealer runs, ``withdraw_point`` (STOP, one-click unsubscribe, complaint, provider block) reads and locks an
address's consent rows in one statement and writes its events and projections in one more, on the asyncpg
connection of the caller's transaction; ``apply_changes`` locks and writes so too. Random sequences of changes
(hypothesis) go into two fresh workspaces alike, one that way, one through the session's statements (the way
before, :func:`app.ledger.service.on_session`). Both must answer the same and leave the same ledger once sealed:
the same events in the same order field for field (ids, times and the evidence's salt aside), the same projections,
the same webhook deliveries, and both chains verify.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import event, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from app.domain.model import ActorType, State, Trigger
from app.ledger import repository, sealer, service
from app.ledger.actions import withdraw_point
from app.ledger.audit import verify_chain
from app.ledger.service import Actor, Change, apply_changes, record_batch
from app.lib.db import Database
from app.lib.orm import utcnow
from app.purposes import service as purposes
from app.webhooks.models import WebhookSubscription
from app.workspaces import service as workspace_service
from tests.conftest import Ledger

SUBJECT = Actor(ActorType.SUBJECT)
PROVIDER = Actor(ActorType.PROVIDER, "twilio")
POINTS = [("sms", "+4915100007001"), ("sms", "+4915100007002"), ("email", "jane@example.com")]
PURPOSES = [None, "news", "offers", "orders"]

withdrawals = st.tuples(
    st.just("withdraw"),
    st.integers(0, len(POINTS) - 1),
    st.sampled_from(PURPOSES),
    st.sampled_from(["stop_word", "unsubscribe", "complaint", "provider_block"]),
    st.booleans(),
)
changes = st.tuples(
    st.just("apply"),
    st.integers(0, len(POINTS) - 1),
    st.lists(st.sampled_from(PURPOSES), min_size=1, max_size=3),
    st.sampled_from(["start_word", "signup", "confirm", "unsubscribe", "stop_word", "permission_granted"]),
    st.booleans(),
)


async def world(database) -> tuple[uuid.UUID, list[Any], dict[str | None, uuid.UUID | None]]:
    """A fresh workspace with the purposes, the addresses and a ``consent.changed`` subscription."""
    async with database.sessionmaker() as db, db.begin():
        workspace_id = (await workspace_service.create_workspace(db, "Flood")).id
        ids: dict[str | None, uuid.UUID | None] = {None: None}
        for key in PURPOSES[1:]:
            kind = "transactional" if key == "orders" else "marketing"
            ids[key] = (await purposes.create_purpose(db, workspace_id, key, key.title(), kind)).id
            await asyncio.sleep(0.002)  # ids (uuid7) in the same order in both workspaces: a withdrawal goes by it
        db.add(
            WebhookSubscription(
                id=uuid.uuid4(),
                workspace_id=workspace_id,
                url="https://hooks.example/x",
                events=["consent.changed"],
                secret_sealed="x",
            )
        )
    ledger = Ledger(database, workspace_id)
    points = [await ledger.point(channel, value, external_id=f"crm-{n}") for n, (channel, value) in enumerate(POINTS)]
    return workspace_id, points, ids


async def run(database, workspace_id, points, ids, actions) -> list[Any]:
    """The actions, one transaction each (as a webhook's); what each answered, without ids."""
    answers: list[Any] = []
    for n, (kind, which, purpose, trigger, flag) in enumerate(actions):
        point = points[which]
        evidence = {"step": n, "keyword": "STOP"}
        async with database.sessionmaker() as db, db.begin():
            await repository.find_contact_point(db, workspace_id, point.channel, point.value)  # as a webhook begins
            if kind == "withdraw":
                applied = await withdraw_point(
                    db,
                    workspace_id,
                    point,
                    trigger=Trigger(trigger),
                    evidence=evidence,
                    actor=PROVIDER if trigger == "provider_block" else SUBJECT,
                    purpose_id=ids[purpose],
                    repeat=flag,
                )
            else:
                applied = await apply_changes(
                    db,
                    workspace_id,
                    [Change(point, ids[p], Trigger(trigger), evidence) for p in purpose],
                    SUBJECT,
                    skip_not_allowed=True,
                )
        names = {v: k for k, v in ids.items()}
        answers.append(
            [
                (a.channel, names[a.purpose_id], a.from_state, a.to_state, a.event_id is not None, a.skipped)
                for a in applied
            ]
        )
    return answers


LEDGER = """
SELECT e.seq, c.external_id, e.channel, cp.value, p.key AS purpose, e.trigger, e.from_state, e.to_state,
       e.legal_basis, e.notice_id IS NOT NULL AS notice, e.actor_type, e.actor_id, e.personal -> 'evidence',
       length(e.hash), e.occurred_at = e.recorded_at AS occurred_at_recording
  FROM consent_events e
  JOIN contacts c ON c.id = e.contact_id
  JOIN contact_points cp ON cp.id = e.contact_point_id
  LEFT JOIN purposes p ON p.id = e.purpose_id
 WHERE e.workspace_id = :ws
 ORDER BY e.seq
"""
PROJECTIONS = """
SELECT c.external_id, s.channel, cp.value, p.key AS purpose, s.state, s.legal_basis, s.notice_id IS NOT NULL,
       s.since IS NOT NULL, s.version, e.seq AS last_event_seq
  FROM consents s
  JOIN contacts c ON c.id = s.contact_id
  JOIN contact_points cp ON cp.id = s.contact_point_id
  LEFT JOIN purposes p ON p.id = s.purpose_id
  LEFT JOIN consent_events e ON e.id = s.last_event_id
 WHERE s.workspace_id = :ws
 ORDER BY 1, 2, 3, 4 NULLS FIRST
"""
DELIVERIES = """
SELECT d.event_type, d.status, (d.payload -> 'data') - 'contact_id' - 'contact_point_id' - 'occurred_at'
  FROM webhook_deliveries d
 WHERE d.workspace_id = :ws
 ORDER BY (d.payload -> 'data' ->> 'seq')::bigint
"""


async def ledger_of(database, workspace_id) -> dict[str, Any]:
    async with database.sessionmaker() as db:
        async with db.begin():
            await sealer.seal(db, workspace_id)
        verified = await verify_chain(db, workspace_id)
        assert verified.valid, verified
        return {
            name: [tuple(row) for row in await db.execute(text(sql), {"ws": workspace_id})]
            for name, sql in (("events", LEDGER), ("projections", PROJECTIONS), ("deliveries", DELIVERIES))
        }


@pytest.fixture
def deferred(database, monkeypatch):
    """This process runs a sealer (not started: the test seals where it compares)."""
    monkeypatch.setattr(sealer, "_running", sealer.Sealer(database))


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(actions=st.lists(st.one_of(withdrawals, changes), min_size=1, max_size=12))
async def test_the_driver_path_records_what_the_sessions_statements_record(deferred, database, actions):
    fast_ws, fast_points, fast_ids = await world(database)
    slow_ws, slow_points, slow_ids = await world(database)
    fast = await run(database, fast_ws, fast_points, fast_ids, actions)
    with service.on_session():
        slow = await run(database, slow_ws, slow_points, slow_ids, actions)
    assert fast == slow
    assert await ledger_of(database, fast_ws) == await ledger_of(database, slow_ws)


async def test_a_withdrawal_goes_on_the_driver_in_two_statements(deferred, database, ledger, session):
    """The path the flood takes: the rows read and locked in one statement, written in one (not the session's)."""
    purpose = await ledger.purpose()
    point = await ledger.point("sms", "+4915100007101")
    await ledger.apply(point, purpose.id, "start_word")
    sent: list[str] = []
    async with database.sessionmaker() as db, db.begin():
        await repository.find_contact_point(db, ledger.workspace_id, "sms", point.value)
        driver = await repository.transaction_driver(db)
        assert driver is not None

        def logged(record: Any) -> None:
            sent.append(record.query)

        driver.add_query_logger(logged)
        conn = await db.connection()
        on_session: list[str] = []

        def count(*args: Any) -> None:
            on_session.append(args[2])

        event.listen(conn.sync_connection, "before_cursor_execute", count)
        try:
            applied = await withdraw_point(
                db, ledger.workspace_id, point, trigger=Trigger.STOP_WORD, evidence={}, actor=SUBJECT
            )
        finally:
            event.remove(conn.sync_connection, "before_cursor_execute", count)
            driver.remove_query_logger(logged)
    assert [(a.purpose_id, a.to_state) for a in applied] == [(None, "opted_out"), (purpose.id, "opted_out")]
    assert len(sent) == 2, sent
    assert on_session == [], "no statement through the session"


@pytest.fixture(scope="module")
async def engine(pg_server):
    """A database of this module's own: the concurrency test commits."""
    url = await pg_server.create_database(migrated=True)
    own = create_async_engine(url, pool_size=5, max_overflow=30)
    try:
        yield own
    finally:
        await own.dispose()
        await pg_server.drop_database(url)


async def test_driver_withdrawals_start_words_and_imports_at_once_lose_nothing_and_do_not_deadlock(engine, monkeypatch):
    """STOPs on the driver path, start words (``apply_changes`` on the driver) and imports (chained under the head,
    the session's statements) over the same consent rows at once: one order of locks, so no deadlock; every writer
    saw the state the one before it left; the chain verifies once sealed."""
    maker = async_sessionmaker(engine, expire_on_commit=False)
    database = Database(engine, maker)
    monkeypatch.setattr(sealer, "_running", sealer.Sealer(database))
    async with maker() as db, db.begin():
        workspace_id = (await workspace_service.create_workspace(db, "Flood concurrency")).id
        purpose = await purposes.create_purpose(db, workspace_id, "news", "News", "marketing")
        contact = await repository.add_contact(db, workspace_id, None, None, None)
        points = [
            await repository.add_contact_point(
                db, workspace_id, contact_id=contact.id, channel="sms", value=value, details={}, suppression_keys=[]
            )
            for value in ("+4915100007201", "+4915100007202")
        ]

    async def stop(point: Any) -> list[Any]:
        async with maker() as db, db.begin():
            await repository.find_contact_point(db, workspace_id, "sms", point.value)
            return await withdraw_point(
                db, workspace_id, point, trigger=Trigger.STOP_WORD, evidence={"keyword": "STOP"}, actor=SUBJECT
            )

    async def start(point: Any) -> list[Any]:
        async with maker() as db, db.begin():
            await repository.find_contact_point(db, workspace_id, "sms", point.value)
            return await apply_changes(
                db, workspace_id, [Change(point, purpose.id, Trigger.START_WORD)], SUBJECT, skip_not_allowed=True
            )

    async def imported(ordered: list[Any]) -> list[Any]:
        async with maker() as db, db.begin():
            changes = [
                Change(p, p_id, Trigger.IMPORT, target=State.OPTED_IN, occurred_at=utcnow())
                for p in ordered
                for p_id in (purpose.id, None)
            ]
            return await record_batch(db, workspace_id, changes, Actor(ActorType.SYSTEM))

    writers = []
    for n in range(12):
        writers += [stop(points[n % 2]), start(points[(n + 1) % 2]), imported(points if n % 2 else points[::-1])]
    await asyncio.wait_for(asyncio.gather(*writers), timeout=120)

    async with maker() as db:
        async with db.begin():
            await sealer.seal(db, workspace_id)
        verified = await verify_chain(db, workspace_id)
        events = (
            await db.execute(
                text(
                    "SELECT contact_point_id, purpose_id, from_state, to_state FROM consent_events"
                    " WHERE workspace_id = :ws ORDER BY seq"
                ),
                {"ws": workspace_id},
            )
        ).all()
        consents = {
            (row.contact_point_id, row.purpose_id): row
            for row in await db.execute(
                text("SELECT contact_point_id, purpose_id, state, version FROM consents WHERE workspace_id = :ws"),
                {"ws": workspace_id},
            )
        }
    assert verified.valid, verified
    assert verified.events_checked == len(events) >= 12, "every STOP recorded at least its channel-level event"
    last: dict[Any, str] = {}
    counts: dict[Any, int] = {}
    for point_id, purpose_id, from_state, to_state in events:
        key = (point_id, purpose_id)
        assert from_state == last.get(key, "none"), "each writer saw the state the one before it left"
        last[key] = to_state
        counts[key] = counts.get(key, 0) + 1
    for key, state in last.items():
        assert consents[key].state == state
        assert consents[key].version == counts[key]


async def test_a_database_error_on_the_driver_path_is_sqlalchemys_as_on_the_sessions(deferred, database, ledger):
    """Callers catch ``DBAPIError`` around ledger writes (a sweep's savepoint per purpose) and the API reads its
    SQLSTATE: a NUL in the evidence, which ``jsonb`` refuses, fails the same way on both paths."""
    purpose = await ledger.purpose()
    point = await ledger.point("sms", "+4915100007301")
    await ledger.apply(point, purpose.id, "start_word")

    async def stop() -> None:
        async with database.sessionmaker() as db, db.begin():
            await repository.find_contact_point(db, ledger.workspace_id, "sms", point.value)
            await withdraw_point(
                db, ledger.workspace_id, point, trigger=Trigger.STOP_WORD, evidence={"x": "\x00"}, actor=SUBJECT
            )

    for path in (contextlib.nullcontext, service.on_session):
        with path(), pytest.raises(DBAPIError) as raised:
            await stop()
        assert sqlstates(raised.value) & {"22P05", "22021"}, raised.value


def sqlstates(error: BaseException | None) -> set[str]:
    """The SQLSTATEs along an error's chain (SQLAlchemy's, the adapter's, asyncpg's), as :mod:`app.lib.errors` reads."""
    found: set[str] = set()
    for _ in range(5):
        if error is None:
            break
        if getattr(error, "sqlstate", None):
            found.add(error.sqlstate)  # type: ignore[attr-defined]
        error = getattr(error, "orig", None) or error.__cause__
    return found
