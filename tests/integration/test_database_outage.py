"""A database outage (issue 16, finding 10): 503 with Retry-After while it lasts, no failed request once it is back.

The first tests point the app at a port nothing listens on. The fault test runs its own embedded PostgreSQL, stops
it and starts it again while writers keep posting, then checks the answers and that every acknowledged write is
there.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from app.lib.auth import Scope
from app.lib.db import Database, migrate
from app.lib.embedded_pg import EmbeddedPostgres
from app.main import create_app
from app.workspaces import service as workspace_service
from tests.conftest import Ledger, Tenant, running


@pytest.fixture
async def unreachable_client(settings):
    # nothing listens on port 1: every connection attempt is refused, as while the database restarts
    database = Database.from_url("postgresql+asyncpg://consent@127.0.0.1:1/consent", pool_size=1)
    application = create_app(settings, database=database)
    try:
        async with running(application):
            transport = httpx.ASGITransport(app=application, client=("203.0.113.7", 50000))
            async with httpx.AsyncClient(transport=transport, base_url="https://consent.example.com") as http:
                yield http
    finally:
        assert database.engine is not None
        await database.engine.dispose()


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/v1/eligibility?contact=crm-1&channel=email&purpose=newsletter", None),
        ("POST", "/v1/contacts", {"external_id": "crm-1"}),
        ("GET", "/v1/push/web/vapid-public-key?workspace=01900000-0000-7000-8000-000000000001", None),
    ],
)
async def test_an_unreachable_database_answers_503_with_retry_after(unreachable_client, method, path, body):
    response = await unreachable_client.request(
        method, path, json=body, headers={"Authorization": "Bearer csk_" + "x" * 43}
    )
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "5"
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == "database_unavailable"


@pytest.fixture
async def own_server(tmp_path: Path) -> AsyncIterator[EmbeddedPostgres]:
    """An embedded PostgreSQL of this test alone, so that it may be stopped and started."""
    server = EmbeddedPostgres(
        tmp_path / "pg",
        server_settings={"fsync": "off", "full_page_writes": "off"},
        initdb_sync=False,
    )
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


WRITERS = 8
Answer = tuple[str, str, int, str | None, str | None]
"""The phase a write was sent in and the one it was answered in, its status, the contact's id, Retry-After."""


class Writers:
    """``WRITERS`` clients creating contacts and asking for their eligibility as fast as they are answered.

    ``phase`` names the moment.
    """

    def __init__(self, http: httpx.AsyncClient, headers: dict[str, str]) -> None:
        self.http, self.headers = http, headers
        self.phase = "up"
        self.answers: list[Answer] = []
        self.go = asyncio.Event()
        self.in_flight = 0
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self.go.set()
        self._tasks = [asyncio.create_task(self._write(n)) for n in range(WRITERS)]

    async def pause(self) -> None:
        """Stop sending and wait for the answers in flight: every pooled connection is then idle."""
        self.go.clear()
        while self.in_flight:
            await asyncio.sleep(0.01)

    async def written(self, count: int) -> None:
        """Wait for ``count`` more acknowledged writes."""
        goal = self.acknowledged_count() + count
        while self.acknowledged_count() < goal:
            await asyncio.sleep(0.05)

    async def finish(self) -> None:
        self.phase = "done"
        await asyncio.gather(*self._tasks)

    def acknowledged_count(self) -> int:
        return sum(1 for answer in self.answers if answer[2] == 201)

    def statuses(self, phase: str) -> list[int]:
        """Answers to the writes sent in ``phase``."""
        return [status for sent, _, status, _, _ in self.answers if sent == phase]

    async def _write(self, number: int) -> None:
        sent, last_written = 0, None
        while self.phase != "done":
            await self.go.wait()
            sent += 1
            at = self.phase
            self.in_flight += 1
            try:
                if last_written is None:  # a write (the ORM's pool) ...
                    response = await self.http.post(
                        "/v1/contacts", json={"external_id": f"w{number}-{sent}"}, headers=self.headers
                    )
                    last_written = f"w{number}-{sent}" if response.status_code == 201 else None
                else:  # ... then a read of what it wrote, on the hot path (the driver pool)
                    response = await self.http.get(
                        "/v1/eligibility",
                        params={"contact": last_written, "channel": "email", "purpose": "newsletter"},
                        headers=self.headers,
                    )
                    last_written = None
            finally:
                self.in_flight -= 1
            created = response.json().get("id") if response.status_code == 201 else None
            self.answers.append((at, self.phase, response.status_code, created, response.headers.get("retry-after")))
            if response.status_code >= 500:
                await asyncio.sleep(0.02)  # as a client honouring Retry-After would, only quicker


