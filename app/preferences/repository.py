"""All SQL of the preference centre: its links.

A link is looked up by its hash alone (the token in the URL is the capability and names no workspace); every
other function takes the workspace's id.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.preferences.models import PreferenceLink


async def add_link(
    session: AsyncSession,
    workspace_id: uuid.UUID,
    *,
    contact_id: uuid.UUID,
    point_id: uuid.UUID | None,
    digest: bytes,
    issued_by: str,
    expires_at: datetime,
) -> PreferenceLink:
    """Insert a link (its hash only)."""
    row = PreferenceLink(
        workspace_id=workspace_id,
        contact_id=contact_id,
        contact_point_id=point_id,
        token_hash=digest,
        issued_by=issued_by,
        expires_at=expires_at,
    )
    session.add(row)
    await session.flush()
    return row


async def find_by_hash(session: AsyncSession, digest: bytes) -> PreferenceLink | None:
    """The link whose token hashes to ``digest``, if any."""
    found: PreferenceLink | None = await session.scalar(
        select(PreferenceLink).where(PreferenceLink.token_hash == digest)
    )
    return found


async def erase_links(
    session: AsyncSession, workspace_id: uuid.UUID, contact_id: uuid.UUID, point_ids: Sequence[uuid.UUID]
) -> int:
    """Delete the contact's links (also those bound to one of its addresses); answers how many."""
    conditions = PreferenceLink.contact_id == contact_id
    if point_ids:
        conditions = conditions | PreferenceLink.contact_point_id.in_(point_ids)
    result = await session.execute(
        delete(PreferenceLink).where(PreferenceLink.workspace_id == workspace_id, conditions)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]  # CursorResult of a DELETE
