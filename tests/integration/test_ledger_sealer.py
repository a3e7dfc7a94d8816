"""The sealed chain (migration 0043, app/ledger/sealer.py): changes commit unsealed, the sealer chains them.

Where a process runs a sealer (every server and worker process) a consent change inserts its event without a
place in the chain and commits without the workspace's chain head; the sealer appends what committed, in intake
order. The tests' app runs none (it chains inline), so these tests put one in place (``deferred``) or run one.
"""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import async_sessionmaker

from app.domain.model import ActorType, State, Trigger
from app.ledger import repository, sealer
from app.ledger.audit import verify_chain
from app.ledger.models import ConsentEvent, LedgerHead
from app.ledger.service import Actor, Change, apply_changes, record_batch
from app.lib.db import Database
from app.purposes.service import create_purpose
from app.workspaces.service import create_workspace
from tests.conftest import own_database

SYSTEM = Actor(ActorType.SYSTEM)


@pytest.fixture(scope="module")
async def engine(pg_server):
    """A database of this module's own: its tests commit workspaces, subscriptions and suppressions that tests
    counting such rows across the shared database must not see."""
    async with own_database(pg_server) as own:
        yield own


@pytest.fixture
def deferred(database, monkeypatch):
    """This process runs a sealer (not started: the tests seal where they want to)."""
    monkeypatch.setattr(sealer, "_running", sealer.Sealer(database))


async def events_of(session, workspace_id):
    return (
        await session.scalars(
            select(ConsentEvent)
            .where(ConsentEvent.workspace_id == workspace_id)
            .order_by(ConsentEvent.seq.asc().nulls_last(), ConsentEvent.intake)
            .execution_options(populate_existing=True)
        )
    ).all()


async def head_seq(session, workspace_id):
    return await session.scalar(select(LedgerHead.last_seq).where(LedgerHead.workspace_id == workspace_id))


async def test_a_change_commits_unsealed_and_the_sealer_chains_it_in_intake_order(deferred, ledger, session):
    purpose = await ledger.purpose()
    one = await ledger.point("sms", "+4915100000101")
    two = await ledger.point("sms", "+4915100000102")
    applied = [
        *await ledger.apply(one, purpose.id, "start_word", "stop_word"),
        *await ledger.apply(two, purpose.id, "start_word"),
        *await ledger.apply(one, purpose.id, "start_word"),
    ]
    waiting = await events_of(session, ledger.workspace_id)
    assert [(e.seq, e.hash, e.prev_hash) for e in waiting] == [(None, None, None)] * 4, "committed without a place"
    assert not await head_seq(session, ledger.workspace_id), "the chain head was not touched"
    assert [e.id for e in waiting] == [a.event_id for a in applied], "intake is the order they committed in"

    assert await sealer.seal(session, ledger.workspace_id) == 4
    sealed = await events_of(session, ledger.workspace_id)
    assert [e.id for e in sealed] == [a.event_id for a in applied], "chained in intake order"
    assert [e.seq for e in sealed] == [1, 2, 3, 4]
    assert await head_seq(session, ledger.workspace_id) == 4
    assert (await verify_chain(session, ledger.workspace_id)).valid
    assert await sealer.seal(session, ledger.workspace_id) == 0, "nothing is sealed twice"


async def test_a_place_is_given_once_and_sealing_changes_nothing_else(deferred, ledger, session):
    purpose = await ledger.purpose()
    point = await ledger.point("sms", "+4915100000103")
    await ledger.apply(point, purpose.id, "start_word", "stop_word")
    [first, second] = await events_of(session, ledger.workspace_id)
    refused = [
        # sealing that changes the event as well
        "UPDATE consent_events SET seq = 1, prev_hash = hash_of, hash = hash_of, to_state = 'opted_out' WHERE id = :id",
        # half a seal (the check: all three or none)
        "UPDATE consent_events SET seq = 1 WHERE id = :id",
    ]
    for statement in refused:
        nested = await session.begin_nested()
        with pytest.raises(DBAPIError):
            await session.execute(
                text(statement.replace("hash_of", "decode(repeat('ab', 32), 'hex')")), {"id": first.id}
            )
        await nested.rollback()

    await sealer.seal(session, ledger.workspace_id)
    for statement in (
        "UPDATE consent_events SET seq = seq + 10 WHERE id = :id",
        "UPDATE consent_events SET seq = NULL, prev_hash = NULL, hash = NULL WHERE id = :id",
        "UPDATE consent_events SET hash = prev_hash WHERE id = :id",
    ):
        nested = await session.begin_nested()
        with pytest.raises(DBAPIError, match="append-only"):
            await session.execute(text(statement), {"id": second.id})
        await nested.rollback()
    assert (await verify_chain(session, ledger.workspace_id)).valid


