"""The privacy package's own table: the record of every erasure."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Text, UniqueConstraint
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from app.lib.orm import Base, UUIDPrimaryKey


class Erasure(UUIDPrimaryKey, Base):
    """The record of one erasure (GDPR Art. 17), kept as accountability evidence: when, by whom, what went.

    It names the erased contact only by its (now meaningless) id, the request by the caller's reference, and
    holds the report the request was answered with; no personal data.
    """

    __tablename__ = "erasures"

    workspace_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    contact_id: Mapped[uuid.UUID]
    erased_at: Mapped[datetime]
    actor_type: Mapped[str] = mapped_column(Text)
    actor_id: Mapped[str | None] = mapped_column(Text)
    request_ref: Mapped[str | None] = mapped_column(Text)
    received_via: Mapped[str | None] = mapped_column(Text)
    report: Mapped[dict[str, Any]] = mapped_column(JSONB)

    __table_args__ = (UniqueConstraint("workspace_id", "contact_id"),)
