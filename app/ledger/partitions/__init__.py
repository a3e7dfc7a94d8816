"""The ledger's monthly partitions (migration 0041): the coming months' are made ahead, by every process.

``consent_events`` is partitioned by month of ``recorded_at``, with a default partition that takes what no month
holds, so an append never fails for want of a partition. A month's partition is made while it is still ahead:
at start-up and then every hour, any process may call :func:`ensure_partitions` (one at a time: the database
function takes an advisory lock); a month already covered is left alone. A month whose events are already in the
default partition (the service was down for months) keeps them there: the ledger's rows are never moved.

Its one statement is in :mod:`app.ledger.partitions.repository` (the SQL rule of the repositories); it can join the
ledger's repository.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from app.ledger.partitions import repository

#: This month and the next two: a month's partition exists two months before its first event.
MONTHS_AHEAD = 2

_PARTITION = re.compile(r"consent_events_(history|default|y\d{4}m\d{2})")


def is_partition(table: str) -> bool:
    """Whether ``table`` is one of the ledger's partitions: the models name only ``consent_events`` itself.

    Alembic's comparison of the models with the database leaves them out (``migrations/env.py``, the drift test).
    """
    return _PARTITION.fullmatch(table) is not None


def include_name(name: str | None, type_: str, parent_names: object) -> bool:  # noqa: ARG001  # Alembic's hook
    """Alembic's ``include_name``: every table but the ledger's partitions."""
    return type_ != "table" or name is None or not is_partition(name)


@dataclass(frozen=True, slots=True)
class Partitioned:
    """What one call did: the partitions made, and the months left in the default partition."""

    created: list[str]
    left_in_default: list[str]


async def ensure_partitions(session: AsyncSession, months_ahead: int = MONTHS_AHEAD) -> Partitioned:
    """Make the partitions of this month and the next ``months_ahead`` that no partition covers yet.

    Idempotent; in the caller's transaction (commit it to keep them). Waits at most 5 s for the ledger's lock.
    """
    found = await repository.ensure_partitions(session, months_ahead)
    return Partitioned(
        created=[name for name, created in found if created],
        left_in_default=[name for name, created in found if not created],
    )