async def test_consent_changed_webhooks_are_queued_when_sealed_and_carry_the_seq(deferred, ledger, session):
    await session.execute(
        text(
            "INSERT INTO webhook_subscriptions (id, workspace_id, url, events, secret_sealed)"
            " VALUES (:id, :ws, 'https://hooks.example.com/x', ARRAY['consent.changed'], 'sealed')"
        ),
        {"id": uuid.uuid4(), "ws": ledger.workspace_id},
    )
    purpose = await ledger.purpose()
    point = await ledger.point("sms", "+4915100000104")
    [applied] = await ledger.apply(point, purpose.id, "start_word")
    count = "SELECT count(*) FROM webhook_deliveries WHERE workspace_id = :ws"
    assert await session.scalar(text(count), {"ws": ledger.workspace_id}) == 0, "nothing leaves before its seq"

    await sealer.seal(session, ledger.workspace_id)
    [payload] = (
        await session.scalars(
            text("SELECT payload FROM webhook_deliveries WHERE workspace_id = :ws"), {"ws": ledger.workspace_id}
        )
    ).all()
    assert payload["id"] == str(applied.event_id)
    assert payload["data"]["seq"] == 1
    assert payload["data"]["to_state"] == "opted_in"
    await sealer.seal(session, ledger.workspace_id)
    assert await session.scalar(text(count), {"ws": ledger.workspace_id}) == 1, "queued once"


async def test_readers_of_the_chain_seal_first(deferred, client, admin, ledger):
    purpose = await ledger.purpose()
    point = await ledger.point("sms", "+4915100000105", external_id="crm-105")
    await ledger.apply(point, purpose.id, "start_word", "stop_word")

    history = await client.get("/v1/contacts/crm-105/events", headers=admin)
    assert history.status_code == 200, history.text
    assert [(e["seq"], e["trigger"]) for e in history.json()] == [(1, "start_word"), (2, "stop_word")]
    assert all(len(e["hash"]) == 64 for e in history.json())

    await ledger.apply(point, purpose.id, "start_word")
    verified = await client.get("/v1/audit/verify", headers=admin)
    assert (verified.json()["events_checked"], verified.json()["valid"]) == (3, True)

    await ledger.apply(point, purpose.id, "stop_word")
    stream = await client.get("/v1/audit/events", headers=admin)
    lines = [json.loads(line) for line in stream.text.splitlines()]
    assert [line["seq"] for line in lines] == [1, 2, 3, 4], "the audit stream holds every committed event, chained"


async def test_a_batch_append_seals_what_waits_first(deferred, ledger, session, database):
    purpose = await ledger.purpose()
    point = await ledger.point("sms", "+4915100000106")
    [started] = await ledger.apply(point, purpose.id, "start_word")
    async with database.sessionmaker() as db, db.begin():
        [stopped] = await record_batch(db, ledger.workspace_id, [Change(point, purpose.id, Trigger.STOP_WORD)], SYSTEM)
    events = await events_of(session, ledger.workspace_id)
    assert [(e.id, e.seq) for e in events] == [(started.event_id, 1), (stopped.event_id, 2)]
    assert (await verify_chain(session, ledger.workspace_id)).valid


