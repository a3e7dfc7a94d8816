"""Engine, sessions and migrations.

A request gets an ``AsyncSession``. The request's unit of work is its controller: the handler opens
``async with db.begin():`` around the service calls, so the commit finishes before the response is built and a
failed commit becomes an error response. Services and repositories take the session and never begin, commit or
roll back, so one transaction can span several services (a signup records the consent and the confirmation
token together). A hot write path may hold its transaction on a driver connection instead (``POST
/v1/chains/{id}/runs``: ``async with database.driver() as c, c.transaction():``), with the same rule. Two
kinds of work own their transactions instead: background workers (dispatcher, webhook
sender, lapse sweep) and the idempotency middleware open a session per round or step, and a consent import
commits each batch of rows itself (:mod:`app.imports.consents`), so a large file is not one transaction.

All SQL lives in the packages' ``repository`` modules (and ``lib.repository`` for the shared tables); this
module holds the engine, the sessions, the raw asyncpg pool and migrations.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg
import structlog
from sqlalchemy import Connection, event, exc, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

if TYPE_CHECKING:
    from alembic.config import Config

log = structlog.get_logger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"
# Any fixed 64-bit number: serialises concurrent "migrate on start-up" of several replicas.
_MIGRATION_LOCK_ID = 0x636F6E73656E74


class Database:
    """The engine and the session factory of one process (or of one test, bound to its connection)."""

    def __init__(
        self,
        engine: AsyncEngine | None,
        sessionmaker: async_sessionmaker[AsyncSession],
        bound: AsyncConnection | None = None,
    ) -> None:
        self.engine = engine
        self.sessionmaker = sessionmaker
        self._bound = bound
        self._pool: asyncpg.Pool | None = None
        self._stream_pool: asyncpg.Pool | None = None

    async def open_driver_pool(self, size: int, *, streams: int = 0) -> None:
        """A plain asyncpg pool for the hot read paths (no greenlet bridge per checkout), and one for the streams.

        The streams (``COPY`` to a client, :mod:`app.lib.copystream`) hold their connection for as long as the
        client takes to read: on a pool of their own, of ``streams`` connections, slow readers can never take the
        connections authentication and every other request need (issue 16, finding 4). Without ``streams`` they
        share the driver pool (tests that need no budget).
        """
        assert self.engine is not None
        dsn = self.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        # asyncpg's reset on release (a second round trip) stays: without it the single check ran 10-20 % faster
        # but its p99 at saturation went from 25 ms to 74 ms (measured twice each, same server, 2026-11-22). Only a
        # checkout that declares it left no session state skips it (``driver(stateless=True)``).
        self._pool = await asyncpg.create_pool(dsn, min_size=1, max_size=size, connect=_connect, reset=_reset)
        if streams:
            # opened on demand: most processes serve few streams
            self._stream_pool = await asyncpg.create_pool(
                dsn, min_size=0, max_size=streams, connect=_connect, reset=_reset
            )

    @classmethod
    def from_url(cls, url: str, *, pool_size: int = 10) -> Database:
        """A pooled engine for ``url``."""
        engine = create_async_engine(
            url,
            pool_size=pool_size,
            max_overflow=pool_size,
            # SQLAlchemy's ping is BEGIN, a statement and ROLLBACK on asyncpg: three round trips on every checkout.
            # A closed connection is discarded at checkout instead (below), which costs none.
            pool_pre_ping=False,
            pool_recycle=1800,
            # a failed statement's error (and so every log line of it) must not carry the values: addresses, IPs
            hide_parameters=True,
        )
        event.listen(engine.sync_engine, "do_connect", _connect_through_refusal)
        event.listen(engine.sync_engine.pool, "checkout", _discard_closed)
        return cls(engine, async_sessionmaker(engine, expire_on_commit=False))

    @classmethod
    def bound_to(cls, connection: AsyncConnection) -> Database:
        """Sessions that join ``connection``'s open transaction through savepoints (used by the tests)."""
        maker = async_sessionmaker(bind=connection, expire_on_commit=False, join_transaction_mode="create_savepoint")
        return cls(None, maker, bound=connection)

    @asynccontextmanager
    async def stream_driver(self) -> AsyncIterator[Any]:
        """A driver connection for a stream (``COPY`` to a client).

        From the streams' own pool when there is one (see :meth:`open_driver_pool`), else as :meth:`driver`.
        """
        if self._stream_pool is not None:
            async with _pooled(self._stream_pool) as connection:
                yield connection
            return
        async with self.driver() as connection:
            yield connection

    @asynccontextmanager
    async def driver(self, *, stateless: bool = False) -> AsyncIterator[Any]:
        """The asyncpg connection itself, for hot read paths (no ORM, no transaction round trips).

        From the pool in production; in tests, the test's own connection (inside its transaction). ``stateless``:
        the caller runs only single statements outside a transaction that leave no session state behind (no ``SET``,
        ``LISTEN``, cursor, advisory lock or temporary table), so the connection goes back to the pool without the
        reset query (a round trip; an open transaction is still rolled back, by asyncpg).
        """
        if self._bound is not None:
            yield (await self._bound.get_raw_connection()).driver_connection
            return
        if self._pool is not None:
            async with _pooled(self._pool, stateless=stateless) as connection:
                yield connection
            return
        assert self.engine is not None
        async with self.engine.connect() as connection:
            yield (await connection.get_raw_connection()).driver_connection

    async def session(self) -> AsyncIterator[AsyncSession]:
        """Yield a session and close it (rolling back anything uncommitted)."""
        async with self.sessionmaker() as session:
            yield session

    async def dispose(self) -> None:
        """Close the pools."""
        if self._stream_pool is not None:
            await self._stream_pool.close()
        if self._pool is not None:
            await self._pool.close()
        if self.engine is not None:
            await self.engine.dispose()


