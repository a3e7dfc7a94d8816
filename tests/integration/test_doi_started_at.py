"""``consent_events.doi_started_at`` (migration 0045): on random histories, every confirmation carries the time of
the signup the rebuild's window pairing (and the catch-ups' per-confirmation probe) gives it, whether it and its
signup were written sealed or unsealed; the migration's backfill gives the same values; a writer cannot set it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import create_async_engine

from app.lib.db import downgrade, migrate


@pytest.fixture(scope="module")
async def db(pg_server):
    """A database of this module's own (its tests commit events and migrate it down and up)."""
    url = await pg_server.create_database(migrated=True)
    own = create_async_engine(url, pool_size=2)
    try:
        yield own
    finally:
        await own.dispose()
        await pg_server.drop_database(url)


BASE = datetime(2026, 11, 1, tzinfo=UTC)

#: (trigger, from_state, to_state): starts of a pending state, confirmations, and events that are neither (a signup
#: while pending, a start word that is no confirmation, a lapse, an opt-out).
KINDS = (
    ("signup", "none", "pending"),
    ("signup", "opted_out", "pending"),
    ("signup", "pending", "pending"),
    ("confirm", "pending", "opted_in"),
    ("confirm", "opted_in", "opted_in"),
    ("start_word", "pending", "opted_in"),
    ("start_word", "opted_out", "opted_in"),
    ("lapse", "pending", "expired"),
    ("unsubscribe", "opted_in", "opted_out"),
)

_INSERT = """
    INSERT INTO consent_events (id, workspace_id, contact_id, contact_point_id, purpose_id, channel, trigger,
                                from_state, to_state, actor_type, personal_digest, occurred_at, recorded_at,
                                seq, prev_hash, hash, doi_started_at)
    VALUES (:id, :ws, :contact, :point, :purpose, 'email', :trigger, :from_state, :to_state, 'system', '\\x00',
            :at, now(), :seq, :mark, :mark, :forged)
"""

#: What the catch-ups pair a confirmation with (app/reports/repository.py, ``_DOI_CONFIRMED``), by chain order.
_PAIRED = """
    SELECT e.id, e.doi_started_at,
           (SELECT s.occurred_at FROM consent_events s
             WHERE s.contact_id = e.contact_id AND s.workspace_id = e.workspace_id AND s.seq < e.seq
               AND s.contact_point_id = e.contact_point_id AND s.purpose_id IS NOT DISTINCT FROM e.purpose_id
               AND s.trigger = 'signup' AND s.from_state <> 'pending' AND s.to_state = 'pending'
             ORDER BY s.seq DESC LIMIT 1)
      FROM consent_events e
     WHERE e.workspace_id = :ws
       AND (e.trigger = 'confirm'
            OR (e.trigger = 'start_word' AND e.from_state = 'pending' AND e.to_state = 'opted_in'))
"""


async def seal_all(conn, ws: uuid.UUID) -> None:
    """What the sealer does: every waiting event after the head, in ``intake`` order."""
    await conn.execute(
        text("""
        UPDATE consent_events e SET seq = h.last + w.n, prev_hash = decode(repeat('01', 32), 'hex'),
                                 hash = decode(repeat('01', 32), 'hex')
          FROM (SELECT coalesce(max(seq), 0) AS last FROM consent_events WHERE workspace_id = :ws) h,
               (SELECT id, row_number() OVER (ORDER BY intake) AS n FROM consent_events
                 WHERE workspace_id = :ws AND seq IS NULL) w
         WHERE e.workspace_id = :ws AND e.id = w.id
        """),
        {"ws": ws},
    )


history = st.lists(
    st.tuples(
        st.sampled_from([0, 0, 0, 1, 2]),  # address (2: an event without a contact)
        st.sampled_from([0, 0, 1]),  # purpose (1: none)
        st.sampled_from([0, 0, 1, 2, 3, 3, 4, 5, 5, 6, 7, 8]),  # KINDS, starts and confirmations more often
        st.integers(0, 500),  # hours after BASE: occurred_at is not in chain order
        st.sampled_from(["unsealed", "sealed", "seal_then_unsealed"]),
    ),
    min_size=8,
    max_size=40,
)

#: Two starts, then the confirmations: the newer start is the one (sealed, unsealed, and across the two).
TWO_STARTS = [
    (0, 0, 0, 5, "sealed"),
    (0, 0, 7, 6, "unsealed"),
    (0, 0, 1, 1, "unsealed"),
    (0, 0, 3, 9, "unsealed"),
    (0, 0, 0, 2, "unsealed"),
    (0, 0, 5, 3, "sealed"),
    (0, 1, 5, 3, "sealed"),
    (1, 0, 3, 3, "seal_then_unsealed"),
]


