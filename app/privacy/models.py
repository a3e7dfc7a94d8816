"""The privacy package's own table: the record of every erasure."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import CheckConstraint, Index, Text, UniqueConstraint, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from app.lib.orm import Base, TenantKey, UUIDPrimaryKey


class Erasure(UUIDPrimaryKey, TenantKey, Base):
    """The record of one erasure (GDPR Art. 17), kept as accountability evidence: when, by whom, what went.

    It names the erased contact only by its (now meaningless) id, the request by the caller's reference, and
    holds the report the request was answered with; no personal data.
    """

    __tablename__ = "erasures"

    contact_id: Mapped[uuid.UUID]
    erased_at: Mapped[datetime]
    actor_type: Mapped[str] = mapped_column(Text)
    actor_id: Mapped[str | None] = mapped_column(Text)
    request_ref: Mapped[str | None] = mapped_column(Text)
    received_via: Mapped[str | None] = mapped_column(Text)
    report: Mapped[dict[str, Any]] = mapped_column(JSONB)

    __table_args__ = (UniqueConstraint("workspace_id", "contact_id"),)


class ErasureRequest(UUIDPrimaryKey, TenantKey, Base):
    """An erasure asked for on the preference centre (Art. 17), and what became of it.

    Executed at once, or, where the workspace reviews erasures (``erasure_review``), ``pending`` until an ``admin``
    key executes or rejects it; the answer is due within one month (Art. 12(3)). ``evidence`` (IP address, user
    agent of the request) is kept only while the request is pending: an executed request carries it into the
    ledger's ``erasure`` event, a rejected one drops it. The contact is named by its id only, which means nothing
    once the contact is erased.
    """

    __tablename__ = "erasure_requests"

    contact_id: Mapped[uuid.UUID] = mapped_column(index=True)
    requested_at: Mapped[datetime]
    due_at: Mapped[datetime]
    source: Mapped[str] = mapped_column(Text)
    link_id: Mapped[uuid.UUID | None]
    status: Mapped[str] = mapped_column(Text)
    decided_at: Mapped[datetime | None]
    decided_by: Mapped[uuid.UUID | None]
    """The ``admin`` key that executed or rejected it (none when executed at once)."""
    erasure_id: Mapped[uuid.UUID | None]
    evidence: Mapped[dict[str, Any] | None] = mapped_column(JSONB)

    __table_args__ = (
        CheckConstraint("status IN ('pending', 'done', 'rejected')", name="status"),
        # one open request per person: a second click finds the first
        Index(
            "uq_erasure_requests_pending",
            "workspace_id",
            "contact_id",
            unique=True,
            postgresql_where=text("status = 'pending'"),
        ),
        Index("ix_erasure_requests_workspace_id_status_due_at", "workspace_id", "status", "due_at"),
    )
