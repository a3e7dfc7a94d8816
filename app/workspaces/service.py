"""Workspace and API-key operations (used by the API and the CLI)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from sqlalchemy.ext.asyncio import AsyncSession

from app.lib.auth import Scope, generate_key
from app.lib.errors import NotFound
from app.lib.orm import utcnow
from app.workspaces import repository
from app.workspaces.models import ApiKey, Workspace


async def create_workspace(session: AsyncSession, name: str) -> Workspace:
    """Create a workspace (the caller commits)."""
    return await repository.add_workspace(session, name)


async def create_api_key(
    session: AsyncSession, workspace_id: uuid.UUID, name: str, scopes: Iterable[Scope]
) -> tuple[ApiKey, str]:
    """Create a key; returns the row and the secret, which is not stored and cannot be shown again."""
    if await repository.get_workspace(session, workspace_id) is None:
        raise NotFound(f"Workspace {workspace_id} does not exist.", code="workspace_not_found")
    secret, secret_hash = generate_key()
    key = ApiKey(
        workspace_id=workspace_id,
        name=name,
        display_prefix=secret[:10],
        secret_hash=secret_hash,
        scopes=sorted({Scope(scope).value for scope in scopes}),
    )
    return await repository.add_api_key(session, key), secret


async def revoke_api_key(session: AsyncSession, workspace_id: uuid.UUID, key_id: uuid.UUID) -> None:
    """Revoke a key; 404 for unknown ids and for ids of other workspaces alike."""
    if not await repository.revoke_api_key(session, workspace_id, key_id, utcnow()):
        raise NotFound("No API key with this id.", code="api_key_not_found")
