"""All SQL of the imports: the temporary table a Robinson list's keys are copied into.

Imports own no table: what they record goes through the ledger, whose repository reads this temporary table
(:data:`KEYS_TABLE`) to suppress its keys and to match known addresses without passing millions of parameters.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

#: The session's temporary table of a list's keys, dropped at commit.
KEYS_TABLE = "robinson_import"
_COLUMNS = ["key", "key_version"]


async def new_keys_table(session: AsyncSession) -> Any:
    """An empty :data:`KEYS_TABLE` (``key bytea, key_version int``) in the session's transaction.

    Returns the driver (asyncpg) connection to :func:`copy_keys` into, on the session's own connection.
    """
    await session.execute(
        text(f"CREATE TEMP TABLE IF NOT EXISTS {KEYS_TABLE} (key bytea, key_version int) ON COMMIT DROP")
    )
    await session.execute(text(f"TRUNCATE {KEYS_TABLE}"))
    raw = await (await session.connection()).get_raw_connection()
    driver = raw.driver_connection
    assert driver is not None
    return driver


async def copy_keys(driver: Any, rows: Sequence[tuple[bytes, int]]) -> None:
    """Append ``(key, key_version)`` rows to :data:`KEYS_TABLE` with COPY."""
    await driver.copy_records_to_table(KEYS_TABLE, records=rows, columns=_COLUMNS)


async def analyze_keys(session: AsyncSession) -> None:
    """Index :data:`KEYS_TABLE` by key and give it statistics (a temporary table has none) before it is joined.

    The index makes the match robust to the planner's view of ``contact_points``: right after a load of new
    print addresses (the statistics not yet updated) it estimated one address and joined each of 20,000 with a
    scan of the whole list, 117 s for 100,000 rows; with the index each address costs a lookup.
    """
    await session.execute(text(f"CREATE INDEX IF NOT EXISTS {KEYS_TABLE}_key ON {KEYS_TABLE} (key)"))
    await session.execute(text(f"ANALYZE {KEYS_TABLE}"))
