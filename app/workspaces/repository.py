"""All SQL about workspaces and API keys."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg
from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.lib.auth import Caller, OperatorPrincipal, Principal
from app.workspaces.models import ApiKey, SenderIdentity, Workspace


async def add_workspace(session: AsyncSession, name: str) -> Workspace:
    """Insert a workspace."""
    workspace = Workspace(name=name)
    session.add(workspace)
    await session.flush()
    await session.refresh(workspace)
    return workspace


async def get_workspace(session: AsyncSession, workspace_id: uuid.UUID) -> Workspace | None:
    """A workspace by id."""
    return await session.get(Workspace, workspace_id)


async def lock_workspace(session: AsyncSession, workspace_id: uuid.UUID) -> Workspace | None:
    """The workspace row, locked until commit (settings written once by concurrent first uses)."""
    return await session.scalar(
        select(Workspace)
        .where(Workspace.id == workspace_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )


async def add_api_key(session: AsyncSession, key: ApiKey) -> ApiKey:
    """Insert an API key."""
    session.add(key)
    await session.flush()
    await session.refresh(key)
    return key


async def list_api_keys(session: AsyncSession, workspace_id: uuid.UUID) -> Sequence[ApiKey]:
    """The workspace's keys, oldest first."""
    result = await session.scalars(
        select(ApiKey).where(ApiKey.workspace_id == workspace_id).order_by(ApiKey.created_at, ApiKey.id)
    )
    return result.all()


_ACTIVE_KEY = (
    "SELECT id, workspace_id, scopes FROM api_keys WHERE secret_hash = $1 AND revoked_at IS NULL "
    "UNION ALL SELECT id, NULL, NULL FROM operator_keys WHERE secret_hash = $1 AND revoked_at IS NULL"
)


async def find_active_key(driver: asyncpg.Connection, secret_hash: bytes) -> Caller | None:
    """The principal of an unrevoked key by its hash, a workspace's or the operator's.

    Every authenticated request (not cached) asks: plain asyncpg, one index probe in each key table.
    """
    row = await driver.fetchrow(_ACTIVE_KEY, secret_hash)
    if row is None:
        return None
    if row["workspace_id"] is None:
        return OperatorPrincipal(operator_key_id=row["id"])
    return Principal(workspace_id=row["workspace_id"], api_key_id=row["id"], scopes=frozenset(row["scopes"]))


async def revoke_api_key(session: AsyncSession, workspace_id: uuid.UUID, key_id: uuid.UUID, at: datetime) -> bool:
    """Revoke a key of the workspace; False if there is no such key (or it is another workspace's)."""
    result = await session.execute(
        update(ApiKey)
        .where(ApiKey.id == key_id, ApiKey.workspace_id == workspace_id)
        .values(revoked_at=func.coalesce(ApiKey.revoked_at, at))  # a second revoke keeps the first time
        .returning(ApiKey.id)
    )
    return result.scalar_one_or_none() is not None


async def save_settings(session: AsyncSession, workspace_id: uuid.UUID, settings: dict[str, Any]) -> None:
    """Replace the workspace's settings JSON."""
    await session.execute(update(Workspace).where(Workspace.id == workspace_id).values(settings=settings))


async def workspaces_by_id(session: AsyncSession, workspace_ids: Sequence[uuid.UUID]) -> Sequence[Workspace]:
    """Workspaces by id."""
    if not workspace_ids:
        return []
    return (await session.scalars(select(Workspace).where(Workspace.id.in_(workspace_ids)))).all()


async def claim_senders(session: AsyncSession, workspace_id: uuid.UUID, identities: set[str]) -> set[str]:
    """Make ``identities`` the workspace's senders; returns those another workspace holds (nothing claimed then).

    Senders the workspace no longer names are released first. A claim another transaction is writing waits for
    it (the primary key), so two workspaces racing for one number cannot both get it.
    """
    await session.execute(
        delete(SenderIdentity).where(
            SenderIdentity.workspace_id == workspace_id, SenderIdentity.identity.not_in(sorted(identities))
        )
    )
    if not identities:
        return set()
    await session.execute(
        insert(SenderIdentity)
        .values([{"identity": identity, "workspace_id": workspace_id} for identity in sorted(identities)])
        .on_conflict_do_nothing(index_elements=[SenderIdentity.identity])
    )
    taken = await session.scalars(
        select(SenderIdentity.identity).where(
            SenderIdentity.identity.in_(sorted(identities)), SenderIdentity.workspace_id != workspace_id
        )
    )
    return set(taken.all())


async def owns_sender(session: AsyncSession, workspace_id: uuid.UUID, identities: set[str]) -> bool:
    """Whether the workspace holds one of ``identities``."""
    if not identities:
        return False
    found = await session.scalar(
        select(SenderIdentity.identity)
        .where(SenderIdentity.workspace_id == workspace_id, SenderIdentity.identity.in_(sorted(identities)))
        .limit(1)
    )
    return found is not None


async def set_mail_domains(session: AsyncSession, workspace_id: uuid.UUID, domains: list[str] | None) -> None:
    """Replace the operator's list of mail domains (``None``: back to the default)."""
    await session.execute(update(Workspace).where(Workspace.id == workspace_id).values(mail_domains=domains))
