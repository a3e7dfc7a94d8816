"""Two one-click unsubscribes of one address at once (a retry racing its first try): one event, on both paths.

Found by the hostile review of the driver path (2026-12-06): the filter of ``repeat=False`` read the state before the
lock, so the second of two concurrent tries recorded a second ``unsubscribe`` in 9 of 10 rounds.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import async_sessionmaker

from app.domain.model import ActorType, Trigger
from app.ledger import sealer, service
from app.ledger.actions import withdraw_point
from app.ledger.service import Actor
from app.lib.db import Database
from app.purposes import service as purposes
from app.workspaces import service as workspace_service
from tests.conftest import Ledger, own_database

PATHS = {"driver": contextlib.nullcontext, "session": service.on_session}


@pytest.fixture(scope="module")
async def engine(pg_server):
    """A database of this module's own: the tries commit."""
    async with own_database(pg_server) as own:
        yield own


async def _one_click(maker, workspace_id: uuid.UUID, point, purpose_id: uuid.UUID, gate: asyncio.Event, path: str):
    with PATHS[path]():
        async with maker() as db, db.begin():
            await db.execute(text("SELECT 1"))  # the transaction has begun: the driver path may be taken
            await gate.wait()
            return await withdraw_point(
                db,
                workspace_id,
                point,
                trigger=Trigger.UNSUBSCRIBE,
                evidence={},
                actor=Actor(ActorType.SUBJECT),
                purpose_id=purpose_id,
                repeat=False,
            )


@pytest.mark.parametrize("path", list(PATHS))
async def test_a_retry_racing_its_first_try_records_nothing(engine, monkeypatch, path):
    maker = async_sessionmaker(engine, expire_on_commit=False)
    database = Database(engine, maker)
    monkeypatch.setattr(sealer, "_running", sealer.Sealer(database))  # a sealer runs, as in every server process
    async with maker() as db, db.begin():
        workspace_id = (await workspace_service.create_workspace(db, f"Retry {path}")).id
        news = await purposes.create_purpose(db, workspace_id, "news", "News", "marketing")
    ledger = Ledger(database, workspace_id)
    counts = []
    for round_ in range(5):
        point = await ledger.point("email", f"r{round_}-{path}@example.com", external_id=f"{path}{round_}")
        await ledger.apply(point, news.id, "signup", "confirm")
        gate = asyncio.Event()
        tries = [asyncio.create_task(_one_click(maker, workspace_id, point, news.id, gate, path)) for _ in range(2)]
        await asyncio.sleep(0.05)  # both have begun and wait at the gate
        gate.set()
        await asyncio.gather(*tries)
        async with maker() as db:
            counts.append(
                await db.scalar(
                    text("SELECT count(*) FROM consent_events WHERE contact_point_id = :p AND trigger = 'unsubscribe'"),
                    {"p": point.id},
                )
            )
    assert counts == [1] * 5, "the second try found the row withdrawn once it had the lock"
