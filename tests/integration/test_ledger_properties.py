"""Ledger properties on real PostgreSQL: projection = replay, only table transitions, the chain detects tampering."""

from __future__ import annotations

import contextlib
import uuid

import pytest
import sqlalchemy.exc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select, text

from app.domain.model import Channel, State, Trigger
from app.domain.transitions import TransitionNotAllowed, decide
from app.ledger import sealer
from app.ledger.audit import verify_chain
from app.ledger.models import Consent, ConsentEvent

TRIGGERS = [t for t in Trigger if t not in (Trigger.IMPORT, Trigger.MERGED)]  # these two name their target


async def replay_matches_projection(session, point_id) -> int:
    events = (
        await session.scalars(
            select(ConsentEvent).where(ConsentEvent.contact_point_id == point_id).order_by(ConsentEvent.seq)
        )
    ).all()
    consents = (await session.scalars(select(Consent).where(Consent.contact_point_id == point_id))).all()
    for consent in consents:
        await session.refresh(consent)
        state, count = State.NONE, 0
        for event in (e for e in events if e.purpose_id == consent.purpose_id):
            assert event.from_state == state, "every event starts where the previous one ended"
            rule = decide(Channel(event.channel), State(event.from_state), Trigger(event.trigger))
            assert rule.target == event.to_state, "no transition outside the tables"
            state, count = State(event.to_state), count + 1
        assert consent.state == state, "the projection equals a replay of the ledger"
        assert consent.version == count
    return len(events)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    channel=st.sampled_from(list(Channel)),
    steps=st.lists(st.tuples(st.sampled_from(TRIGGERS), st.booleans()), min_size=1, max_size=12),
)
async def test_random_event_sequences_keep_the_projection_a_replay_of_the_ledger(ledger, session, channel, steps):
    purpose = await ledger.purpose(f"p{uuid.uuid4().hex[:12]}")
    point = await ledger.point(channel.value, f"value-{uuid.uuid4()}")
    for trigger, channel_level in steps:
        purpose_id = None if channel_level else purpose.id
        # a rejected trigger rolls its savepoint back: nothing may have been written
        with contextlib.suppress(TransitionNotAllowed):
            await ledger.apply(point, purpose_id, trigger.value)
    await replay_matches_projection(session, point.id)
    result = await verify_chain(session, ledger.workspace_id)
    assert result.valid, result


@pytest.fixture
async def chain(ledger):
    purpose = await ledger.purpose("newsletter")
    point = await ledger.point("sms", "+4915123456789")
    await ledger.apply(point, purpose.id, "signup", "start_word", "stop_word", "start_word", "stop_word")
    return point


async def events_in_order(session, workspace_id):
    """The workspace's events in chain order, sealed first (tampering before the seal is the sealer's window)."""
    await sealer.seal(session, workspace_id)
    return (
        await session.scalars(
            select(ConsentEvent).where(ConsentEvent.workspace_id == workspace_id).order_by(ConsentEvent.seq)
        )
    ).all()


async def bypass_triggers(session):
    """What an attacker with database access could do; the trigger alone does not stop a superuser."""
    await session.execute(text("SET LOCAL session_replication_role = replica"))


async def test_the_database_refuses_to_change_or_delete_events(session, chain, ledger):
    events = await events_in_order(session, ledger.workspace_id)
    for statement in (
        "UPDATE consent_events SET to_state = 'opted_in' WHERE id = :id",
        "DELETE FROM consent_events WHERE id = :id",
    ):
        nested = await session.begin_nested()
        with pytest.raises(sqlalchemy.exc.DBAPIError, match="append-only"):
            await session.execute(text(statement), {"id": events[1].id})
        await nested.rollback()


async def test_erasing_the_personal_part_is_allowed_and_the_chain_still_verifies(session, chain, ledger):
    await session.execute(
        text("UPDATE consent_events SET personal = NULL WHERE contact_point_id = :id"), {"id": chain.id}
    )
    result = await verify_chain(session, ledger.workspace_id)
    assert result.valid, result


