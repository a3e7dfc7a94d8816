"""Confirmation tokens: only their hash, with the mail's proof."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, Index, LargeBinary, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from app.lib.orm import Base, CreatedAt, UUIDPrimaryKey


class ConfirmationToken(UUIDPrimaryKey, CreatedAt, Base):
    """One confirmation mail's link: single use, expires, replaced by a newer mail for the same signup.

    Only ``SHA-256(token)`` is stored; the token itself exists only in the mail. The mail's proof (Message-ID,
    send time, the relay's answer) is kept here next to it (CHANNEL_RULES.md §1.2).
    """

    __tablename__ = "confirmation_tokens"

    workspace_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    contact_point_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("contact_points.id", ondelete="CASCADE"))
    purpose_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("purposes.id", ondelete="CASCADE"))
    notice_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("notices.id", ondelete="RESTRICT"))
    token_hash: Mapped[bytes] = mapped_column(LargeBinary, unique=True)
    locale: Mapped[str] = mapped_column(Text)
    expires_at: Mapped[datetime]
    mail_message_id: Mapped[str | None] = mapped_column(Text)
    mail_sent_at: Mapped[datetime | None]
    mail_response: Mapped[str | None] = mapped_column(Text)
    used_at: Mapped[datetime | None]
    superseded_at: Mapped[datetime | None]
    lapsed_at: Mapped[datetime | None]

    __table_args__ = (
        Index("ix_confirmation_tokens_point_purpose", "contact_point_id", "purpose_id"),
        # what the lapse sweep scans: open tokens by expiry
        Index(
            "ix_confirmation_tokens_open_expiry",
            "expires_at",
            postgresql_where=text("used_at IS NULL AND superseded_at IS NULL AND lapsed_at IS NULL"),
        ),
    )