#: Set while a ``driver(stateless=True)`` checkout is given back: :func:`_reset` then sends no reset query.
_STATELESS: ContextVar[bool] = ContextVar("stateless_checkout", default=False)


async def _reset(connection: asyncpg.Connection) -> None:
    """The pools' reset on release: asyncpg's reset query, unless the checkout declared it left no session state.

    asyncpg has already rolled back an open transaction and dropped the listeners when it calls this.
    """
    if _STATELESS.get():
        return
    query = connection.get_reset_query()
    if query:
        await connection.execute(query)


@asynccontextmanager
async def _pooled(pool: asyncpg.Pool, *, stateless: bool = False) -> AsyncIterator[Any]:
    """A connection of ``pool``, given back even when the server went away while the caller had it.

    A connection whose protocol broke (:class:`asyncpg.InternalClientError`) is closed and reported as the broken
    connection it is, so that the request answers 503 like any other lost connection.

    Giving back resets the connection (a round trip). When the server has gone between the caller's last statement
    and the reset (a restart), asyncpg closes the connection and the pool opens a new one when it needs one; the
    caller's work was done (or failed with its own error), so that failure is not the request's: it is logged, not
    raised (issue 16, finding 10: it was a 500 that escaped even the 503 handling).
    """
    connection = await pool.acquire()
    try:
        yield connection
    except asyncpg.InternalClientError as error:
        # the protocol is in a state it cannot leave: met when the server's "terminating connection" arrives
        # just before the socket closes (a shutdown); the connection is of no further use, and the outage is a 503
        connection.terminate()
        raise ConnectionResetError("the database connection broke off") from error
    finally:
        token = _STATELESS.set(stateless)
        try:
            await pool.release(connection)
        except Exception as error:  # noqa: BLE001  # asyncpg has terminated the connection; nothing is lost
            log.warning("database_connection_dropped_at_release", error_type=type(error).__name__)
        finally:
            _STATELESS.reset(token)