@pytest.mark.parametrize(
    ("statement", "reason"),
    [
        (
            (
                "UPDATE consent_events SET to_state = CASE to_state WHEN 'opted_in' THEN 'opted_out' "
                "ELSE 'opted_in' END WHERE id = :id"
            ),
            "content does not match",
        ),
        (
            "UPDATE consent_events SET occurred_at = occurred_at - interval '1 day' WHERE id = :id",
            "content does not match",
        ),
        (
            (
                "UPDATE consent_events SET trigger = CASE trigger WHEN 'start_word' THEN 'stop_word' "
                "ELSE 'start_word' END WHERE id = :id"
            ),
            "content does not match",
        ),
        (
            "UPDATE consent_events SET personal = jsonb_set(personal, '{evidence,ip}', '\"10.0.0.1\"') WHERE id = :id",
            "personal part",
        ),
        ("UPDATE consent_events SET prev_hash = hash WHERE id = :id", "link to the previous event"),
        ("DELETE FROM consent_events WHERE id = :id", "sequence gap"),
    ],
)
async def test_changing_or_deleting_any_stored_event_is_detected(session, chain, ledger, statement, reason):
    events = await events_in_order(session, ledger.workspace_id)
    for victim in events[:-1]:
        nested = await session.begin_nested()
        await bypass_triggers(session)
        await session.execute(text(statement), {"id": victim.id})
        result = await verify_chain(session, ledger.workspace_id)
        await nested.rollback()
        assert not result.valid, f"tampering with event {victim.seq} went unnoticed"
        assert result.first_broken_event_id in {victim.id, events[events.index(victim) + 1].id}
        assert reason in (result.reason or "") or "sequence gap" in (result.reason or "")


async def test_deleting_the_newest_event_is_detected_by_the_head(session, chain, ledger):
    events = await events_in_order(session, ledger.workspace_id)
    await bypass_triggers(session)
    await session.execute(text("DELETE FROM consent_events WHERE id = :id"), {"id": events[-1].id})
    result = await verify_chain(session, ledger.workspace_id)
    assert not result.valid
    assert "newest events were removed" in (result.reason or "")


async def test_an_import_never_overrides_a_later_withdrawal(ledger, session):
    from datetime import UTC, datetime, timedelta  # noqa: PLC0415

    from app.domain.model import ActorType  # noqa: PLC0415
    from app.ledger.service import Actor, Change, apply_changes  # noqa: PLC0415

    purpose = await ledger.purpose("newsletter")
    point = await ledger.point("email", "jane@example.com")
    await ledger.apply(point, purpose.id, "unsubscribe")
    old = datetime.now(UTC) - timedelta(days=400)
    [result] = await apply_changes(
        session,
        ledger.workspace_id,
        [Change(point, purpose.id, Trigger.IMPORT, {"source": "crm"}, occurred_at=old, target=State.OPTED_IN)],
        Actor(ActorType.API_KEY, "k"),
    )
    assert result.event_id is None
    assert result.to_state is State.OPTED_OUT
    assert result.skipped == "a later withdrawal or objection stands"

    newer = datetime.now(UTC) + timedelta(seconds=1)
    [result] = await apply_changes(
        session,
        ledger.workspace_id,
        [Change(point, purpose.id, Trigger.IMPORT, {"source": "crm"}, occurred_at=newer, target=State.OPTED_IN)],
        Actor(ActorType.API_KEY, "k"),
    )
    assert result.to_state is State.OPTED_IN


async def test_a_consent_the_session_has_loaded_shows_what_a_batch_wrote_without_a_read(ledger):
    """The batch writers move projections with SQL on tuples; a loaded :class:`Consent` is given the new values."""
    from app.domain.model import ActorType  # noqa: PLC0415
    from app.ledger.service import Actor, Change, apply_changes  # noqa: PLC0415

    purpose = await ledger.purpose(f"p{uuid.uuid4().hex[:12]}")
    point = await ledger.point("email", f"loaded-{uuid.uuid4()}@example.com")
    await ledger.apply(point, purpose.id, "signup")
    async with ledger.database.sessionmaker() as session, session.begin():
        loaded = await session.scalar(select(Consent).where(Consent.contact_point_id == point.id))
        assert loaded is not None
        assert loaded.state == State.PENDING
        await apply_changes(
            session, ledger.workspace_id, [Change(point, purpose.id, Trigger.CONFIRM)], Actor(ActorType.SYSTEM)
        )
        assert (loaded.state, loaded.version) == (State.OPTED_IN, 2)
