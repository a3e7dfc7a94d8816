"""The ledger partitioned by month (migration 0041, docs/scaling.md): the coming months' partitions are made ahead,
once, by any process; an event of a month without one lands in the default partition and stays readable; every
partition keeps the ledger append-only."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.ledger import partitions
from app.lib.db import Database
from app.main import _ensure_partitions
from tests.conftest import Ledger


def _month(ahead: int) -> datetime:
    """The first instant (UTC) of the month ``ahead`` months after this one."""
    now = datetime.now(UTC)
    index = now.year * 12 + now.month - 1 + ahead
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)


def _name(ahead: int) -> str:
    start = _month(ahead)
    return f"consent_events_y{start.year:04d}m{start.month:02d}"


async def _partitions(session: AsyncSession) -> set[str]:
    rows = await session.execute(
        text("SELECT inhrelid::regclass::text FROM pg_inherits WHERE inhparent = 'consent_events'::regclass")
    )
    return set(rows.scalars())


async def _where(session: AsyncSession, event_id: uuid.UUID) -> str:
    """The partition that holds the event."""
    found = await session.scalar(
        text("SELECT tableoid::regclass::text FROM consent_events WHERE id = :id"), {"id": event_id}
    )
    assert found is not None
    return str(found)


async def _real_event(ledger: Ledger) -> uuid.UUID:
    """An event of the tenant's chain, appended through the service (recorded now)."""
    purpose = await ledger.purpose()
    point = await ledger.point("email", "jane@example.com")
    [result] = await ledger.apply(point, purpose.id, "signup")
    assert result.event_id is not None
    return result.event_id


async def _copy(session: AsyncSession, event_id: uuid.UUID, at: datetime, *, seq_after: int) -> uuid.UUID:
    """A copy of the event further on in its chain (``seq_after`` later), recorded at ``at``."""
    copy = uuid.uuid4()
    await session.execute(
        text(
            """
            INSERT INTO consent_events
            SELECT (jsonb_populate_record(e, jsonb_build_object('id', CAST(:new AS uuid), 'seq', e.seq + :after,
                                                                  'recorded_at', CAST(:at AS timestamptz)))).*
              FROM consent_events e WHERE e.id = :id
            """
        ),
        {"new": copy, "after": seq_after, "at": at, "id": event_id},
    )
    return copy


async def test_the_coming_months_partitions_are_made_once(session: AsyncSession) -> None:
    present = await _partitions(session)
    assert {"consent_events_history", "consent_events_default", _name(1), _name(2)} <= present, present
    assert await partitions.ensure_partitions(session) == partitions.Partitioned(created=[], left_in_default=[])

    await session.execute(text(f'DROP TABLE "{_name(2)}"'))  # as if the month had not been made yet
    made = await partitions.ensure_partitions(session)
    assert made == partitions.Partitioned(created=[_name(2)], left_in_default=[])
    again = await partitions.ensure_partitions(session)
    assert again == partitions.Partitioned(created=[], left_in_default=[])
    assert await _partitions(session) == present


async def test_the_service_makes_them_at_start_up_and_hourly(database: Database, session: AsyncSession) -> None:
    await session.execute(text(f'DROP TABLE "{_name(1)}"'))
    await _ensure_partitions(database)  # the lapse loop's hourly step, which runs first at start-up
    assert _name(1) in await _partitions(session)


async def test_an_event_of_a_month_without_a_partition_lands_in_the_default_one(
    session: AsyncSession, ledger: Ledger
) -> None:
    await session.execute(text(f'DROP TABLE "{_name(2)}"'))
    event = await _real_event(ledger)
    assert await _where(session, event) == "consent_events_history"  # this month: the table as it was
    later = await _copy(session, event, _month(2).replace(day=3), seq_after=1)
    far = await _copy(session, event, datetime(2031, 5, 10, tzinfo=UTC), seq_after=2)
    assert await _where(session, later) == "consent_events_default"
    assert await _where(session, far) == "consent_events_default"

    # the month's partition cannot take them without moving ledger rows: it is left to the default, and said so
    done = await partitions.ensure_partitions(session)
    assert done == partitions.Partitioned(created=[], left_in_default=[_name(2)])
    assert await _where(session, later) == "consent_events_default"
    next_month = await _copy(session, event, _month(1).replace(day=5), seq_after=3)
    assert await _where(session, next_month) == _name(1)


async def test_every_partition_keeps_the_ledger_append_only(session: AsyncSession, ledger: Ledger) -> None:
    event = await _copy(session, await _real_event(ledger), _month(1).replace(day=2), seq_after=1)
    assert await _where(session, event) == _name(1)
    for statement in (
        "UPDATE consent_events SET channel = 'sms' WHERE id = :id",
        "DELETE FROM consent_events WHERE id = :id",
        f'TRUNCATE "{_name(1)}"',
        "TRUNCATE consent_events_default",
        "TRUNCATE consent_events",
    ):
        with pytest.raises(DBAPIError, match="append-only"):
            async with session.begin_nested():
                await session.execute(text(statement), {"id": event} if ":id" in statement else {})


async def test_a_seq_is_unique_within_each_partition(session: AsyncSession, ledger: Ledger) -> None:
    """Each partition's own index refuses a second event of a seq (across months the chain head does)."""
    event = await _real_event(ledger)  # this month: the history partition
    next_month = _month(1).replace(day=2)
    await _copy(session, event, next_month, seq_after=1)
    again_this_month = (datetime.now(UTC), 0)  # the real event's seq once more
    again_next_month = (next_month.replace(day=9), 1)  # the copy's seq once more
    for at, seq_after in (again_this_month, again_next_month):
        with pytest.raises(IntegrityError, match="workspace_id_seq_key"):
            async with session.begin_nested():
                await _copy(session, event, at, seq_after=seq_after)
