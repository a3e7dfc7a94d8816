"""``POST /v1/chains/{id}/runs`` keeps its ``Idempotency-Key`` in the run's own transaction (issue 20, runs/s).

The convention is the one of every other POST (``tests/integration/test_idempotency.py``); this route writes the
key with its answer in the handler's transaction instead of a claim and an answer of their own: one transaction
per request, a concurrent request with the same key waits for the first and answers its answer.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import msgspec
import pytest
from sqlalchemy import event, func, insert, select, text

from app.chains import repository as chains_repository
from app.chains import service as chains
from app.chains.models import ChainRun
from app.chains.schemas import ChainIn
from app.ledger import repository as ledger_repository
from app.lib.auth import Scope
from app.lib.db import Database, migrate
from app.lib.keys import Keys
from app.lib.models import IdempotencyKey
from app.lib.orm import utcnow
from app.main import create_app
from app.purposes import service as purposes
from app.settings import DatabaseSettings, Settings
from app.workspaces import service as workspaces
from tests.conftest import TEST_SECRET, running

STEPS = [{"key": "a", "route": ["sms"], "content": {"sms": {"text": "Hallo"}}}]


async def runs(session) -> int:
    return await session.scalar(select(func.count()).select_from(ChainRun))


@pytest.fixture
async def chain(client, tenant, ledger) -> dict[str, Any]:
    """A chain of one step, Jane, and a key that may start runs."""
    await ledger.purpose("newsletter")
    await ledger.point("sms", "+4915123456789", external_id="jane")
    key = await tenant.key(Scope.MESSAGES_SEND)
    body = {"key": "c", "purpose": "newsletter", "steps": STEPS}
    created = await client.post("/v1/chains", json=body, headers=key)
    assert created.status_code == 201, created.text
    return {"path": f"/v1/chains/{created.json()['id']}/runs", "key": key}


async def test_a_repeat_answers_the_first_answer_byte_for_byte(client, chain, session):
    headers = {**chain["key"], "Idempotency-Key": "run-1"}
    first = await client.post(chain["path"], json={"contact": "jane"}, headers=headers)
    assert first.status_code == 202, first.text
    assert "idempotent-replayed" not in first.headers
    again = await client.post(chain["path"], json={"contact": "jane"}, headers=headers)
    assert again.status_code == 202
    assert again.headers["idempotent-replayed"] == "true"
    assert again.content == first.content
    assert again.headers["content-type"] == first.headers["content-type"]
    spelt = await client.post(  # the same JSON value, spelt otherwise: the same request (the key kept it so)
        chain["path"], content=b'{ "contact" : "jane" }', headers={**headers, "Content-Type": "application/json"}
    )
    assert spelt.status_code == 202, spelt.text
    assert spelt.content == first.content
    other = await client.post(chain["path"], json={"contact": "jane", "campaign": "x"}, headers=headers)
    assert other.status_code == 409
    assert other.json()["code"] == "idempotency_key_reused"
    assert await runs(session) == 1


async def test_one_transaction_per_request(client, chain, connection, session):
    # the test's sessions and driver connections join its transaction through savepoints: one savepoint is one
    # transaction of the app, taken by SQLAlchemy (its event) or by asyncpg itself (the driver's query logger)
    statements: list[str] = []
    event.listen(connection.sync_connection, "savepoint", lambda _conn, _name: statements.append("SAVEPOINT"))
    driver = (await connection.get_raw_connection()).driver_connection

    def logger(record: Any) -> None:
        statements.append(record.query.split()[0].upper())

    driver.add_query_logger(logger)
    try:
        response = await client.post(
            chain["path"], json={"contact": "jane"}, headers={**chain["key"], "Idempotency-Key": "run-tx"}
        )
    finally:
        driver.remove_query_logger(logger)
    assert response.status_code == 202, response.text
    assert statements.count("SAVEPOINT") == 1, statements
    kept = await session.scalar(select(IdempotencyKey).where(IdempotencyKey.key == "run-tx"))
    assert kept is not None
    assert (kept.status, kept.body, kept.completed_at is not None) == (202, response.content, True)


async def test_a_refused_request_keeps_no_key(client, chain, session):
    headers = {**chain["key"], "Idempotency-Key": "run-bad"}
    refused = await client.post(chain["path"], json={"contact": "nobody"}, headers=headers)
    assert refused.status_code in (404, 422), refused.text
    assert await session.scalar(select(IdempotencyKey).where(IdempotencyKey.key == "run-bad")) is None
    corrected = await client.post(chain["path"], json={"contact": "jane"}, headers=headers)
    assert corrected.status_code == 202, corrected.text
    assert "idempotent-replayed" not in corrected.headers
    assert await runs(session) == 1


async def test_runs_name_contacts_and_chains_as_before(client, chain, ledger, other_tenant, session):
    """The run's path on the driver connection: the same contact and chain rules, the same errors."""
    jane = await session.scalar(text("SELECT id FROM contacts WHERE external_id = 'jane'"))
    by_id = await client.post(chain["path"], json={"contact": str(jane)}, headers=chain["key"])
    assert by_id.status_code == 202, by_id.text
    run = await session.scalar(select(ChainRun).where(ChainRun.id == uuid.UUID(by_id.json()["run_id"])))
    assert run is not None
    assert (run.contact_id, run.status) == (jane, "active")
    unknown = await client.post(chain["path"], json={"contact": "nobody"}, headers=chain["key"])
    assert (unknown.status_code, unknown.json()["code"]) == (404, "contact_not_found")
    foreign_key = await other_tenant.key(Scope.MESSAGES_SEND)
    foreign = await client.post(chain["path"], json={"contact": "jane"}, headers=foreign_key)
    assert (foreign.status_code, foreign.json()["code"]) == (404, "chain_not_found")
    survivor = await ledger.point("sms", "+4915199999999", external_id="june")
    await session.execute(
        text("UPDATE contacts SET merged_into = :into, merged_at = now() WHERE id = :id"),
        {"into": survivor.contact_id, "id": jane},
    )
    await session.commit()
    merged = await client.post(chain["path"], json={"contact": "jane"}, headers=chain["key"])
    assert (merged.status_code, merged.json()["code"]) == (409, "contact_merged")
    assert merged.json()["merged_into"] == str(survivor.contact_id)
    assert await runs(session) == 1


