"""Test harness: real PostgreSQL (embedded by default, ``TEST_DATABASE_URL`` for another server).

Migrations run once per session with Alembic (a database at head is a copy of that one:
``create_database(migrated=True)``); each test runs inside an outer transaction that is rolled back, and the app
is driven in the same event loop over HTTP (httpx's ASGI transport + the app's own lifespan).
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import traceback
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import structlog
from aiohttp import web
from litestar import Litestar
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.pool import NullPool

from app.lib.auth import Scope
from app.lib.db import Database, migrate
from app.lib.embedded_pg import EmbeddedPostgres
from app.lib.keys import Keys
from app.lib.observability import console_renderer
from app.main import create_app, use
from app.settings import Settings
from app.workspaces import service as workspace_service

TEST_SECRET = b"t" * 32


def pytest_configure() -> None:
    """Log as structlog does unconfigured (the app under test leaves logging alone), but with the service's console
    tracebacks: structlog's default renders them with rich, every frame's source highlighted and its local variables
    shown, about 3 s for each exception a test has logged (those of the background rounds that must survive one)."""
    processors = structlog.get_config()["processors"]
    assert isinstance(processors[-1], structlog.dev.ConsoleRenderer), processors
    structlog.configure(processors=[*processors[:-1], console_renderer()])


class PgServer:
    """A PostgreSQL server the tests may create databases on."""

    def __init__(self, admin_dsn: str, sqlalchemy_url_for: str) -> None:
        self.admin_dsn = admin_dsn  # asyncpg DSN of a maintenance database
        self._template = sqlalchemy_url_for  # SQLAlchemy URL with {db} placeholder
        self._migrated: str | None = None  # name of the database migrated to head once, copied by create_database
        self._migrating = asyncio.Lock()

    def url(self, database: str) -> str:
        """SQLAlchemy URL of ``database`` on this server."""
        return self._template.replace("{db}", database)

    async def create_database(self, prefix: str = "consent_test", *, migrated: bool = False) -> str:
        """A new database, empty or (``migrated``) at head; returns its SQLAlchemy URL.

        A migrated one is a copy (``CREATE DATABASE … TEMPLATE``) of a database that Alembic migrated once for the
        session: a copy takes a fraction of a second, the migrations about two.
        """
        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        template = f' TEMPLATE "{await self._migrated_template()}"' if migrated else ""
        conn = await asyncpg.connect(self.admin_dsn)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"{template}')
        finally:
            await conn.close()
        return self.url(name)

    async def _migrated_template(self) -> str:
        async with self._migrating:
            if self._migrated is None:
                url = await self.create_database("consent_template")
                engine = create_async_engine(url, poolclass=NullPool)  # no connection may stay open on a template
                try:
                    await migrate(engine)
                finally:
                    await engine.dispose()
                self._migrated = make_url(url).database
            assert self._migrated is not None
            return self._migrated

    async def drop_database(self, url: str) -> None:
        """Drop a database made by :meth:`create_database` (closing its sessions)."""
        name = make_url(url).database
        conn = await asyncpg.connect(self.admin_dsn)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    async def close(self) -> None:
        """Drop the migrated template (on a server of ``TEST_DATABASE_URL``, which outlives the session)."""
        if self._migrated is not None:
            await self.drop_database(self.url(self._migrated))
            self._migrated = None


@pytest.fixture(scope="session")
async def pg_server() -> AsyncIterator[PgServer]:
    """The embedded PostgreSQL in a temporary folder (fsync off), or the server of ``TEST_DATABASE_URL``."""
    external = os.environ.get("TEST_DATABASE_URL")
    if external:
        url = make_url(external).set(drivername="postgresql+asyncpg")
        admin = url.set(drivername="postgresql").render_as_string(hide_password=False)
        server = PgServer(
            admin, url.set(database="{db}").render_as_string(hide_password=False).replace("%7Bdb%7D", "{db}")
        )
        try:
            yield server
        finally:
            await server.close()
        return
    folder = Path(tempfile.mkdtemp(prefix="consent-test-"))
    server = EmbeddedPostgres(
        folder / "pg",
        database="postgres",
        server_settings={"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"},
        initdb_sync=False,
    )
    await server.start()
    assert server.socket_dir is not None
    try:
        yield PgServer(server.dsn("postgres"), f"postgresql+asyncpg://postgres@/{{db}}?host={server.socket_dir}")
    finally:
        await server.stop()
        shutil.rmtree(folder, ignore_errors=True)


@asynccontextmanager
async def own_database(pg_server: PgServer) -> AsyncIterator[AsyncEngine]:
    """An engine on a database at head of the caller's own (a copy of the one the migrations made), dropped after.

    The session's shared database, or a module's or class's where its tests commit rows that tests counting such
    rows across the shared database must not see, or where a race needs a second transaction that really commits.
    """
    url = await pg_server.create_database(migrated=True)
    engine = create_async_engine(url, pool_size=5, max_overflow=20)
    try:
        yield engine
    finally:
        await engine.dispose()
        await pg_server.drop_database(url)


@pytest.fixture(scope="session")
async def engine(pg_server: PgServer) -> AsyncIterator[AsyncEngine]:
    """A database at head for the whole session (a copy of the one the migrations made)."""
    async with own_database(pg_server) as shared:
        yield shared


@pytest.fixture
async def connection(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """One connection in an outer transaction, rolled back after the test."""
    async with engine.connect() as conn:
        transaction = await conn.begin()
        try:
            yield conn
        finally:
            await transaction.rollback()


@pytest.fixture
def database(connection: AsyncConnection) -> Database:
    """Sessions that join the test's transaction through savepoints."""
    return Database.bound_to(connection)


