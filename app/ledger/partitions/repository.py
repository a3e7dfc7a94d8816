"""The SQL of the ledger's partitions: one call of the database function migration 0041 made."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession


async def ensure_partitions(session: AsyncSession, months_ahead: int) -> list[tuple[str, bool]]:
    """(partition, made) for each month from now to ``months_ahead`` on that no partition covered yet.

    ``made`` is false for a month whose events wait in the default partition (it is not made then).
    """
    rows = await session.execute(
        text("SELECT partition_name, created FROM consent_events_ensure_partitions(:months)"), {"months": months_ahead}
    )
    return [(str(row.partition_name), bool(row.created)) for row in rows]
