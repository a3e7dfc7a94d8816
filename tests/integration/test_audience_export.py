"""The audience export on a real connection pool: a client that goes away stops the query and frees the connection.

The other export tests run on the test's own connection inside its transaction; a cancelled COPY would abort
that transaction, so this one has a database of its own with committed data.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy import text

from app.lib.auth import Scope
from app.lib.db import Database
from app.main import create_app
from app.workspaces import service as workspace_service
from tests.conftest import Ledger, Tenant, audience_request, request_then_disconnect, running

ROWS = 30_000


@pytest.fixture
async def pooled(pg_server) -> AsyncIterator[Database]:
    """A migrated database of its own behind a driver pool of one connection (as the service opens it)."""
    url = await pg_server.create_database("consent_export", migrated=True)
    database = Database.from_url(url, pool_size=1)
    try:
        await database.open_driver_pool(1)
        yield database
    finally:
        await database.dispose()
        await pg_server.drop_database(url)


async def copies_running(database: Database) -> int:
    async with database.sessionmaker() as session:
        found = await session.execute(
            text("SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE 'COPY (%'")
        )
        return int(found.scalar_one())


async def test_a_client_that_goes_away_cancels_the_query_and_the_connection_serves_the_next(pooled, settings):
    async with pooled.sessionmaker() as session, session.begin():
        workspace = await workspace_service.create_workspace(session, "Acme")
    tenant = Tenant(workspace.id, pooled)
    ledger = Ledger(pooled, workspace.id)
    purpose = await ledger.purpose("newsletter")
    await ledger.opted_in_in_bulk(purpose.id, ROWS)
    headers = await tenant.key(Scope.ELIGIBILITY_READ)
    application = create_app(settings, database=pooled)

    first_body = asyncio.Event()
    bodies: list[bytes] = []
    receive = request_then_disconnect(first_body)  # gone after the first piece

    async def send(message):
        if message["type"] == "http.response.body":
            bodies.append(message.get("body", b""))
            first_body.set()
            await asyncio.sleep(3600)  # never reads on: only the disconnect ends this

    scope = audience_request(headers["Authorization"])
    async with running(application):
        await asyncio.wait_for(application(scope, receive, send), timeout=30)
        assert len(bodies) == 1, "one piece went out before the client left"
        for _ in range(50):
            if await copies_running(pooled) == 0:
                break
            await asyncio.sleep(0.1)
        assert await copies_running(pooled) == 0, "the query was cancelled when the client left"

        # the pool's only connection (or its replacement) serves the next export in full
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="https://consent.example.com") as client:
            response = await client.get(
                "/v1/audiences", params={"purpose": "newsletter", "channel": "email"}, headers=headers
            )
    assert response.status_code == 200
    assert len(response.text.splitlines()) == ROWS
