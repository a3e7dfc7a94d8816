"""Preference links: only their hash, bound to one contact (and the address the link was mailed to)."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, LargeBinary, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.lib.orm import Base, CreatedAt, UUIDPrimaryKey


class PreferenceLink(UUIDPrimaryKey, CreatedAt, Base):
    """One link to a contact's preference centre: 256 random bits, of which only ``SHA-256`` is kept.

    The link can only read and change that contact's preferences, in its workspace, until it expires.
    ``contact_point_id`` is the address the link was mailed to, when it was: the link then proves control of that
    address (and of no other).
    """

    __tablename__ = "preference_links"

    workspace_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    contact_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"), index=True)
    contact_point_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("contact_points.id", ondelete="CASCADE"))
    token_hash: Mapped[bytes] = mapped_column(LargeBinary, unique=True)
    issued_by: Mapped[str] = mapped_column(Text)
    expires_at: Mapped[datetime]
