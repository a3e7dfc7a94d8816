"""The tables of the shared plumbing: stored idempotent answers, rate-limit counters, provider callbacks seen.

They belong to no feature: any package may take a rate limit or deduplicate a provider's callback, through
:mod:`app.lib.repository`.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Identity, Index, Integer, LargeBinary, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.lib.orm import Base, TenantKey, UUIDPrimaryKey


class IdempotencyKey(Base):
    """A claimed ``Idempotency-Key``, with the first answer once it is known."""

    __tablename__ = "idempotency_keys"

    workspace_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(Text, primary_key=True)
    fingerprint: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime]
    completed_at: Mapped[datetime | None]
    status: Mapped[int | None] = mapped_column(Integer)
    headers: Mapped[str | None] = mapped_column(Text)
    body: Mapped[bytes | None] = mapped_column(LargeBinary)


class RateLimitHit(TenantKey, Base):
    """One counted event (e.g. a confirmation mail sent) under a keyed hash of an address or client IP."""

    __tablename__ = "rate_limit_hits"

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    key: Mapped[bytes] = mapped_column(LargeBinary)
    at: Mapped[datetime]

    __table_args__ = (Index("ix_rate_limit_hits_workspace_key_at", "workspace_id", "key", "at"),)


class ProviderCallback(UUIDPrimaryKey, TenantKey, Base):
    """A provider's delivery-status callback or feedback event by (message id, status): each is processed once."""

    __tablename__ = "provider_callbacks"

    provider: Mapped[str] = mapped_column(Text)
    message_sid: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(Text)
    error_code: Mapped[str | None] = mapped_column(Text)
    received_at: Mapped[datetime]

    __table_args__ = (UniqueConstraint("workspace_id", "provider", "message_sid", "status"),)
