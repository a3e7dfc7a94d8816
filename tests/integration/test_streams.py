"""Slow stream readers cannot take the service down (issue 16, finding 4).

Streams (``GET /v1/audiences``, ``GET /v1/audit/events``) run on a connection pool of their own, within a budget per
process and per API key, and a client that stops reading is cut off. The clients here never read: their ASGI
``send`` blocks, as a server's does once the client's socket is full. The database is one of this module's own,
with committed data, behind pools as the service opens them (small ones).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import msgspec
import pytest
from litestar import Litestar
from sqlalchemy import text

from app.lib.auth import Scope
from app.lib.db import Database
from app.main import create_app
from app.settings import Settings, StreamSettings
from app.workspaces import service as workspace_service
from tests.conftest import Ledger, Tenant, audience_request, request_then_disconnect, running

ROWS = 30_000  # several MB of output: a reader that does not read leaves the COPY waiting, holding its connection
POOL = 2  # the connections everything else has
BUDGET = 2  # the streams' own


class World(msgspec.Struct):
    """The database, and keys of two workspaces: Acme (with an audience) and Globex."""

    database: Database
    acme: Tenant
    globex: Tenant


@pytest.fixture(scope="module")
async def world(pg_server) -> AsyncIterator[World]:
    url = await pg_server.create_database("consent_streams", migrated=True)
    database = Database.from_url(url, pool_size=POOL)
    try:
        await database.open_driver_pool(POOL, streams=BUDGET)
        async with database.sessionmaker() as session, session.begin():
            acme = await workspace_service.create_workspace(session, "Acme")
            globex = await workspace_service.create_workspace(session, "Globex")
        ledger = Ledger(database, acme.id)
        purpose = await ledger.purpose("newsletter")
        await ledger.opted_in_in_bulk(purpose.id, ROWS)
        yield World(database=database, acme=Tenant(acme.id, database), globex=Tenant(globex.id, database))
    finally:
        await database.dispose()
        await pg_server.drop_database(url)


def app_with(world: World, settings: Settings, **limits: Any) -> Litestar:
    limited = msgspec.structs.replace(settings, streams=StreamSettings(total=BUDGET, **limits))
    return create_app(limited, database=world.database)


class Reader:
    """A client that asks for a stream and never reads it: its ``send`` blocks at the first piece of the body."""

    started: list[Reader] = []  # noqa: RUF012  # every reader of the running test, for the clean-up

    def __init__(self, application: Litestar, authorization: str, path: str = "/v1/audiences") -> None:
        Reader.started.append(self)
        self.status: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.first_piece = asyncio.Event()
        self.headers: dict[str, str] = {}
        self.body = b""
        self.gone = asyncio.Event()
        scope = audience_request(authorization)
        if path != "/v1/audiences":
            scope = {**scope, "path": path, "raw_path": path.encode(), "query_string": b""}
        self.task = asyncio.create_task(application(scope, request_then_disconnect(self.gone), self._send))

    async def _send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.headers = {k.decode(): v.decode() for k, v in message["headers"]}
            if not self.status.done():  # (a second start: the app failing after the first, at clean-up)
                self.status.set_result(message["status"])
            return
        self.body += message.get("body", b"")
        if self.status.result() == 200:
            self.first_piece.set()
            await asyncio.sleep(3600)  # never reads

    async def stalled(self) -> None:
        """Wait until the stream has started and stalls."""
        assert await asyncio.wait_for(self.status, 10) == 200
        await asyncio.wait_for(self.first_piece.wait(), 10)

    async def leave(self) -> None:
        """The client disconnects."""
        self.gone.set()
        await asyncio.wait_for(self.task, 10)


@pytest.fixture(autouse=True)
async def readers_leave() -> AsyncIterator[None]:
    """Every reader disconnects after its test, even a failed one (its connection would block the teardown)."""
    yield
    readers, Reader.started = Reader.started, []
    for reader in readers:
        reader.gone.set()
    for reader in readers:
        with contextlib.suppress(TimeoutError):  # still waiting for a connection, say: wait_for cancels it
            await asyncio.wait_for(reader.task, 5)


async def copies_running(database: Database) -> int:
    async with database.sessionmaker() as session:
        found = await session.execute(
            text("SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE 'COPY (%'")
        )
        return int(found.scalar_one())


async def test_stalled_streams_leave_every_other_call_its_connections(world, settings):
    """More stalled readers than connections: another workspace's calls still answer at once."""
    application = app_with(world, settings, per_key=1, per_workspace=BUDGET, send_timeout=60)
    keys = [(await world.acme.key(Scope.ELIGIBILITY_READ))["Authorization"] for _ in range(BUDGET + 1)]
    fresh_key = await world.globex.key(Scope.ADMIN)  # not yet in the key cache: authentication reads the database
    async with running(application):
        readers = [Reader(application, key) for key in keys[:BUDGET]]
        for reader in readers:
            await reader.stalled()
        assert await copies_running(world.database) == BUDGET, "each stalled stream holds its COPY"

        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="https://consent.example.com") as client:
            started = time.monotonic()
            purposes = await asyncio.wait_for(client.get("/v1/purposes", headers=fresh_key), 5)
            eligibility = await asyncio.wait_for(
                client.get(
                    "/v1/eligibility",
                    params={"contact": "nobody", "channel": "email", "purpose": "newsletter"},
                    headers=fresh_key,
                ),
                5,
            )
            elapsed = time.monotonic() - started

        over = Reader(application, keys[BUDGET])  # one stream more than the budget: refused at once, not queued
        assert await asyncio.wait_for(over.status, 5) == 503
        assert over.headers["retry-after"] == "5"
        assert msgspec.json.decode(over.body)["code"] == "streams_busy"
        for reader in [*readers, over]:
            await reader.leave()
    assert purposes.status_code == 200
    assert eligibility.status_code == 404  # answered: no such purpose in Globex
    assert elapsed < 2.0  # (before: no answer for as long as the streams stalled)


