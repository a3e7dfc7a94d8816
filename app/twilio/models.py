"""Webhook bookkeeping: a retried delivery is answered from here and records nothing new."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.lib.orm import Base, TenantKey, UUIDPrimaryKey


class InboundMessage(UUIDPrimaryKey, TenantKey, Base):
    """An inbound message by provider id, with the reply it got (idempotency)."""

    __tablename__ = "inbound_messages"

    provider: Mapped[str] = mapped_column(Text)
    message_sid: Mapped[str] = mapped_column(Text)
    channel: Mapped[str] = mapped_column(Text)
    contact_point_id: Mapped[uuid.UUID | None]
    intent: Mapped[str] = mapped_column(Text)
    reply: Mapped[str] = mapped_column(Text)
    received_at: Mapped[datetime]

    __table_args__ = (UniqueConstraint("workspace_id", "provider", "message_sid"),)
