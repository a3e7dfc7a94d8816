"""Batch runs racing erasures (hostile review of 2026-12-06): no lock cycle, no half answers (own database)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import httpx
import msgspec
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from app.chains import service as chains
from app.chains.schemas import ChainIn
from app.ledger import repository as ledger_repository
from app.lib.auth import Scope
from app.lib.db import Database, migrate
from app.main import create_app
from app.purposes import service as purposes
from app.settings import Settings
from app.workspaces import service as workspaces
from tests.conftest import TEST_SECRET, running

STEPS = [{"key": "mail", "route": ["sms"], "content": {"sms": {"text": "Hallo"}}, "after": "PT2H"}]


@pytest.fixture
async def world(pg_server, tmp_path) -> AsyncIterator[dict]:
    url = await pg_server.create_database("hostile_batch_deadlock")
    database = Database.from_url(url, pool_size=4)
    assert database.engine is not None
    await migrate(database.engine)
    async with database.sessionmaker() as session, session.begin():
        ws = await workspaces.create_workspace(session, "Acme")
        await purposes.create_purpose(session, ws.id, "newsletter", "News", "marketing")
        a = await ledger_repository.add_contact(session, ws.id, "a", "de", "Europe/Berlin")
        b = await ledger_repository.add_contact(session, ws.id, "b", "de", "Europe/Berlin")
        stub, survivor = sorted((a.id, b.id))  # the stub's id sorts first: the batch locks it first
        await session.execute(
            text("UPDATE contacts SET merged_into = :s, merged_at = now() WHERE id = :d"), {"s": survivor, "d": stub}
        )
        defined, _ = await chains.define_chain(
            session, ws.id, msgspec.convert({"key": "c", "purpose": "newsletter", "steps": STEPS}, ChainIn)
        )
        _, send = await workspaces.create_api_key(session, ws.id, "send", [Scope.MESSAGES_SEND])
        _, admin = await workspaces.create_api_key(session, ws.id, "admin", [Scope.ADMIN])
    app = create_app(Settings(data_dir=tmp_path / "data", secret_key=TEST_SECRET, dispatcher=False), database=database)
    raw = make_url(url).set(drivername="postgresql")
    dsn = raw.render_as_string(hide_password=False)
    try:
        async with running(app):
            transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 50000))
            async with httpx.AsyncClient(transport=transport, base_url="https://consent.example.com") as http:
                yield {
                    "http": http,
                    "db": database,
                    "dsn": dsn,
                    "chain": defined.id,
                    "ws": ws.id,
                    "stub": stub,
                    "survivor": survivor,
                    "send": {"Authorization": f"Bearer {send}"},
                    "admin": {"Authorization": f"Bearer {admin}"},
                }
    finally:
        await database.dispose()
        await pg_server.drop_database(url)


async def _connect(dsn: str) -> asyncpg.Connection:
    url = make_url(dsn)
    return await asyncpg.connect(
        user=url.username, database=url.database, host=url.query.get("host") or url.host, port=url.port
    )


@pytest.mark.parametrize("hold", [0.3, 1.5], ids=["batch-victim", "erasure-victim"])
async def test_a_batch_naming_a_stub_and_its_survivor_waits_for_the_survivors_erasure(world, hold):
    """The batch read the stub and the survivor while the erasure held the survivor; the erasure deletes the stub
    with the survivor. Locking the stub made a cycle (one of the two answered 500); it is read, not locked."""
    http = world["http"]
    path = f"/v1/chains/{world['chain']}/runs/batch"
    # a run of the survivor, held by a helper as the chain runner holds a run while it decides a step
    started = await http.post(
        f"/v1/chains/{world['chain']}/runs", json={"contact": str(world["survivor"])}, headers=world["send"]
    )
    survivor_ref = str(world["survivor"])
    assert started.status_code == 202, started.text
    run_id = uuid.UUID(started.json()["run_id"])
    helper = await _connect(world["dsn"])
    tx = helper.transaction()
    await tx.start()
    await helper.execute("SELECT 1 FROM chain_runs WHERE id = $1 FOR UPDATE", run_id)
    erasure = asyncio.create_task(http.delete(f"/v1/contacts/{survivor_ref}", headers=world["admin"]))
    await asyncio.sleep(0.5)  # the erasure holds the survivor's row and waits on the run
    batch = asyncio.create_task(
        http.post(
            path,
            json={"runs": [{"contact": str(world["stub"])}, {"contact": survivor_ref}]},
            headers={**world["send"], "Idempotency-Key": "dl"},
        )
    )
    await asyncio.sleep(hold)  # the batch holds the stub (KEY SHARE) and waits on the survivor
    await tx.commit()  # the runner is done: the erasure goes on and deletes the survivor, its stub cascading
    await helper.close()
    erased, batched = await asyncio.gather(erasure, batch)
    assert erased.status_code == 200, erased.text
    assert batched.status_code == 202, batched.text
    assert [e.get("error", {}).get("code") for e in batched.json()["runs"]] == ["contact_merged", "contact_not_found"]


async def test_batch_racing_an_erasure_of_one_of_its_contacts(world):
    """The erasure holds the contact; the batch waits; the erasure deletes it and commits: that item is answered
    contact_not_found and nothing is written for it."""
    http = world["http"]
    helper = await _connect(world["dsn"])
    tx = helper.transaction()
    await tx.start()
    await helper.execute("SELECT 1 FROM contacts WHERE id = $1 FOR UPDATE", world["survivor"])
    batch = asyncio.create_task(
        http.post(
            f"/v1/chains/{world['chain']}/runs/batch",
            json={
                "runs": [
                    {"contact": str(world["survivor"]), "key": "kb"},
                    {"contact": str(world["survivor"]), "key": "kb2"},
                ]
            },
            headers=world["send"],
        )
    )
    await asyncio.sleep(0.4)
    await helper.execute("DELETE FROM contacts WHERE id = $1", world["survivor"])
    await tx.commit()
    await helper.close()
    answer = await batch
    assert answer.status_code == 202
    assert [e["error"]["code"] for e in answer.json()["runs"]] == ["contact_not_found"] * 2