@settings(max_examples=40, deadline=None)
@given(steps=history)
@example(steps=TWO_STARTS)
async def test_each_confirmation_carries_its_signups_time_as_the_pairing_and_the_backfill_give_it(db, steps):
    ws = uuid.uuid4()
    contacts = [uuid.uuid4(), uuid.uuid4(), None]
    points = [uuid.uuid4(), uuid.uuid4(), uuid.uuid4()]
    purposes = [uuid.uuid4(), None]
    async with db.begin() as conn:
        await conn.execute(text("INSERT INTO workspaces (id, name) VALUES (:ws, 'DOI')"), {"ws": ws})
        for address, purpose, kind, hours, how in steps:
            trigger, from_state, to_state = KINDS[kind]
            seq = None
            if how != "unsealed":  # a writer under the head's lock seals what waits first
                await seal_all(conn, ws)
            if how == "sealed":
                seq = await conn.scalar(
                    text("SELECT coalesce(max(seq), 0) + 1 FROM consent_events WHERE workspace_id = :ws"), {"ws": ws}
                )
            await conn.execute(
                text(_INSERT),
                {
                    "id": uuid.uuid4(),
                    "ws": ws,
                    "contact": contacts[address],
                    "point": points[address],
                    "purpose": purposes[purpose],
                    "trigger": trigger,
                    "from_state": from_state,
                    "to_state": to_state,
                    "at": BASE + timedelta(hours=hours),
                    "seq": seq,
                    "mark": None if seq is None else b"\x01" * 32,
                    "forged": BASE - timedelta(days=1) if trigger in ("confirm", "start_word") else None,
                },
            )
    async with db.connect() as conn:
        stored = {
            row[0]: row[1]
            for row in await conn.execute(
                text("SELECT id, doi_started_at FROM consent_events WHERE workspace_id = :ws"), {"ws": ws}
            )
        }

    # the backfill, on the same events (some still unsealed), gives every event the value the trigger gave it
    await downgrade(db, "0044")
    await migrate(db)
    async with db.connect() as conn:
        backfilled = {
            row[0]: row[1]
            for row in await conn.execute(
                text("SELECT id, doi_started_at FROM consent_events WHERE workspace_id = :ws"), {"ws": ws}
            )
        }
    assert backfilled == stored

    # sealed in the order the sealer seals: each confirmation's value is the pairing by chain order
    async with db.begin() as conn:
        await seal_all(conn, ws)
        paired = (await conn.execute(text(_PAIRED), {"ws": ws})).all()
    assert [(row[0], row[1]) for row in paired] == [(row[0], row[2]) for row in paired]
    confirmations = {row[0] for row in paired}
    assert all(value is None for key, value in stored.items() if key not in confirmations)


async def test_a_value_given_by_the_writer_is_replaced_and_a_later_change_refused(db):
    ws = uuid.uuid4()
    params = {"ws": ws, "contact": uuid.uuid4(), "point": uuid.uuid4(), "purpose": None, "seq": None, "mark": None}
    async with db.begin() as conn:
        await conn.execute(text("INSERT INTO workspaces (id, name) VALUES (:ws, 'DOI')"), {"ws": ws})
        for trigger, from_state, to_state in (KINDS[0], KINDS[3]):
            await conn.execute(
                text(_INSERT),
                {
                    **params,
                    "id": uuid.uuid4(),
                    "trigger": trigger,
                    "from_state": from_state,
                    "to_state": to_state,
                    "at": BASE + timedelta(hours=1 if trigger == "confirm" else 0),
                    "forged": BASE - timedelta(days=1),
                },
            )
        confirmed = await conn.scalar(
            text("SELECT doi_started_at FROM consent_events WHERE workspace_id = :ws AND trigger = 'confirm'"),
            {"ws": ws},
        )
        other = await conn.scalar(
            text("SELECT doi_started_at FROM consent_events WHERE workspace_id = :ws AND trigger <> 'confirm'"),
            {"ws": ws},
        )
    assert confirmed == BASE
    assert other is None, "a value given on another event is cleared too (the hostile review)"
    with pytest.raises(DBAPIError, match="append-only"):
        async with db.begin() as conn:
            await conn.execute(
                text(
                    "UPDATE consent_events SET doi_started_at = NULL WHERE workspace_id = :ws AND trigger = 'confirm'"
                ),
                {"ws": ws},
            )
