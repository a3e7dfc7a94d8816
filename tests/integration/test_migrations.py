"""Migrations: upgrade, downgrade and upgrade again on an empty database; no drift from the models."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.ext.asyncio import create_async_engine

from app.ledger.partitions import include_name
from app.lib.db import downgrade, head_revision, migrate
from app.models import metadata


async def test_upgrade_downgrade_upgrade_on_an_empty_database(pg_server):
    url = await pg_server.create_database("consent_migrations")
    engine = create_async_engine(url)
    try:
        await migrate(engine)
        async with engine.connect() as conn:
            tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
            version = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar_one()
        assert {"workspaces", "api_keys", "purposes"} <= tables
        assert version == head_revision()

        await downgrade(engine, "base")
        async with engine.connect() as conn:
            tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
        assert tables <= {"alembic_version"}

        await migrate(engine)
        async with engine.connect() as conn:
            version = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar_one()
        assert version == head_revision()
    finally:
        await engine.dispose()
        await pg_server.drop_database(url)


async def test_models_and_migrations_do_not_drift(engine):
    def diff(sync_conn):
        context = MigrationContext.configure(sync_conn, opts={"compare_type": True, "include_name": include_name})
        return compare_metadata(context, metadata)

    async with engine.connect() as conn:
        changes = await conn.run_sync(diff)
    assert changes == [], f"models differ from migrations; generate a migration: {changes}"