async def test_claims_of_the_claim_and_answer_convention_are_honoured(client, chain, tenant, session):
    """Rows the other routes' convention writes (a claim still running, one a crashed process left) mean the same."""
    body = b'{"contact":"jane"}'
    fingerprint = Keys(TEST_SECRET).request_fingerprint(chain["path"].encode(), b"", body)
    await session.execute(
        insert(IdempotencyKey).values(
            workspace_id=tenant.id, key="running", fingerprint=fingerprint, created_at=utcnow()
        )
    )
    await session.execute(
        insert(IdempotencyKey).values(
            workspace_id=tenant.id, key="crashed", fingerprint=fingerprint, created_at=utcnow() - timedelta(minutes=5)
        )
    )
    await session.execute(
        insert(IdempotencyKey).values(
            workspace_id=tenant.id,
            key="expired",
            fingerprint=b"?" * 32,
            created_at=utcnow() - timedelta(hours=25),
            completed_at=utcnow() - timedelta(hours=25),
            status=202,
            headers="content-type: application/json",
            body=b'{"run_id":"old"}',
        )
    )
    await session.commit()
    headers = {**chain["key"], "Content-Type": "application/json"}
    busy = await client.post(chain["path"], content=body, headers={**headers, "Idempotency-Key": "running"})
    assert busy.status_code == 409
    assert busy.json()["code"] == "idempotency_request_in_progress"
    assert busy.headers["retry-after"] == "1"
    for key in ("crashed", "expired"):
        taken = await client.post(chain["path"], content=body, headers={**headers, "Idempotency-Key": key})
        assert taken.status_code == 202, (key, taken.text)
        assert "idempotent-replayed" not in taken.headers
    assert await runs(session) == 2


# --- concurrent requests need committed rows: a database of their own ----------------------------------------------


async def _seed(database: Database) -> tuple[str, dict[str, str]]:
    """A workspace with a chain of one step, Jane, and a key that may start runs: the runs' path and the key."""
    async with database.sessionmaker() as session, session.begin():
        workspace = await workspaces.create_workspace(session, "Acme")
        await purposes.create_purpose(session, workspace.id, "newsletter", "News", "marketing")
        await ledger_repository.add_contact(session, workspace.id, "jane", "de", "Europe/Berlin")
        definition = msgspec.convert({"key": "c", "purpose": "newsletter", "steps": STEPS}, ChainIn)
        defined, _ = await chains.define_chain(session, workspace.id, definition)
        _, secret = await workspaces.create_api_key(session, workspace.id, "test", [Scope.MESSAGES_SEND])
    return f"/v1/chains/{defined.id}/runs", {"Authorization": f"Bearer {secret}"}


