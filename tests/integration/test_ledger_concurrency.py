"""Concurrent writers on real PostgreSQL connections: no lost update, no fork, no deadlock."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import async_sessionmaker

from app.domain.model import ActorType, State, Trigger
from app.ledger import repository
from app.ledger.audit import verify_chain
from app.ledger.models import Consent, ConsentEvent
from app.ledger.service import Actor, Change, apply_changes
from app.purposes.service import create_purpose
from app.workspaces.service import create_workspace
from tests.conftest import own_database


@pytest.fixture(scope="module")
async def engine(pg_server):
    """A database of this module's own: its tests commit workspaces and contacts that tests counting such rows
    across the shared database must not see (test_consent_import's count of contacts failed after this module)."""
    async with own_database(pg_server) as own:
        yield own


async def committed_setup(maker, phones):
    async with maker() as session, session.begin():
        workspace = await create_workspace(session, "Concurrency")
        purpose = await create_purpose(session, workspace.id, "newsletter", "Newsletter", "marketing")
        contact = await repository.add_contact(session, workspace.id, None, None, None)
        points = [
            await repository.add_contact_point(
                session, workspace.id, contact_id=contact.id, channel="sms", value=p, details={}, suppression_keys=[]
            )
            for p in phones
        ]
    return workspace, purpose, points


async def test_opposite_transitions_at_the_same_time_serialise(engine):
    maker = async_sessionmaker(engine, expire_on_commit=False)
    workspace, purpose, [point] = await committed_setup(maker, ["+4915100000001"])
    actor = Actor(ActorType.SYSTEM)

    async def fire(trigger: Trigger):
        async with maker() as session, session.begin():
            [result] = await apply_changes(session, workspace.id, [Change(point, purpose.id, trigger)], actor)
            return result

    rounds = 20
    results = await asyncio.gather(*[fire(t) for _ in range(rounds) for t in (Trigger.START_WORD, Trigger.STOP_WORD)])
    assert all(r.event_id is not None for r in results)

    async with maker() as session:
        events = (
            await session.scalars(
                select(ConsentEvent).where(ConsentEvent.workspace_id == workspace.id).order_by(ConsentEvent.seq)
            )
        ).all()
        consent = await session.scalar(select(Consent).where(Consent.contact_point_id == point.id))
        verification = await verify_chain(session, workspace.id)

    assert [e.seq for e in events] == list(range(1, 2 * rounds + 1)), "one chain, no gaps, no fork"
    state = State.NONE
    for event in events:
        assert event.from_state == state, "each writer saw the state the previous one left: no lost update"
        state = State(event.to_state)
    assert consent is not None
    assert consent.state == state
    assert consent.version == 2 * rounds
    assert verification.valid, verification
    seen = sorted((r.from_state.value, r.to_state.value) for r in results)
    assert seen == sorted((e.from_state, e.to_state) for e in events), "every answer matches what was recorded"


async def test_batches_over_the_same_consents_in_opposite_order_do_not_deadlock(engine):
    maker = async_sessionmaker(engine, expire_on_commit=False)
    workspace, purpose, points = await committed_setup(maker, ["+4915100000002", "+4915100000003"])
    actor = Actor(ActorType.SYSTEM)

    async def batch(ordered):
        async with maker() as session, session.begin():
            changes = [Change(p, purpose.id, Trigger.STOP_WORD) for p in ordered]
            return await apply_changes(session, workspace.id, changes, actor)

    forwards, backwards = points, list(reversed(points))
    await asyncio.wait_for(asyncio.gather(*[batch(forwards if i % 2 else backwards) for i in range(20)]), timeout=60)

    async with maker() as session:
        verification = await verify_chain(session, workspace.id)
    assert verification.valid
    assert verification.events_checked == 40
