"""Confirmation tokens: only their hash, with the mail's proof."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import Index, LargeBinary, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from app.lib.orm import Base, CreatedAt, TenantKey, UUIDPrimaryKey, tenant_key


class ConfirmationToken(UUIDPrimaryKey, TenantKey, CreatedAt, Base):
    """One confirmation mail's link: single use, expires, replaced by a newer mail for the same signup.

    Only ``SHA-256(token)`` is stored; the token itself exists only in the mail. The mail's proof (Message-ID,
    send time, the relay's answer) is kept here next to it (CHANNEL_RULES.md §1.2).
    """

    __tablename__ = "confirmation_tokens"

    contact_point_id: Mapped[uuid.UUID]
    purpose_id: Mapped[uuid.UUID]
    notice_id: Mapped[uuid.UUID | None]
    token_hash: Mapped[bytes] = mapped_column(LargeBinary)
    locale: Mapped[str] = mapped_column(Text)
    expires_at: Mapped[datetime]
    mail_message_id: Mapped[str | None] = mapped_column(Text)
    mail_sent_at: Mapped[datetime | None]
    mail_response: Mapped[str | None] = mapped_column(Text)
    used_at: Mapped[datetime | None]
    superseded_at: Mapped[datetime | None]
    lapsed_at: Mapped[datetime | None]

    __table_args__ = (
        # unique per workspace for Citus (256 random bits are unique anyway); found by the hash alone
        UniqueConstraint("token_hash", "workspace_id", name="uq_confirmation_tokens_token_hash"),
        tenant_key("contact_point_id", "contact_points", ondelete="CASCADE"),
        tenant_key("purpose_id", "purposes", ondelete="CASCADE"),
        tenant_key("notice_id", "notices", ondelete="RESTRICT"),
        Index("ix_confirmation_tokens_point_purpose", "contact_point_id", "purpose_id"),
        # what the lapse sweep scans: open tokens by expiry
        Index(
            "ix_confirmation_tokens_open_expiry",
            "expires_at",
            postgresql_where=text("used_at IS NULL AND superseded_at IS NULL AND lapsed_at IS NULL"),
        ),
    )
