"""Purpose operations."""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from app.lib.errors import Conflict
from app.purposes import repository
from app.purposes.models import Purpose


async def create_purpose(session: AsyncSession, workspace_id: uuid.UUID, key: str, name: str, kind: str) -> Purpose:
    """Create a purpose; 409 ``purpose_exists`` when the key is taken in this workspace."""
    purpose = await repository.insert_purpose(session, workspace_id, key, name, kind)
    if purpose is None:
        raise Conflict(f"A purpose with key '{key}' already exists.", code="purpose_exists")
    return purpose
