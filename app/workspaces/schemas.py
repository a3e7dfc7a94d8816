"""API types of workspaces and API keys."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

import msgspec

from app.lib.auth import Scope

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200, description="A label people recognise.")]


class ApiKeyCreate(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A new API key for the caller's workspace."""

    name: Name
    scopes: Annotated[list[Scope], msgspec.Meta(min_length=1, max_length=6)]


class ApiKeyOut(msgspec.Struct, kw_only=True):
    """An API key as listed (never the secret)."""

    id: uuid.UUID
    name: str
    scopes: list[Scope]
    display_prefix: str
    created_at: datetime
    revoked_at: datetime | None


class ApiKeyCreated(ApiKeyOut, kw_only=True):
    """A freshly created API key: the secret is shown this once and cannot be recovered."""

    secret: str


class WorkspaceOut(msgspec.Struct, kw_only=True):
    """A workspace."""

    id: uuid.UUID
    name: str
    created_at: datetime