async def _connect(*args: Any, **kwargs: Any) -> asyncpg.Connection:
    """``asyncpg.connect``, with a missing Unix socket reported as what it means: the server is not there.

    While a local PostgreSQL is stopped its socket file is gone and connecting raises ``FileNotFoundError``; the
    service must answer that as the outage it is (503, :func:`app.lib.errors.database_unreachable`), not as a 500.
    """
    try:
        return await asyncpg.connect(*args, **kwargs)
    except FileNotFoundError as error:
        raise ConnectionRefusedError(f"the database socket is not there: {error.strerror}") from error


def _connect_through_refusal(_dialect: Any, _record: Any, _cargs: Any, cparams: dict[str, Any]) -> None:
    # SQLAlchemy's asyncpg dialect connects with the function it finds under this key (default asyncpg.connect)
    cparams["async_creator_fn"] = _connect


def _discard_closed(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
    """At checkout: a pooled connection whose server went away is replaced before the request uses it.

    After a database restart every pooled connection is closed; without this each would fail the one request
    that checks it out (issue 16, finding 10). asyncpg notices the server closing the socket as it happens, so
    asking it costs no round trip (SQLAlchemy's ``pool_pre_ping`` costs three). The pool opens a new connection
    in its place; raising ``DisconnectionError`` is SQLAlchemy's documented way to ask for that.
    """
    if dbapi_connection.driver_connection.is_closed():
        raise exc.DisconnectionError("the pooled connection was closed by the server")


def alembic_config(**attributes: Any) -> Config:
    """Alembic configuration pointing at ``migrations/`` (no ini file needed).

    Alembic is imported here, not with the module: it costs about a second of every CLI command's start (an import
    of a list measured it), and only migrations need it.
    """
    from alembic.config import Config  # noqa: PLC0415

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes.update(attributes)
    return config


def head_revision() -> str | None:
    """The newest migration in the code."""
    from alembic.script import ScriptDirectory  # noqa: PLC0415  # see alembic_config

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


async def current_revision(connection: AsyncConnection) -> str | None:
    """The migration the database is at (``None`` for an empty database).

    Read directly rather than through Alembic's ``MigrationContext``, which logs on every call: readiness
    probes ask this every few seconds.
    """
    exists = await connection.scalar(text("SELECT to_regclass('alembic_version') IS NOT NULL"))
    if not exists:
        return None
    version: str | None = await connection.scalar(text("SELECT version_num FROM alembic_version"))
    return version


async def migrate(engine: AsyncEngine, revision: str = "head") -> None:
    """Upgrade to ``revision`` under an advisory lock, so concurrent starts migrate once."""
    from alembic import command  # noqa: PLC0415  # see alembic_config

    def _upgrade(sync_conn: Connection) -> None:
        command.upgrade(alembic_config(connection=sync_conn), revision)

    async with engine.connect() as conn:
        await conn.execute(text("SELECT pg_advisory_lock(:id)"), {"id": _MIGRATION_LOCK_ID})
        try:
            before = await current_revision(conn)
            await conn.run_sync(_upgrade)
            after = await current_revision(conn)
            await conn.commit()
            if after != before:
                log.info("database_migrated", from_revision=before, to_revision=after)
        except BaseException:
            # a failed migration (a lock timeout: 0045, 0047) leaves its transaction aborted: the unlock below would
            # fail in it, hiding the migration's own error and keeping the lock on the pooled connection
            await conn.rollback()
            raise
        finally:
            await conn.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": _MIGRATION_LOCK_ID})
            await conn.commit()


async def downgrade(engine: AsyncEngine, revision: str) -> None:
    """Downgrade to ``revision`` (tests and emergencies)."""
    from alembic import command  # noqa: PLC0415  # see alembic_config

    def _downgrade(sync_conn: Connection) -> None:
        command.downgrade(alembic_config(connection=sync_conn), revision)

    async with engine.connect() as conn:
        await conn.run_sync(_downgrade)
        await conn.commit()
