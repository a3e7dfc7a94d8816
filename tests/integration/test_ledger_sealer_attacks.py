"""The hostile review of the sealer (2026-12-06): each test failed on its first version (commit 20e8a33)."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import async_sessionmaker

from app.domain.model import ActorType, Trigger
from app.ledger import repository, sealer
from app.ledger.audit import verify_chain
from app.ledger.models import ConsentEvent
from app.ledger.service import Actor, Change, apply_changes, record_batch
from app.lib.db import Database
from app.lib.errors import Conflict
from app.lib.keys import Keys
from app.privacy import erasure as erasure_module
from app.privacy.erasure import erase
from app.purposes.service import create_purpose
from app.webhooks.models import WebhookSubscription
from app.webhooks.privacy import HOOK as WEBHOOKS
from app.workspaces.operator import delete_workspace
from app.workspaces.service import create_workspace
from tests.conftest import own_database
from tests.integration.test_ledger_sealer import committed_setup

# --- test_x.py
SYSTEM = Actor(ActorType.SYSTEM)


@pytest.fixture(scope="module")
async def engine(pg_server):
    """A database of this module's own: its tests commit workspaces, subscriptions and suppressions that tests
    counting such rows across the shared database must not see."""
    async with own_database(pg_server) as own:
        yield own


async def wait_sealed(maker, workspace_id, timeout):
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        async with maker() as db:
            if not await repository.has_unsealed(db, workspace_id):
                return True
        await asyncio.sleep(0.05)
    return False


async def change(maker, workspace_id, point, purpose_id, trigger):
    async with maker() as db, db.begin():
        return await apply_changes(db, workspace_id, [Change(point, purpose_id, trigger)], SYSTEM)


async def test_a_head_held_in_one_workspace_stalls_sealing_of_every_other_workspace(engine):
    """An import (record_batch holds the head until commit) in workspace A; a STOP in workspace B stays unsealed."""
    maker = async_sessionmaker(engine, expire_on_commit=False)
    a, purpose_a, [point_a] = await committed_setup(maker, ["+4915100009001"])
    b, purpose_b, [point_b] = await committed_setup(maker, ["+4915100009002"])
    database = Database(engine, maker)
    stop = asyncio.Event()
    running = asyncio.create_task(sealer.Sealer(database, poll_seconds=0.2).run(stop))
    await asyncio.sleep(0)
    importer = maker()
    await importer.begin()
    try:
        await sealer.lock_head(importer, a.id)  # what record_batch does at the start of a long import
        await change(maker, a.id, point_a, purpose_a.id, Trigger.START_WORD)  # wakes the sealer: it waits on A
        await asyncio.sleep(0.5)
        await change(maker, b.id, point_b, purpose_b.id, Trigger.STOP_WORD)
        sealed_b = await wait_sealed(maker, b.id, timeout=5)
    finally:
        await importer.rollback()
        await importer.close()
        stop.set()
        await asyncio.wait_for(running, 30)
    assert sealed_b, "workspace B's STOP waits for workspace A's import (every process's sealer is stuck on A)"


async def test_workspace_deletion_does_not_swallow_a_stop_acknowledged_while_it_runs(engine):
    """Before 0043 the deletion waited on the head an append held, and answered export_outdated."""
    maker = async_sessionmaker(engine, expire_on_commit=False)
    ws, purpose, [point] = await committed_setup(maker, ["+4915100009011"])
    database = Database(engine, maker)
    await change(maker, ws.id, point, purpose.id, Trigger.START_WORD)  # chained inline (no sealer): seq 1
    async with maker() as db, db.begin():
        await db.execute(
            text("UPDATE workspaces SET exported_at = now(), exported_seq = 1 WHERE id = :ws"), {"ws": ws.id}
        )
    sealer._running = sealer.Sealer(database)  # a server process (not started)
    outcome: object = None
    try:
        writer = maker()
        await writer.begin()
        [applied] = await apply_changes(writer, ws.id, [Change(point, purpose.id, Trigger.STOP_WORD)], SYSTEM)
        deletion = asyncio.create_task(
            delete_workspace(database, ws.id, keep_suppressions=False, force=False, operator_key_id=None)
        )
        await asyncio.sleep(1.0)  # the deletion has passed its export check and waits on the consent row
        await writer.commit()  # 200 OK to the STOP
        await writer.close()
        try:
            outcome = await asyncio.wait_for(deletion, 30)
        except Conflict as refused:
            outcome = refused
    finally:
        sealer._running = None
    assert isinstance(outcome, Conflict), outcome
    assert outcome.code == "export_outdated", (
        f"the deletion went through ({outcome!r}) although the acknowledged STOP {applied.event_id} was never"
        " in the export"
    )


# --- test_erasure.py
@pytest.fixture
def deferred(database, monkeypatch):
    monkeypatch.setattr(sealer, "_running", sealer.Sealer(database))


async def test_an_erased_contacts_change_is_not_sent_out_after_the_erasure(deferred, ledger, tenant, database, session):
    purpose = await ledger.purpose()
    point = await ledger.point("sms", "+4915100009021", external_id="crm-4711")
    async with database.sessionmaker() as db, db.begin():
        db.add(
            WebhookSubscription(
                id=uuid.uuid4(),
                workspace_id=tenant.id,
                url="https://hooks.example/x",
                events=["consent.changed"],
                secret_sealed="x",
            )
        )
    await ledger.apply(point, purpose.id, "start_word")  # committed, waits for the sealer (its lag)
    async with database.sessionmaker() as db, db.begin():
        report = await erase(
            db, Keys(b"t" * 32), tenant.id, str(point.contact_id), request_ref=None, received_via=None, actor=SYSTEM
        )
    kept = [str(e) for e in report.event_ids]
    naming = text(
        "SELECT count(*) FROM webhook_deliveries WHERE workspace_id = :ws"
        " AND payload -> 'data' ->> 'contact_id' = :c AND NOT (event_id::text = ANY(:kept))"
    )
    params = {"ws": tenant.id, "c": str(point.contact_id), "kept": kept}
    assert await session.scalar(naming, params) == 0, "right after the erasure nothing names the person"
    await sealer.seal(session, tenant.id)  # what the running sealer does a moment later
    assert await session.scalar(naming, params) == 0, (
        "the erasure deleted deliveries naming the contact; the sealer then queued one for its earlier change"
    )


# --- test_erasure_race.py
async def test_no_delivery_naming_the_person_survives_the_erasure(engine, monkeypatch):
    maker = async_sessionmaker(engine, expire_on_commit=False)
    async with maker() as db, db.begin():
        ws = await create_workspace(db, f"Hostile {uuid.uuid4()}")
        purpose = await create_purpose(db, ws.id, "newsletter", "Newsletter", "marketing")
        contact = await repository.add_contact(db, ws.id, "crm-race-4711", None, None)
        point = await repository.add_contact_point(
            db, ws.id, contact_id=contact.id, channel="sms", value="+4915100009051", details={}, suppression_keys=[]
        )
        db.add(
            WebhookSubscription(
                id=uuid.uuid4(),
                workspace_id=ws.id,
                url="https://hooks.example/x",
                events=["consent.changed"],
                secret_sealed="x",
            )
        )
    database = Database(engine, maker)
    monkeypatch.setattr(sealer, "_running", sealer.Sealer(database))
    async with maker() as db, db.begin():  # committed; the sealer has not come round yet
        await apply_changes(db, ws.id, [Change(point, purpose.id, Trigger.START_WORD, {"ip": "198.51.100.7"})], SYSTEM)

    async def erase_then_the_sealer_runs(session, subject):
        erased = await WEBHOOKS.erase(session, subject)
        async with maker() as other, other.begin():  # this or another process's sealer, in its own transaction
            await sealer.seal(other, subject.workspace_id)
        return erased

    hooks = tuple(
        dataclasses.replace(h, erase=erase_then_the_sealer_runs) if h is WEBHOOKS else h for h in erasure_module.HOOKS
    )
    monkeypatch.setattr(erasure_module, "HOOKS", hooks)
    async with maker() as db, db.begin():
        report = await erase(
            db, Keys(b"t" * 32), ws.id, str(contact.id), request_ref=None, received_via=None, actor=SYSTEM
        )
    async with maker() as db:
        left = (
            (
                await db.execute(
                    text(
                        "SELECT payload FROM webhook_deliveries WHERE workspace_id = :ws"
                        " AND payload -> 'data' ->> 'contact_id' = :c AND NOT (event_id::text = ANY(:kept))"
                    ),
                    {"ws": ws.id, "c": str(contact.id), "kept": [str(e) for e in report.event_ids]},
                )
            )
            .scalars()
            .all()
        )
    assert left == [], f"queued after the erasure's webhooks step, kept past the erasure: {left}"


# --- test_order.py
async def test_one_consents_events_are_chained_in_the_order_they_happened(engine, monkeypatch):
    maker = async_sessionmaker(engine, expire_on_commit=False)
    async with maker() as db, db.begin():
        ws = await create_workspace(db, f"Hostile {uuid.uuid4()}")
        purpose = await create_purpose(db, ws.id, "newsletter", "Newsletter", "marketing")
        contact = await repository.add_contact(db, ws.id, None, None, None)
        point = await repository.add_contact_point(
            db, ws.id, contact_id=contact.id, channel="sms", value="+4915100009061", details={}, suppression_keys=[]
        )
    monkeypatch.setattr(sealer, "_running", sealer.Sealer(Database(engine, maker)))
    async with maker() as db, db.begin():
        [first] = await apply_changes(db, ws.id, [Change(point, purpose.id, Trigger.START_WORD)], SYSTEM)
    eraser = maker()
    await eraser.begin()
    try:
        # the first statement of repository.erase_contact (the erasure's ledger hook): the evidence goes
        await eraser.execute(
            text(
                "UPDATE consent_events SET personal = NULL"
                " WHERE workspace_id = :ws AND contact_id = :c AND personal IS NOT NULL"
            ),
            {"ws": ws.id, "c": contact.id},
        )
        async with maker() as db, db.begin():  # a STOP for the same consent row commits meanwhile
            [second] = await apply_changes(db, ws.id, [Change(point, purpose.id, Trigger.STOP_WORD)], SYSTEM)
        async with maker() as db, db.begin():  # the running sealer comes round
            await sealer.seal(db, ws.id)
    finally:
        await eraser.commit()
        await eraser.close()
    async with maker() as db, db.begin():
        await sealer.seal(db, ws.id)
    async with maker() as db:
        chain = (
            await db.execute(
                select(ConsentEvent.id, ConsentEvent.seq, ConsentEvent.from_state, ConsentEvent.to_state)
                .where(ConsentEvent.workspace_id == ws.id)
                .order_by(ConsentEvent.seq)
            )
        ).all()
    assert [row.id for row in chain] == [first.event_id, second.event_id], (
        f"the consent's STOP (opted_in -> opted_out) is chained before the opt-in it follows: {chain}"
    )


# --- test_tamper.py
async def test_an_event_sealed_beyond_the_head_does_not_pass_verification(ledger, session, database, monkeypatch):
    purpose = await ledger.purpose()
    point = await ledger.point("sms", "+4915100009081")
    await ledger.apply(point, purpose.id, "start_word")  # chained inline: seq 1
    monkeypatch.setattr(sealer, "_running", sealer.Sealer(database))
    [stop] = await ledger.apply(point, purpose.id, "stop_word")  # acknowledged, waits for the sealer
    monkeypatch.setattr(sealer, "_running", None)
    # someone with UPDATE on consent_events (the trigger's only door: NULL -> a place, nothing else changed)
    await session.execute(
        text(
            "UPDATE consent_events SET seq = 4611686018427387904, prev_hash = decode(repeat('ab', 32), 'hex'),"
            " hash = decode(repeat('ab', 32), 'hex') WHERE id = :id"
        ),
        {"id": stop.event_id},
    )
    result = await verify_chain(session, ledger.workspace_id)
    assert not result.valid, f"the STOP is out of the verified chain and the check says {result}"


# --- test_tombstone.py
async def test_sealing_does_not_recreate_the_head_of_a_tombstone(engine, monkeypatch):
    maker = async_sessionmaker(engine, expire_on_commit=False)
    async with maker() as db, db.begin():
        ws = await create_workspace(db, f"Hostile {uuid.uuid4()}")
        purpose = await create_purpose(db, ws.id, "newsletter", "Newsletter", "marketing")
        contact = await repository.add_contact(db, ws.id, None, None, None)
        point = await repository.add_contact_point(
            db, ws.id, contact_id=contact.id, channel="sms", value="+4915100009031", details={}, suppression_keys=[]
        )
    database = Database(engine, maker)
    monkeypatch.setattr(sealer, "_running", sealer.Sealer(database))
    async with maker() as db, db.begin():
        await apply_changes(db, ws.id, [Change(point, purpose.id, Trigger.STOP_WORD)], SYSTEM)
    monkeypatch.setattr(sealer, "_running", None)

    looked = repository.has_unsealed

    async def then_deleted(session, workspace_id):
        found = await looked(session, workspace_id)
        # the operator's deletion (keeping the suppressions) runs between the sealer's look and its head lock
        await delete_workspace(database, workspace_id, keep_suppressions=True, force=True, operator_key_id=None)
        return found

    monkeypatch.setattr(repository, "has_unsealed", then_deleted)
    async with maker() as db, db.begin():
        await sealer.seal(db, ws.id)
    async with maker() as db:
        heads = await db.scalar(text("SELECT count(*) FROM ledger_heads WHERE workspace_id = :ws"), {"ws": ws.id})
        state = await db.scalar(text("SELECT deleted_at IS NOT NULL FROM workspaces WHERE id = :ws"), {"ws": ws.id})
    assert state, "the workspace is a tombstone"
    assert heads == 0, "the sealer re-created the chain head of a deleted workspace"


# --- test_verify_lock.py
async def test_verifying_every_workspace_holds_no_chain_head(engine, monkeypatch):
    maker = async_sessionmaker(engine, expire_on_commit=False)
    async with maker() as db, db.begin():
        ws = await create_workspace(db, f"Hostile {uuid.uuid4()}")
        purpose = await create_purpose(db, ws.id, "newsletter", "Newsletter", "marketing")
        contact = await repository.add_contact(db, ws.id, None, None, None)
        point = await repository.add_contact_point(
            db, ws.id, contact_id=contact.id, channel="sms", value="+4915100009071", details={}, suppression_keys=[]
        )
    async with maker() as db, db.begin():  # chained inline: the workspace has a chain head
        await apply_changes(db, ws.id, [Change(point, purpose.id, Trigger.START_WORD)], SYSTEM)
    monkeypatch.setattr(sealer, "_running", sealer.Sealer(Database(engine, maker)))
    async with maker() as db, db.begin():  # a server's change, waiting for the sealer
        await apply_changes(db, ws.id, [Change(point, purpose.id, Trigger.STOP_WORD)], SYSTEM)
    monkeypatch.setattr(sealer, "_running", None)  # the CLI runs no sealer

    async with maker() as session:  # app/cli.py audit_verify: one session, the workspaces listed first
        await repository.workspaces_with_events(session)
        assert (await verify_chain(session, ws.id)).valid
        # ... the CLI goes on verifying the next workspaces (minutes on a large ledger)
        async with maker() as other:
            try:
                await other.execute(
                    text("SELECT 1 FROM ledger_heads WHERE workspace_id = :ws FOR UPDATE NOWAIT"), {"ws": ws.id}
                )
                held = False
            except DBAPIError:
                held = True
        await session.rollback()
    assert not held, "the verification run holds the workspace's chain head: its sealer, imports and merges wait"


# --- test_cli_verify.py
async def test_a_workspace_whose_events_all_wait_is_verified_too(ledger, session, database, monkeypatch):
    purpose = await ledger.purpose()
    point = await ledger.point("sms", "+4915100009091")
    monkeypatch.setattr(sealer, "_running", sealer.Sealer(database))
    await ledger.apply(point, purpose.id, "start_word", "stop_word")  # a new workspace's first changes, unsealed
    listed = await repository.workspaces_with_events(session)  # what app/cli.py audit_verify walks
    assert ledger.workspace_id in listed, "the CLI's every-workspace check neither seals nor verifies this one"


# --- test_two_sealers.py
async def test_two_sealers_and_batch_writers(engine):
    maker = async_sessionmaker(engine, expire_on_commit=False)
    async with maker() as db, db.begin():
        ws = await create_workspace(db, f"Hostile {uuid.uuid4()}")
        purpose = await create_purpose(db, ws.id, "newsletter", "Newsletter", "marketing")
        contact = await repository.add_contact(db, ws.id, None, None, None)
        points = [
            await repository.add_contact_point(
                db,
                ws.id,
                contact_id=contact.id,
                channel="sms",
                value=f"+49151000091{i:02d}",
                details={},
                suppression_keys=[],
            )
            for i in range(6)
        ]
    stop = asyncio.Event()
    one = asyncio.create_task(sealer.Sealer(Database(engine, maker), poll_seconds=0.05).run(stop))
    two = asyncio.create_task(sealer.Sealer(Database(engine, maker), poll_seconds=0.05).run(stop))
    await asyncio.sleep(0)
    ids = []

    async def single(point, trigger):
        async with maker() as db, db.begin():
            ids.extend(a.event_id for a in await apply_changes(db, ws.id, [Change(point, purpose.id, trigger)], SYSTEM))

    async def batch(point, trigger):
        async with maker() as db, db.begin():
            found = await record_batch(db, ws.id, [Change(point, purpose.id, trigger)], SYSTEM)
            ids.extend(a.event_id for a in found if a.event_id)

    try:
        jobs = []
        for r in range(6):
            for i, p in enumerate(points):
                t = Trigger.START_WORD if r % 2 == 0 else Trigger.STOP_WORD
                jobs.append(batch(p, t) if (i + r) % 3 == 0 else single(p, t))
        await asyncio.gather(*jobs)
        for _ in range(200):
            async with maker() as db:
                if not await repository.has_unsealed(db, ws.id):
                    break
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.gather(one, two)
    async with maker() as db:
        events = (
            await db.scalars(select(ConsentEvent).where(ConsentEvent.workspace_id == ws.id).order_by(ConsentEvent.seq))
        ).all()
        verification = await verify_chain(db, ws.id)
    assert verification.valid, verification
    assert [e.seq for e in events] == list(range(1, len(ids) + 1))
    for point in points:
        state = "none"
        for e in (e for e in events if e.contact_point_id == point.id):
            assert e.from_state == state
            state = e.to_state


# --- test_merge.py (LOW; fixed by naming the statement's event by id)
async def test_a_merge_names_the_statement_that_covers_even_while_it_waits(deferred, client, admin, ledger, session):
    """A statement committed between the merge's seal and its transaction has no seq yet: its id is named."""
    from app.ledger import merge  # noqa: PLC0415

    purpose = await ledger.purpose()
    survivor = await ledger.point("email", "a@example.com", external_id="keep")
    await ledger.point("sms", "+4915100009041", external_id="dup")
    await ledger.apply(survivor, purpose.id, "signup", "confirm")
    await sealer.seal(session, ledger.workspace_id)  # what the controller's seal_first did ...
    withdrawn = await client.post(  # ... and a withdrawal of the duplicate that commits right after it
        "/v1/withdrawals", json={"contact": "dup", "channel": "all", "purpose": "newsletter"}, headers=admin
    )
    assert withdrawn.status_code == 200, withdrawn.text
    statement = withdrawn.json()["changes"][0]["event_id"]
    async with ledger.database.sessionmaker() as db, db.begin():  # the controller's transaction
        await merge.merge(db, ledger.workspace_id, survivor_ref="keep", duplicate_ref="dup", evidence={}, actor=SYSTEM)
    evidence = await session.scalar(
        text(
            "SELECT personal -> 'evidence' FROM consent_events"
            " WHERE workspace_id = :ws AND trigger = 'merged' AND contact_point_id = :point"
        ),
        {"ws": ledger.workspace_id, "point": survivor.id},
    )
    assert evidence["covered_by_event_id"] in {c["event_id"] for c in withdrawn.json()["changes"]}, evidence
    assert statement is not None