@pytest.fixture
async def served(pg_server, tmp_path) -> AsyncIterator[tuple[httpx.AsyncClient, Database, str, dict[str, str]]]:
    """The app on a database of its own (real transactions, real row locks): a chain, Jane, a key."""
    url = await pg_server.create_database("consent_runs_idem")
    database = Database.from_url(url, pool_size=4)
    assert database.engine is not None
    await migrate(database.engine)
    path, key = await _seed(database)
    app = create_app(Settings(data_dir=tmp_path / "data", secret_key=TEST_SECRET, dispatcher=False), database=database)
    try:
        async with running(app):
            transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 50000))
            async with httpx.AsyncClient(transport=transport, base_url="https://consent.example.com") as http:
                yield http, database, path, key
    finally:
        await database.dispose()
        await pg_server.drop_database(url)


@pytest.mark.parametrize("way", ["fast path", "route"])
async def test_two_concurrent_requests_with_one_key_start_one_run(served, monkeypatch, way):
    """Both through the fast path (one statement each), or both through the route (its transaction each)."""
    http, database, path, key = served
    both_inside = asyncio.Event()
    inside = 0
    module, name = (
        (chains_repository, "start_keyed_run_on_driver") if way == "fast path" else (chains, "start_run_on_driver")
    )
    start_run = getattr(module, name)

    async def start_run_together(*args: Any, **kwargs: Any) -> Any:
        # both requests are about to write before either writes the key: the race the key row decides
        nonlocal inside
        inside += 1
        if inside == 2:
            both_inside.set()
        await asyncio.wait_for(both_inside.wait(), timeout=5)
        return await start_run(*args, **kwargs)

    monkeypatch.setattr(module, name, start_run_together)
    if way == "route":  # a chain id the fast path does not take (upper case) goes to the route
        path = path.upper().replace("/V1/CHAINS/", "/v1/chains/").replace("/RUNS", "/runs")
    headers = {**key, "Idempotency-Key": "together"}
    first, second = await asyncio.gather(
        http.post(path, json={"contact": "jane"}, headers=headers),
        http.post(path, json={"contact": "jane"}, headers=headers),
    )
    assert inside == 2, "both requests went to write: the key's row decided, not the look-up before"
    assert (first.status_code, second.status_code) == (202, 202), (first.text, second.text)
    assert first.json() == second.json()
    assert sorted(r.headers.get("idempotent-replayed", "no") for r in (first, second)) == ["no", "true"]
    async with database.sessionmaker() as session:
        started = await session.scalars(select(ChainRun.id))
        assert [str(run) for run in started] == [first.json()["run_id"]]
        assert uuid.UUID(first.json()["run_id"])


async def test_a_keyed_run_needs_one_driver_connection_at_a_time(pg_server, tmp_path):
    """The look-up of the key, the API key's authentication (on a cache miss) and the run's transaction take the
    driver pool's connections one after another, never two at once: with a pool of one connection and the key cache
    empty, a keyed run answers (hostile review: the look-up's connection was held through the guard, and a pool
    full of requests each waiting for a second connection froze the process for every tenant)."""
    url = await pg_server.create_database("consent_runs_pool")
    seeding = Database.from_url(url, pool_size=1)
    assert seeding.engine is not None
    await migrate(seeding.engine)
    path, key = await _seed(seeding)
    await seeding.dispose()
    settings = Settings(
        data_dir=tmp_path / "data",
        secret_key=TEST_SECRET,
        dispatcher=False,
        database=DatabaseSettings(url=url, pool_size=1),
    )
    app = create_app(settings)  # its own pools, as in production
    try:
        async with running(app):
            transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 50000))
            async with httpx.AsyncClient(transport=transport, base_url="https://consent.example.com") as http:
                app.state.key_cache.ttl = 0  # every authentication reads the database, as after a revocation
                app.state.key_cache.clear()
                answered = await asyncio.wait_for(
                    http.post(path, json={"contact": "jane"}, headers={**key, "Idempotency-Key": "one"}), 10
                )
                assert answered.status_code == 202, answered.text
    finally:
        await pg_server.drop_database(url)