@pytest.fixture
async def session(database: Database) -> AsyncIterator[AsyncSession]:
    """A session inside the test's transaction, for arranging data and checking the database."""
    async with database.sessionmaker() as db_session:
        yield db_session


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings for an app under test."""
    return Settings(data_dir=tmp_path / "data", secret_key=TEST_SECRET, public_base_url="https://consent.example.com")


@pytest.fixture(scope="session")
def routed_app(tmp_path_factory: pytest.TempPathFactory) -> Litestar:
    """One app for the whole session, for :func:`app` to give each test.

    Building the routes (handler signatures, dependency models) takes a fifth of a second, most of a test's setup
    when each test built its own app; ``use`` gives the test its own settings, database and state.
    """
    return create_app(Settings(data_dir=tmp_path_factory.mktemp("routed") / "data", secret_key=TEST_SECRET))


@pytest.fixture
async def app(routed_app: Litestar, settings: Settings, database: Database) -> AsyncIterator[Litestar]:
    """The app on the test's transaction, with its lifespan running: ``create_app(settings, database=database)``
    as far as the test can tell (fresh state, metrics and key cache), on the session's routes."""
    use(routed_app, settings, database)
    async with running(routed_app):
        yield routed_app


@asynccontextmanager
async def running(application: Litestar) -> AsyncIterator[None]:
    """Drive the ASGI lifespan protocol from its own task.

    ``Litestar.lifespan()`` enters an anyio cancel scope, which must be left in the task that entered it;
    pytest-asyncio tears fixtures down in another task, so the protocol runs in a dedicated task instead.
    """
    to_app: asyncio.Queue[dict[str, str]] = asyncio.Queue()
    from_app: asyncio.Queue[dict[str, str]] = asyncio.Queue()

    async def receive() -> dict[str, str]:
        return await to_app.get()

    async def send(message: Any) -> None:
        await from_app.put(message)

    task = asyncio.create_task(
        application({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, receive, send)
    )  # type: ignore[arg-type]
    await to_app.put({"type": "lifespan.startup"})
    started = await from_app.get()
    assert started["type"] == "lifespan.startup.complete", started
    try:
        yield
    finally:
        await to_app.put({"type": "lifespan.shutdown"})
        stopped = await from_app.get()
        await task
        assert stopped["type"] == "lifespan.shutdown.complete", stopped


@pytest.fixture
async def client(app: Litestar) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client speaking to the app in this event loop."""
    transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="https://consent.example.com") as http:
        yield http


def audience_request(authorization: str) -> dict[str, Any]:
    """The ASGI scope of ``GET /v1/audiences?purpose=newsletter&channel=email``, for tests that drive the app's
    send and receive themselves (a slow or vanishing client)."""
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "https",
        "path": "/v1/audiences",
        "raw_path": b"/v1/audiences",
        "query_string": b"purpose=newsletter&channel=email",
        "headers": [(b"host", b"consent.example.com"), (b"authorization", authorization.encode())],
        "client": ("203.0.113.7", 1),
        "server": ("consent.example.com", 443),
        "root_path": "",
    }


def request_then_disconnect(gone: asyncio.Event) -> Callable[[], Awaitable[dict[str, Any]]]:
    """An ASGI ``receive`` for :func:`audience_request`: the empty request body, then a disconnect once ``gone``
    is set."""
    requested = False

    async def receive() -> dict[str, Any]:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    return receive


class Tenant:
    """A workspace with a way to mint keys for it."""

    def __init__(self, workspace_id: uuid.UUID, database: Database) -> None:
        self.id = workspace_id
        self._database = database

    async def key(self, *scopes: Scope) -> dict[str, str]:
        """Authorization headers of a new key with ``scopes``."""
        async with self._database.sessionmaker() as db_session, db_session.begin():
            _, secret = await workspace_service.create_api_key(db_session, self.id, "test", scopes or (Scope.ADMIN,))
        return {"Authorization": f"Bearer {secret}"}


@pytest.fixture
async def tenant(database: Database) -> Tenant:
    """A fresh workspace."""
    async with database.sessionmaker() as db_session, db_session.begin():
        workspace = await workspace_service.create_workspace(db_session, "Acme")
    return Tenant(workspace.id, database)


@pytest.fixture
async def other_tenant(database: Database) -> Tenant:
    """A second workspace, to prove isolation."""
    async with database.sessionmaker() as db_session, db_session.begin():
        workspace = await workspace_service.create_workspace(db_session, "Globex")
    return Tenant(workspace.id, database)


@pytest.fixture
async def admin(tenant: Tenant) -> dict[str, str]:
    """Headers of an admin key of ``tenant``."""
    return await tenant.key(Scope.ADMIN)


@pytest.fixture(scope="session")
def project_root() -> Path:
    """The repository root."""
    return Path(__file__).resolve().parents[1]


class Ledger:
    """Arrange ledger data through the real service (the same path the API takes)."""

    def __init__(self, database: Database, workspace_id: uuid.UUID) -> None:
        self.database = database
        self.workspace_id = workspace_id
        self._bulk = 0  # contacts made by opted_in_in_bulk so far ('bulk-1' …)

    async def purpose(self, key: str = "newsletter", kind: str = "marketing") -> Any:
        from app.purposes import service as purposes  # noqa: PLC0415

        async with self.database.sessionmaker() as db_session, db_session.begin():
            return await purposes.create_purpose(db_session, self.workspace_id, key, key.title(), kind)

    async def point(
        self,
        channel: str,
        value: str,
        external_id: str | None = None,
        contact_id: uuid.UUID | None = None,
        details: dict[str, Any] | None = None,
        verified: str | None = "api",
    ) -> Any:
        """A contact point as a key that may write consents adds it (verified ``api``; ``None``: as a form does)."""
        from app.domain.model import VerifiedVia  # noqa: PLC0415
        from app.ledger import repository  # noqa: PLC0415
        from app.ledger.service import add_point  # noqa: PLC0415

        async with self.database.sessionmaker() as db_session, db_session.begin():
            if contact_id is None:
                contact = await repository.add_contact(
                    db_session, self.workspace_id, external_id, "de", "Europe/Berlin"
                )
                contact_id = contact.id
            return await add_point(
                db_session,
                Keys(TEST_SECRET),
                self.workspace_id,
                contact_id=contact_id,
                channel=channel,
                value=value,
                details=details,
                verified=VerifiedVia(verified) if verified else None,
            )

    async def opted_in_in_bulk(self, purpose_id: uuid.UUID, count: int) -> None:
        """``count`` contacts with an opted-in email address each, a statement per table, then ANALYZE.

        One statement per table, each table analysed before the next reads it: as one statement of CTEs, the rows
        of ``contacts`` appear while those of ``contact_points`` go in, and the plans of the foreign key check
        and the merged-contact trigger, made for a table that was a page when the statement began, scanned all of
        it for every row (2.3 s alone, 163 s once other tests had left ``contacts`` analysed small).
        """
        params = {"ws": self.workspace_id, "purpose": purpose_id, "first": self._bulk + 1, "last": self._bulk + count}
        self._bulk += count
        statements = [
            """
            INSERT INTO contacts (id, workspace_id, external_id)
            SELECT gen_random_uuid(), :ws, 'bulk-' || n FROM generate_series(CAST(:first AS int), CAST(:last AS int)) n
            """,
            "ANALYZE contacts",
            """
            INSERT INTO contact_points (id, workspace_id, contact_id, channel, value)
            SELECT gen_random_uuid(), :ws, c.id, 'email', c.external_id || '@example.com'
              FROM contacts c
             WHERE c.workspace_id = :ws
               AND c.external_id IN (SELECT 'bulk-' || n
                                       FROM generate_series(CAST(:first AS int), CAST(:last AS int)) n)
            """,
            "ANALYZE contact_points",
            """
            INSERT INTO consents (id, workspace_id, contact_id, contact_point_id, purpose_id, channel, state, since)
            SELECT gen_random_uuid(), :ws, p.contact_id, p.id, :purpose, 'email', 'opted_in', now()
              FROM contact_points p
             WHERE p.workspace_id = :ws AND p.channel = 'email'
               AND p.value IN (SELECT 'bulk-' || n || '@example.com'
                                 FROM generate_series(CAST(:first AS int), CAST(:last AS int)) n)
            """,
            "ANALYZE consents",  # as autovacuum would after a bulk load
        ]
        async with self.database.sessionmaker() as db_session, db_session.begin():
            for statement in statements:
                used = {k: v for k, v in params.items() if f":{k}" in statement}
                await db_session.execute(text(statement), used)

    async def apply(self, point: Any, purpose_id: uuid.UUID | None, *triggers: str, **kwargs: Any) -> list[Any]:
        from app.domain.model import ActorType, Trigger  # noqa: PLC0415
        from app.ledger.service import Actor, Change, apply_changes  # noqa: PLC0415

        results = []
        for trigger in triggers:
            async with self.database.sessionmaker() as db_session, db_session.begin():
                results += await apply_changes(
                    db_session,
                    self.workspace_id,
                    [Change(point, purpose_id, Trigger(trigger), kwargs.get("evidence", {"ip": "198.51.100.4"}))],
                    Actor(ActorType.SYSTEM),
                )
        return results


@pytest.fixture
def ledger(database: Database, tenant: Tenant) -> Ledger:
    """Ledger helpers on ``tenant``."""
    return Ledger(database, tenant.id)


@asynccontextmanager
async def local_http(application: web.Application) -> AsyncIterator[str]:
    """Serve ``application`` (a provider's or a customer's endpoint) on a free loopback port; yields its base URL."""
    runner = web.AppRunner(application, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
    finally:
        await runner.cleanup()


def consent_cli(url: str, *, in_process: bool = True) -> Callable[..., subprocess.CompletedProcess[str]]:
    """``run(*args)``: the ``consent`` command against the database at ``url``, its output captured.

    In this process by default (click's entry point, as the console script calls it, with the same environment,
    exit status, stdout and stderr): a subprocess spends about two seconds importing the service before it does
    anything. ``in_process=False`` starts the installed ``consent`` script, for tests of the process boundary.
    """
    changes = {
        "DATABASE_URL": url.replace("+asyncpg", ""),
        "CONSENT_LOG_FORMAT": "json",
        "CONSENT_SECRET_KEY": "ab" * 32,
    }
    if in_process:
        return lambda *args: run_cli_in_process(args, changes)
    env = {**os.environ, **changes}
    command = str(Path(sys.executable).parent / "consent")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([command, *args], env=env, capture_output=True, text=True, timeout=60, check=False)

    return run


def run_cli_in_process(
    args: Sequence[str], env: Mapping[str, str | None], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """``consent *args`` through click's entry point in this process, as a subprocess would report it.

    The command runs in a thread of its own (it calls ``asyncio.run``, which a thread with a running event loop
    may not) while this one waits, as it would for a subprocess; ``env`` changes ``os.environ`` meanwhile (``None``
    removes a variable). The command configures logging for itself (to its stderr, captured here); the test
    process's logging configuration is put back afterwards. An exception that escapes the command is reported as
    the interpreter would: its traceback on stderr, exit status 1.
    """
    from click.testing import CliRunner  # noqa: PLC0415

    from app.cli import main  # noqa: PLC0415

    runner = CliRunner()
    thread = ThreadPoolExecutor(1, thread_name_prefix="consent-cli")
    try:
        with _logging_kept():
            result = thread.submit(runner.invoke, main, list(args), env=dict(env), prog_name="consent").result(timeout)
    finally:
        thread.shutdown(wait=False)  # after a timeout (TimeoutError) the test fails instead of waiting for ever
    stderr = result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        assert result.exc_info is not None
        stderr += "".join(traceback.format_exception(*result.exc_info))
    return subprocess.CompletedProcess(["consent", *args], result.exit_code, result.stdout, stderr)


@contextmanager
def _logging_kept() -> Iterator[None]:
    """Restore structlog's and the standard library's logging configuration on exit."""
    structlog_config = structlog.get_config()
    loggers = [logging.getLogger(), *(logging.getLogger(name) for name in list(logging.root.manager.loggerDict))]
    saved = [(logger, logger.handlers[:], logger.level, logger.propagate, logger.disabled) for logger in loggers]
    try:
        yield
    finally:
        structlog.configure(**structlog_config)
        for logger, handlers, level, propagate, disabled in saved:
            logger.handlers[:] = handlers
            logger.setLevel(level)
            logger.propagate = propagate
            logger.disabled = disabled