async def test_a_merge_reads_statements_that_wait_for_the_sealer(deferred, client, admin, ledger, session):
    purpose = await ledger.purpose()
    survivor = await ledger.point("email", "a@example.com", external_id="keep")
    await ledger.point("sms", "+4915100000107", external_id="dup")
    await ledger.apply(survivor, purpose.id, "signup", "confirm")
    withdrawn = await client.post(
        "/v1/withdrawals", json={"contact": "dup", "channel": "all", "purpose": "newsletter"}, headers=admin
    )
    assert withdrawn.status_code == 200, withdrawn.text
    assert await repository.has_unsealed(session, ledger.workspace_id), "the statement waits for the sealer"
    merged = await client.post("/v1/contacts/keep/merge", json={"duplicate": "dup"}, headers=admin)
    assert merged.status_code == 200, merged.text
    body = (await client.get("/v1/contacts/keep", headers=admin)).json()
    states = {(p["address"], c["purpose"]): c["state"] for p in body["contact_points"] for c in p["consents"]}
    assert states["a@example.com", "newsletter"] == State.OPTED_OUT, "the duplicate's no covers the survivor's"
    covered = await session.scalar(
        text(
            "SELECT personal -> 'evidence' -> 'covered_by_seq' FROM consent_events"
            " WHERE workspace_id = :ws AND trigger = 'merged' AND contact_point_id = :point"
        ),
        {"ws": ledger.workspace_id, "point": survivor.id},
    )
    assert isinstance(covered, int), "the merge names the statement's place in the chain"
    assert covered > 0
    await sealer.seal(session, ledger.workspace_id)
    assert (await verify_chain(session, ledger.workspace_id)).valid


async def committed_setup(maker, phones):
    async with maker() as db, db.begin():
        workspace = await create_workspace(db, f"Sealer {uuid.uuid4()}")
        purpose = await create_purpose(db, workspace.id, "newsletter", "Newsletter", "marketing")
        contact = await repository.add_contact(db, workspace.id, None, None, None)
        points = [
            await repository.add_contact_point(
                db, workspace.id, contact_id=contact.id, channel="sms", value=p, details={}, suppression_keys=[]
            )
            for p in phones
        ]
    return workspace, purpose, points


