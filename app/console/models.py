"""Login links and sessions of the console, and the audit page's chain checks. Only hashes of secrets are stored."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import Boolean, CheckConstraint, ForeignKey, Index, Integer, LargeBinary, Text, UniqueConstraint
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Mapped, mapped_column

from app.lib.orm import Base, CreatedAt, TenantKey, UUIDPrimaryKey


class ConsoleLink(UUIDPrimaryKey, TenantKey, CreatedAt, Base):
    """A single-use login link: 256 random bits, of which only the SHA-256 is kept; consumed by a ``POST``.

    It signs in as the API key that created it (its workspace, its scopes); deleted with that key.
    """

    __tablename__ = "console_links"

    api_key_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("api_keys.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[bytes] = mapped_column(LargeBinary)
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]

    __table_args__ = (
        # unique per workspace for Citus (256 random bits are unique anyway); found by the hash alone
        UniqueConstraint("token_hash", "workspace_id", name="uq_console_links_token_hash"),
        CheckConstraint("octet_length(token_hash) = 32", name="token_hash_sha256"),
    )


class ConsoleSession(UUIDPrimaryKey, TenantKey, CreatedAt, Base):
    """A signed-in browser: the cookie's SHA-256, the key it acts as (workspace, scopes) and its idle clock.

    Every request checks the key is still unrevoked; a session idle longer than the idle limit, or older than
    ``expires_at``, is over.
    """

    __tablename__ = "console_sessions"

    api_key_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("api_keys.id", ondelete="CASCADE"), index=True)
    id_hash: Mapped[bytes] = mapped_column(LargeBinary)
    scopes: Mapped[list[str]] = mapped_column(ARRAY(Text))
    last_seen_at: Mapped[datetime]
    expires_at: Mapped[datetime]

    __table_args__ = (
        UniqueConstraint("id_hash", "workspace_id", name="uq_console_sessions_id_hash"),
        CheckConstraint("octet_length(id_hash) = 32", name="id_hash_sha256"),
    )


class ChainCheck(UUIDPrimaryKey, TenantKey, Base):
    """One verification of a workspace's hash chain run from the console's audit page (the newest is shown)."""

    __tablename__ = "console_chain_checks"

    checked_at: Mapped[datetime]
    valid: Mapped[bool] = mapped_column(Boolean)
    events_checked: Mapped[int] = mapped_column(Integer)
    first_broken_seq: Mapped[int | None] = mapped_column(Integer)
    reason: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (Index("ix_console_chain_checks_workspace_id_checked_at", "workspace_id", "checked_at"),)
