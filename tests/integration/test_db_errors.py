"""Database errors never carry the statement's values: they end up in logs, and the values name people."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from app.lib.db import Database


async def test_a_failed_statements_error_does_not_show_its_parameters(pg_server):
    url = await pg_server.create_database("consent_db_errors")
    database = Database.from_url(url, pool_size=1)
    try:
        async with database.sessionmaker() as session:
            await session.execute(text("CREATE TEMPORARY TABLE seen (address text PRIMARY KEY)"))
            insert = text("INSERT INTO seen VALUES (:address)")
            await session.execute(insert, {"address": "jane@example.com"})
            with pytest.raises(DBAPIError) as failed:  # a unique violation, as a repeated sign-up race would give
                await session.execute(insert, {"address": "jane@example.com"})
        assert "jane@example.com" not in str(failed.value)
        assert "parameters hidden" in str(failed.value)
    finally:
        assert database.engine is not None
        await database.engine.dispose()
        await pg_server.drop_database(url)
