"""All SQL of the imports: the temporary table a Robinson list's keys are copied into.

Imports own no table: what they record goes through the ledger, whose repository reads this temporary table
(:data:`KEYS_TABLE`) to suppress its keys and to match known addresses without passing millions of parameters.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Sequence
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from app.imports.robinson_rows import COPY_HEADER, COPY_TRAILER

#: The session's temporary table of a list's keys, dropped at commit.
KEYS_TABLE = "robinson_import"
_COLUMNS = ["key", "key_version"]


async def new_keys_table(session: AsyncSession) -> Any:
    """An empty :data:`KEYS_TABLE` (``key bytea, key_version int``) in the session's transaction.

    Returns the driver (asyncpg) connection to :func:`copy_key_rows` into, on the session's own connection.
    """
    await session.execute(
        text(f"CREATE TEMP TABLE IF NOT EXISTS {KEYS_TABLE} (key bytea, key_version int) ON COMMIT DROP")
    )
    await session.execute(text(f"TRUNCATE {KEYS_TABLE}"))
    raw = await (await session.connection()).get_raw_connection()
    driver = raw.driver_connection
    assert driver is not None
    return driver


async def copy_key_rows(driver: Any, rows: Sequence[bytes]) -> None:
    """Append rows in binary ``COPY`` format (:class:`~app.imports.robinson_rows.KeyMaker`'s) to :data:`KEYS_TABLE`."""

    async def source() -> AsyncIterator[bytes]:
        yield b"".join(rows)

    await copy_key_stream(driver, source())


async def copy_key_stream(driver: Any, rows: AsyncIterable[bytes]) -> None:
    """:func:`copy_key_rows` of rows that arrive over time (from worker processes), in one ``COPY``."""

    async def source() -> AsyncIterator[bytes]:
        yield COPY_HEADER
        async for data in rows:
            yield data
        yield COPY_TRAILER

    # (bytes given as they are would be taken for a file name by asyncpg: always an iterator)
    await driver.copy_to_table(KEYS_TABLE, source=source(), columns=_COLUMNS, format="binary")


async def clear_keys(driver: Any) -> None:
    """Empty :data:`KEYS_TABLE` (keys copied from a read that is dropped)."""
    await driver.execute(f"TRUNCATE {KEYS_TABLE}")


async def analyze_keys(session: AsyncSession) -> None:
    """Give :data:`KEYS_TABLE` statistics (a temporary table has none) before it is grouped and joined.

    No index: the joins against it are made so that they need none (the ledger's repository joins it without
    nested loops, one pass over the list, however few rows the planner believes the other side has; an index
    cost 1.7 s of a million-row import, docs/benchmarks.md). The statistics choose a sort over a hash for the
    grouping of a million distinct keys.
    """
    await session.execute(text(f"ANALYZE {KEYS_TABLE}"))
