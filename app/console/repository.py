"""All SQL of the console: login links, sessions (each read joined to its API key) and chain checks."""

from __future__ import annotations

import uuid
from collections.abc import Collection
from datetime import datetime

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.console.models import ChainCheck, ConsoleLink, ConsoleSession
from app.ledger.models import ContactPoint
from app.workspaces.models import ApiKey


async def add_link(
    session: AsyncSession, workspace_id: uuid.UUID, api_key_id: uuid.UUID, token_hash: bytes, expires_at: datetime
) -> None:
    """Store a new login link (its hash)."""
    session.add(
        ConsoleLink(workspace_id=workspace_id, api_key_id=api_key_id, token_hash=token_hash, expires_at=expires_at)
    )
    await session.flush()


async def find_link(session: AsyncSession, token_hash: bytes) -> ConsoleLink | None:
    """A link by its hash (used or not)."""
    return await session.scalar(select(ConsoleLink).where(ConsoleLink.token_hash == token_hash))


async def consume_link(session: AsyncSession, token_hash: bytes, now: datetime) -> ConsoleLink | None:
    """Mark an unused, unexpired link used and return it; ``None`` if it is unknown, used or expired.

    One ``UPDATE … WHERE used_at IS NULL``: of two concurrent redemptions only one finds the row unused.
    """
    return await session.scalar(
        update(ConsoleLink)
        .where(ConsoleLink.token_hash == token_hash, ConsoleLink.used_at.is_(None), ConsoleLink.expires_at > now)
        .values(used_at=now)
        .returning(ConsoleLink)
    )


async def active_key_scopes(
    session: AsyncSession, workspace_id: uuid.UUID, api_key_id: uuid.UUID
) -> Collection[str] | None:
    """The scopes of an unrevoked key of the workspace, else ``None``."""
    scopes: list[str] | None = await session.scalar(
        select(ApiKey.scopes).where(
            ApiKey.id == api_key_id, ApiKey.workspace_id == workspace_id, ApiKey.revoked_at.is_(None)
        )
    )
    return scopes


async def add_session(session: AsyncSession, row: ConsoleSession) -> None:
    """Store a new console session (its hash)."""
    session.add(row)
    await session.flush()


async def touch_session(
    session: AsyncSession, id_hash: bytes, now: datetime, idle_since: datetime
) -> ConsoleSession | None:
    """The live session of this hash, its idle clock restarted.

    ``None`` if it is unknown, idle too long, past its end, or its API key is revoked (or not of its workspace).
    """
    key_active = (
        select(ApiKey.id)
        .where(
            ApiKey.id == ConsoleSession.api_key_id,
            ApiKey.workspace_id == ConsoleSession.workspace_id,
            ApiKey.revoked_at.is_(None),
        )
        .exists()
    )
    return await session.scalar(
        update(ConsoleSession)
        .where(
            ConsoleSession.id_hash == id_hash,
            ConsoleSession.last_seen_at > idle_since,
            ConsoleSession.expires_at > now,
            key_active,
        )
        .values(last_seen_at=now)
        .returning(ConsoleSession)
    )


async def delete_session(session: AsyncSession, id_hash: bytes) -> None:
    """End a session (sign out)."""
    await session.execute(delete(ConsoleSession).where(ConsoleSession.id_hash == id_hash))


async def prune(session: AsyncSession, links_before: datetime, sessions_idle_before: datetime, now: datetime) -> None:
    """Forget links expired before ``links_before`` and sessions that are over."""
    await session.execute(delete(ConsoleLink).where(ConsoleLink.expires_at < links_before))
    await session.execute(
        delete(ConsoleSession).where(
            (ConsoleSession.last_seen_at < sessions_idle_before) | (ConsoleSession.expires_at < now)
        )
    )


async def add_chain_check(session: AsyncSession, check: ChainCheck) -> None:
    """Record a verification of the workspace's chain."""
    session.add(check)
    await session.flush()


async def last_chain_check(session: AsyncSession, workspace_id: uuid.UUID) -> ChainCheck | None:
    """The newest verification of the workspace's chain."""
    return await session.scalar(
        select(ChainCheck)
        .where(ChainCheck.workspace_id == workspace_id)
        .order_by(ChainCheck.checked_at.desc())
        .limit(1)
    )


async def contact_id_by_email_any_case(
    session: AsyncSession, workspace_id: uuid.UUID, normalised: str
) -> uuid.UUID | None:
    """A contact whose email address equals ``normalised`` ignoring case.

    The local part keeps its case when stored; this is the lookup's fallback after the exact, indexed match.
    """
    found: uuid.UUID | None = await session.scalar(
        select(ContactPoint.contact_id)
        .where(
            ContactPoint.workspace_id == workspace_id,
            ContactPoint.channel == "email",
            func.lower(ContactPoint.value) == normalised.lower(),
        )
        .order_by(ContactPoint.created_at)
        .limit(1)
    )
    return found