async def test_one_key_may_hold_only_so_many_streams(world, settings):
    application = app_with(world, settings, per_key=1, send_timeout=60)
    admin = (await world.acme.key(Scope.ADMIN))["Authorization"]
    other = (await world.acme.key(Scope.ELIGIBILITY_READ))["Authorization"]
    async with running(application):
        first = Reader(application, admin)
        await first.stalled()
        again = Reader(application, admin, "/v1/audit/events")  # either stream counts against the key
        assert await asyncio.wait_for(again.status, 5) == 429
        problem = msgspec.json.decode(again.body)
        assert again.headers["retry-after"] == "5"
        assert again.headers["content-type"].startswith("application/problem+json")
        assert problem["code"] == "too_many_streams"
        another_key = Reader(application, other)  # another key of the same workspace is not held back
        await another_key.stalled()
        for reader in (first, again, another_key):
            await reader.leave()
        after = Reader(application, admin)  # once the first has gone, the key may stream again
        await after.stalled()
        await after.leave()


async def test_a_client_that_stops_reading_is_cut_off_and_its_connection_returns(world, settings):
    application = app_with(world, settings, per_key=1, send_timeout=1)
    key = (await world.acme.key(Scope.ELIGIBILITY_READ))["Authorization"]
    async with running(application):
        started = time.monotonic()
        reader = Reader(application, key)
        await reader.stalled()
        await asyncio.wait_for(reader.task, 10)  # the response ended without the client
        cut_after = time.monotonic() - started
        assert not reader.gone.is_set(), "the client never left on its own"
        for _ in range(50):
            if await copies_running(world.database) == 0:
                break
            await asyncio.sleep(0.1)
        assert await copies_running(world.database) == 0, "the query was cancelled"
        # the budget has its place back: the same key (limit 1) streams again, in full, on the freed connection
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="https://consent.example.com") as client:
            response = await client.get(
                "/v1/audiences",
                params={"purpose": "newsletter", "channel": "email"},
                headers={"Authorization": key},
            )
    assert 1.0 <= cut_after < 5
    assert response.status_code == 200
    assert len(response.text.splitlines()) == ROWS


async def test_one_workspace_never_holds_every_stream(world, settings):
    """Hostile review: a tenant admin with two keys (or a slow but steady reader) held every stream of the process."""
    limited = msgspec.structs.replace(
        settings, streams=StreamSettings(total=3, per_key=1, per_workspace=2, send_timeout=60)
    )
    application = create_app(limited, database=world.database)
    acme = [(await world.acme.key(Scope.ELIGIBILITY_READ))["Authorization"] for _ in range(3)]
    globex = (await world.globex.key(Scope.AUDIT_READ))["Authorization"]
    async with running(application):
        held = [Reader(application, key) for key in acme[:2]]
        for reader in held:
            await reader.stalled()
        third = Reader(application, acme[2])  # a third key of the same workspace
        assert await asyncio.wait_for(third.status, 5) == 429
        assert msgspec.json.decode(third.body)["code"] == "too_many_streams"
        other = Reader(application, globex, "/v1/audit/events")  # another workspace still gets a stream
        assert await asyncio.wait_for(other.status, 5) == 200
        for reader in [*held, third, other]:
            await reader.leave()


def test_stream_settings_come_from_the_environment():
    settings = Settings.from_env(
        {"CONSENT_STREAMS_MAX": "8", "CONSENT_STREAMS_PER_KEY": "3", "CONSENT_STREAM_SEND_TIMEOUT": "15"}
    )
    assert settings.streams == StreamSettings(total=8, per_key=3, send_timeout=15)
    assert Settings.from_env({}).streams == StreamSettings(total=4, per_key=2, send_timeout=30)
