"""Preference links: only their hash, bound to one contact (and the address the link was mailed to)."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import LargeBinary, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.lib.orm import Base, CreatedAt, TenantKey, UUIDPrimaryKey, tenant_key


class PreferenceLink(UUIDPrimaryKey, TenantKey, CreatedAt, Base):
    """One link to a contact's preference centre: 256 random bits, of which only ``SHA-256`` is kept.

    The link can only read and change that contact's preferences, in its workspace, until it expires.
    ``contact_point_id`` is the address the link was mailed to, when it was: the link then proves control of that
    address (and of no other).
    """

    __tablename__ = "preference_links"

    contact_id: Mapped[uuid.UUID] = mapped_column(index=True)
    contact_point_id: Mapped[uuid.UUID | None]
    token_hash: Mapped[bytes] = mapped_column(LargeBinary)
    issued_by: Mapped[str] = mapped_column(Text)
    expires_at: Mapped[datetime]

    __table_args__ = (
        # unique per workspace for Citus (256 random bits are unique anyway); found by the hash alone
        UniqueConstraint("token_hash", "workspace_id", name="uq_preference_links_token_hash"),
        tenant_key("contact_id", "contacts", ondelete="CASCADE"),
        tenant_key("contact_point_id", "contact_points", ondelete="CASCADE"),
    )
