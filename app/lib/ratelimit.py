"""Rate limits kept in PostgreSQL: counters under keyed hashes, shared by every process of the service.

A limit is ``count`` hits per sliding ``window``. Counters are stored under keyed hashes only (no address or IP in
clear text); an advisory lock per counter serialises concurrent takers, so two requests cannot both take the last
slot. Several counters are taken together or not at all (all are checked before any is counted).
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from app.lib import repository
from app.lib.errors import RateLimited

#: No limit looks back further than this; the sweep forgets older hits.
LONGEST_WINDOW = timedelta(days=31)


@dataclass(frozen=True, slots=True)
class Limit:
    """At most ``count`` hits within ``window``."""

    count: int
    window: timedelta


async def take(
    session: AsyncSession,
    workspace_id: uuid.UUID,
    counters: Sequence[tuple[bytes, Limit]],
    *,
    now: datetime,
    message: str,
    code: str,
) -> None:
    """Count one hit on every counter, or raise 429 (with ``Retry-After``) and count none if any is spent."""
    for key, limit in sorted(counters, key=lambda counter: counter[0]):  # one lock order: no deadlock
        await repository.lock_counter(session, key)
        recent = await repository.recent_hits(session, workspace_id, key, since=now - limit.window, limit=limit.count)
        if len(recent) >= limit.count:
            retry_after = max(1, math.ceil((recent[-1] + limit.window - now).total_seconds()))
            raise RateLimited(message, retry_after=retry_after, code=code)
    await repository.add_hits(session, workspace_id, [key for key, _ in counters], now)


async def prune(session: AsyncSession, now: datetime) -> None:
    """Forget hits no limit can still see."""
    await repository.prune_hits(session, now - LONGEST_WINDOW)