@pytest.fixture
async def own_database(own_server: EmbeddedPostgres) -> AsyncIterator[Database]:
    """The server's database, migrated, behind pools as the service opens them (small ones)."""
    database = Database.from_url(own_server.url, pool_size=4)
    try:
        assert database.engine is not None
        await migrate(database.engine)
        await database.open_driver_pool(4)
        yield database
    finally:
        await database.dispose()


@pytest.fixture
async def acme(own_database: Database) -> tuple[Tenant, dict[str, str]]:
    """A workspace with a purpose, and a key that writes and reads."""
    async with own_database.sessionmaker() as session, session.begin():
        workspace = await workspace_service.create_workspace(session, "Acme")
    await Ledger(own_database, workspace.id).purpose("newsletter")
    tenant = Tenant(workspace.id, own_database)
    return tenant, await tenant.key(Scope.CONSENTS_WRITE, Scope.ELIGIBILITY_READ)


async def test_the_database_stopped_and_started_under_load(own_server, own_database, acme, settings):
    """503 while it is down, not one failed request once it is back, every acknowledged write kept.

    Twice: stopped while the writers keep writing (their failures during the outage make the pool drop its dead
    connections), then restarted while they pause, so that every pooled connection is dead when they resume.
    """
    _, headers = acme
    application = create_app(settings, database=own_database)
    key_cache = application.state.key_cache
    started = time.monotonic()
    async with running(application):
        transport = httpx.ASGITransport(app=application, client=("203.0.113.7", 50000))
        async with httpx.AsyncClient(transport=transport, base_url="https://consent.example.com") as http:
            load = Writers(http, headers)
            load.start()
            await load.written(2 * WRITERS)  # every pooled connection has been in use
            load.phase = "stopping"
            await own_server.stop()
            load.phase = "down"
            await asyncio.sleep(1.0)
            load.phase = "starting"
            await own_server.start()
            key_cache.clear()  # as once its entries expire: authentication asks the database again
            load.phase = "back"
            await load.written(2 * WRITERS)

            await load.pause()  # a quiet moment: every connection idle in the pool
            load.phase = "restarting"
            await own_server.stop()
            await own_server.start()
            key_cache.clear()
            load.phase = "back after a quiet restart"
            load.go.set()
            await load.written(2 * WRITERS)
            await load.finish()
    assert time.monotonic() - started < 30

    answered_up = [status for sent, answered, status, _, _ in load.answers if sent == answered == "up"]
    assert set(answered_up) == {200, 201}, answered_up
    assert load.statuses("down"), "writes were sent during the outage"
    assert set(load.statuses("down")) == {503}, load.statuses("down")
    assert all(retry == "5" for *_, status, _, retry in load.answers if status == 503)
    assert {status for *_, status, _, _ in load.answers} <= {200, 201, 503}, "answered, or 503: never a 500"
    for back_phase in ("back", "back after a quiet restart"):
        back = load.statuses(back_phase)
        assert len(back) >= 2 * WRITERS, "the writers kept writing once the database was back"
        failed = [s for s in back if s not in {200, 201}]
        assert failed == [], f"{back_phase}: {len(back) - len(failed)} of {len(back)} succeeded"

    acknowledged = {created for *_, status, created, _ in load.answers if status == 201}
    connection = await asyncpg.connect(own_server.dsn())
    try:
        stored = {str(row["id"]) for row in await connection.fetch("SELECT id FROM contacts")}
    finally:
        await connection.close()
    assert len(acknowledged) >= 6 * WRITERS
    assert acknowledged <= stored, f"{len(acknowledged - stored)} acknowledged writes lost"
