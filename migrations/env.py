"""Alembic environment: runs on a connection handed in by ``app.lib.db`` or, from the alembic CLI, on its own."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from app.ledger.partitions import include_name
from app.models import metadata

config = context.config


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        compare_type=True,
        include_name=include_name,  # the ledger's monthly partitions are the database's, not the models'
        transaction_per_migration=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_standalone() -> None:
    from app.settings import Settings  # noqa: PLC0415  # only the standalone CLI path needs settings

    url = Settings.from_env().database.url
    if url is None:
        raise SystemExit("DATABASE_URL is not set; use 'consent migrate' for the embedded database")
    engine = create_async_engine(url)
    async with engine.connect() as conn:
        await conn.run_sync(_run)
        await conn.commit()
    await engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (SQL script) migrations are not supported")

connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    asyncio.run(_run_standalone())