async def wait_sealed(maker, workspace_id, timeout=20.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        async with maker() as db:
            if not await repository.has_unsealed(db, workspace_id):
                return
        await asyncio.sleep(0.05)
    pytest.fail("the sealer left events unsealed")


async def test_concurrent_changes_of_one_workspace_commit_together_and_chain_without_fork(engine):
    """Many writers at once with a running sealer: no lost update, one chain, every change in it once."""
    maker = async_sessionmaker(engine, expire_on_commit=False)
    workspace, purpose, points = await committed_setup(maker, [f"+49151000002{i:02d}" for i in range(8)])
    database = Database(engine, maker)
    stop = asyncio.Event()
    running = asyncio.create_task(sealer.Sealer(database, poll_seconds=60).run(stop))
    await asyncio.sleep(0)  # it registers itself: changes from now on are deferred
    try:
        assert sealer.deferred()

        async def fire(point, trigger):
            async with maker() as db, db.begin():
                [result] = await apply_changes(db, workspace.id, [Change(point, purpose.id, trigger)], SYSTEM)
                return result

        rounds = 10
        results = await asyncio.gather(
            *[fire(p, t) for _ in range(rounds) for p in points for t in (Trigger.START_WORD, Trigger.STOP_WORD)]
        )
        # sealed by the wake-up on commit, not by the poll (a minute away)
        await wait_sealed(maker, workspace.id, timeout=10)
    finally:
        stop.set()
        await running
    assert not sealer.deferred()
    async with maker() as db:
        events = await events_of(db, workspace.id)
        verification = await verify_chain(db, workspace.id)
    assert verification.valid, verification
    assert [e.seq for e in events] == list(range(1, len(results) + 1)), "one chain, no gaps, no fork"
    assert sorted(e.id for e in events) == sorted(r.event_id for r in results), "every acknowledged change once"
    for point in points:
        state = State.NONE
        for event in (e for e in events if e.contact_point_id == point.id):
            assert event.from_state == state, "an address's events are chained in the order they happened"
            state = State(event.to_state)


async def test_what_a_killed_process_left_unsealed_is_sealed_by_the_next_poll(engine):
    maker = async_sessionmaker(engine, expire_on_commit=False)
    workspace, purpose, [point] = await committed_setup(maker, ["+4915100000301"])
    database = Database(engine, maker)
    gone = sealer.Sealer(database)  # a process that committed and died before it sealed
    sealer._running = gone
    try:
        async with maker() as db, db.begin():
            await apply_changes(db, workspace.id, [Change(point, purpose.id, Trigger.START_WORD)], SYSTEM)
    finally:
        sealer._running = None
    async with maker() as db:
        assert await repository.has_unsealed(db, workspace.id)
    stop = asyncio.Event()
    running = asyncio.create_task(sealer.Sealer(database, poll_seconds=0.1).run(stop))
    try:
        await wait_sealed(maker, workspace.id, timeout=10)
    finally:
        stop.set()
        await running
    async with maker() as db:
        assert (await verify_chain(db, workspace.id)).valid


async def keep_writing(ledger, point, purpose_id, halt, outcomes) -> None:
    """STOP and START on ``point`` until ``halt``, counting what was written and what was refused."""
    while not halt.is_set():
        try:
            await ledger.apply(point, purpose_id, "stop_word", "start_word")
            outcomes["written"] += 1
        except Exception:  # noqa: BLE001  # the workspace went: refused, whatever the error
            outcomes["refused"] += 1
            await asyncio.sleep(0.01)


async def test_deletion_under_concurrent_unsealed_writes_leaves_nothing(engine, settings):
    """Writers whose events wait for a running sealer, while the operator deletes the workspace: nothing is left,
    and the sealer does not bring the deleted workspace's chain head back."""
    import httpx  # noqa: PLC0415

    from app.main import create_app  # noqa: PLC0415
    from app.workspaces import operator as workspaces_operator  # noqa: PLC0415
    from tests.conftest import Ledger, running  # noqa: PLC0415
    from tests.integration.test_workspaces_api import _counts  # noqa: PLC0415

    database = Database.from_url(engine.url.render_as_string(hide_password=False), pool_size=6)
    stop = asyncio.Event()
    sealing = asyncio.create_task(sealer.Sealer(database, poll_seconds=0.05).run(stop))
    try:
        async with database.sessionmaker() as db_session, db_session.begin():
            operator_key, secret = await workspaces_operator.create_operator_key(db_session, "ops")
        operator_headers = {"Authorization": f"Bearer {secret}"}
        application = create_app(settings, database=database)
        async with running(application):
            transport = httpx.ASGITransport(app=application)
            async with httpx.AsyncClient(transport=transport, base_url="https://consent.example.com") as client:
                created = await client.post("/v1/workspaces", json={"name": "Doomed"}, headers=operator_headers)
                workspace_id = uuid.UUID(created.json()["id"])
                ledger = Ledger(database, workspace_id)
                purpose = await ledger.purpose("newsletter")
                points = [await ledger.point("sms", f"+491510001{n:04d}") for n in range(4)]
                assert sealer.deferred()
                halt = asyncio.Event()
                outcomes = {"written": 0, "refused": 0}
                writers = [asyncio.create_task(keep_writing(ledger, p, purpose.id, halt, outcomes)) for p in points]
                await asyncio.sleep(0.3)
                for _ in range(3):  # 503 workspace_busy (deadlocks with writers, retried 4 times): the next goes on
                    deleted = await client.delete(f"/v1/workspaces/{workspace_id}?force=true", headers=operator_headers)
                    if deleted.status_code != 503:
                        break
                await asyncio.sleep(0.2)
                halt.set()
                await asyncio.gather(*writers)
                await asyncio.sleep(0.3)  # the sealer's polls after the last write
                assert deleted.status_code == 200, deleted.text
                assert outcomes["written"] > 0
                async with database.sessionmaker() as db_session:
                    left = await _counts(db_session, workspace_id)
                assert left == dict.fromkeys(left, 0), {t: n for t, n in left.items() if n}
            async with database.sessionmaker() as db_session, db_session.begin():  # committed: leave no key behind
                await db_session.execute(text("DELETE FROM operator_keys WHERE id = :id"), {"id": operator_key.id})
    finally:
        stop.set()
        await sealing
        await database.dispose()
