"""The re-permission links: one per consent period, only the hash of its token stored."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, Index, LargeBinary, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.lib.orm import Base, CreatedAt, UUIDPrimaryKey


class Repermission(UUIDPrimaryKey, CreatedAt, Base):
    """A "keep me subscribed" link sent before a consent's end.

    ``period_since`` is the consent's ``since`` when the link was made: one link per consent period (unique), so
    the sweep never queues a second message for the same period; a renewal starts a new period. The token is
    usable until ``ends_at`` (the consent's end), once.
    """

    __tablename__ = "repermissions"

    workspace_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    consent_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("consents.id", ondelete="CASCADE"))
    contact_point_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("contact_points.id", ondelete="CASCADE"))
    purpose_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("purposes.id", ondelete="CASCADE"))
    period_since: Mapped[datetime]
    ends_at: Mapped[datetime]
    token_hash: Mapped[bytes] = mapped_column(LargeBinary, unique=True)
    message_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("messages.id", ondelete="SET NULL"))
    renewed_at: Mapped[datetime | None]
    renewed_event_id: Mapped[uuid.UUID | None]

    __table_args__ = (
        UniqueConstraint("consent_id", "period_since"),
        Index("ix_repermissions_contact_point_id", "contact_point_id"),
    )
