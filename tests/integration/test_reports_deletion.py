"""A workspace's deletion against a catch-up writing its counters, on real connections (migration 0048).

The counters have no foreign key to ``workspaces`` any more: their writers hold the workspace's watermark, which the
deletion's rounds delete (waiting for its holder) until a round finds nothing, and the deletion's last step takes
the workspace row ``FOR UPDATE`` and deletes whatever counters were committed after the rounds.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import async_sessionmaker

from app.imports import consents
from app.lib.db import Database
from app.lib.errors import NotFound
from app.lib.keys import Keys
from app.reports import service
from app.reports.repository import ROLLUPS
from app.workspaces import operator
from app.workspaces.operator import delete_workspace
from tests.conftest import TEST_SECRET
from tests.integration.test_import_concurrency import ACTOR, lines, read, workspace_with_purpose

COUNTERS = [table for table in ROLLUPS if table != "report_message_queue"]


@pytest.fixture
async def maker(engine):
    """Sessions that commit; a workspace a test left behind is deleted after it."""
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    sessions.made = []  # type: ignore[attr-defined]
    yield sessions
    for workspace_id in sessions.made:  # type: ignore[attr-defined]
        await delete_workspace(
            Database(engine, sessions), workspace_id, keep_suppressions=False, force=True, operator_key_id=None
        )


async def counters_of(maker, workspace_id: uuid.UUID) -> dict[str, int]:
    async with maker() as session:
        found = {}
        for table in COUNTERS:
            sql = f"SELECT count(*) FROM {table} WHERE workspace_id = :ws"  # noqa: S608  # constant names
            found[table] = int(await session.scalar(text(sql), {"ws": workspace_id}))
        return found


async def test_a_deletion_waits_for_a_catch_up_under_way_and_deletes_what_it_counted(engine, maker):
    workspace_id = await workspace_with_purpose(maker)
    async with maker() as session:
        await consents.import_consents(session, Keys(TEST_SECRET), workspace_id, read(lines(range(3))), actor=ACTOR)
    async with maker() as session, session.begin():
        await service.catch_up(session, workspace_id)  # the watermark's row exists from now on
    async with maker() as session:
        await consents.import_consents(session, Keys(TEST_SECRET), workspace_id, read(lines(range(3, 20))), actor=ACTOR)
    database = Database(engine, maker)

    async with maker() as session, session.begin():
        counted = await service.catch_up(session, workspace_id)  # counters written, not yet committed
        assert counted.ledger_events >= 17
        deletion = asyncio.create_task(
            delete_workspace(database, workspace_id, keep_suppressions=False, force=True, operator_key_id=None)
        )
        await asyncio.sleep(1.0)
        assert not deletion.done(), "the deletion's sweep of the watermark waits for the catch-up holding it"
    deleted = await asyncio.wait_for(deletion, timeout=60)
    maker.made.remove(workspace_id)

    assert await counters_of(maker, workspace_id) == dict.fromkeys(COUNTERS, 0), "no counter outlives its workspace"
    assert deleted.report["deleted"].get("report_consent_counts", 0) > 0
    async with maker() as session, session.begin():
        with pytest.raises(NotFound):
            await service.catch_up(session, workspace_id)  # and none can be written after it


async def test_the_counters_have_no_foreign_key_and_a_workspace_deletion_leaves_none(engine, maker):
    workspace_id = await workspace_with_purpose(maker)
    async with maker() as session:
        await consents.import_consents(session, Keys(TEST_SECRET), workspace_id, read(lines(range(5))), actor=ACTOR)
    async with maker() as session, session.begin():
        await service.rebuild(session, workspace_id)
        keys = set(
            (
                await session.scalars(
                    text(
                        "SELECT conrelid::regclass::text FROM pg_constraint"
                        " WHERE contype = 'f' AND conrelid::regclass::text = ANY(:tables)"
                    ),
                    {"tables": COUNTERS},
                )
            ).all()
        )
    assert keys == set(), "the counters are written without a check per row (migration 0048)"
    assert sum((await counters_of(maker, workspace_id)).values()) > 0

    database = Database(engine, maker)
    await delete_workspace(database, workspace_id, keep_suppressions=False, force=True, operator_key_id=None)
    maker.made.remove(workspace_id)

    assert await counters_of(maker, workspace_id) == dict.fromkeys(COUNTERS, 0)


async def test_counters_committed_after_the_rounds_go_in_the_last_step(engine, maker, monkeypatch):
    """Nothing writes counters after the rounds today (the ledger and the message queue are gone by then), but a
    counter committed then must not outlive the workspace: the last step deletes it before the row."""
    workspace_id = await workspace_with_purpose(maker)
    async with maker() as session:
        await consents.import_consents(session, Keys(TEST_SECRET), workspace_id, read(lines(range(4))), actor=ACTOR)
    finish = operator._Deletion.finish

    async def late_writer_then_finish(self, key, session):
        async with maker() as other, other.begin():
            await other.execute(
                text(
                    "INSERT INTO report_doi (workspace_id, cohort_day, channel, purpose_id, confirm_s, n)"
                    " VALUES (:ws, '2024-03-01', 'email', NULL, NULL, 1)"
                ),
                {"ws": workspace_id},
            )
        return await finish(self, key, session)

    monkeypatch.setattr(operator._Deletion, "finish", late_writer_then_finish)
    database = Database(engine, maker)
    deleted = await delete_workspace(database, workspace_id, keep_suppressions=False, force=True, operator_key_id=None)
    maker.made.remove(workspace_id)

    assert await counters_of(maker, workspace_id) == dict.fromkeys(COUNTERS, 0), "no counter outlives its workspace"
    assert deleted.report["deleted"]["report_doi"] >= 1
