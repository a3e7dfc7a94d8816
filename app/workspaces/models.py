"""Workspaces (a brand / data controller) and their API keys."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import CheckConstraint, ForeignKey, Index, LargeBinary, String, Text, text
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, mapped_column

from app.lib.auth import Scope
from app.lib.orm import Base, CreatedAt, UUIDPrimaryKey

_SCOPES_SQL = ", ".join(f"'{scope.value}'" for scope in Scope)


class Workspace(UUIDPrimaryKey, CreatedAt, Base):
    """A brand or data controller; every other row belongs to exactly one."""

    __tablename__ = "workspaces"

    name: Mapped[str] = mapped_column(Text)
    settings: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))

    __table_args__ = (CheckConstraint("length(name) BETWEEN 1 AND 200", name="name_length"),)


class ApiKey(UUIDPrimaryKey, CreatedAt, Base):
    """An API key: only the SHA-256 of the secret is stored."""

    __tablename__ = "api_keys"

    workspace_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(Text)
    display_prefix: Mapped[str] = mapped_column(String(12))
    secret_hash: Mapped[bytes] = mapped_column(LargeBinary, unique=True)
    scopes: Mapped[list[str]] = mapped_column(ARRAY(Text))
    revoked_at: Mapped[datetime | None]

    __table_args__ = (
        CheckConstraint("octet_length(secret_hash) = 32", name="secret_hash_sha256"),
        CheckConstraint("cardinality(scopes) >= 1", name="scopes_not_empty"),
        CheckConstraint(f"scopes <@ ARRAY[{_SCOPES_SQL}]::text[]", name="scopes_known"),
        Index("ix_api_keys_workspace_id", "workspace_id"),
    )
