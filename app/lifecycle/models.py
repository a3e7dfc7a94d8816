"""The re-permission links: one per consent period, only the hash of its token stored."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import Index, LargeBinary, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.lib.orm import Base, CreatedAt, TenantKey, UUIDPrimaryKey, tenant_key


class Repermission(UUIDPrimaryKey, TenantKey, CreatedAt, Base):
    """A "keep me subscribed" link sent before a consent's end.

    ``period_since`` is the consent's ``since`` when the link was made: one link per consent period (unique), so
    the sweep never queues a second message for the same period; a renewal starts a new period. The token is
    usable until ``ends_at`` (the consent's end), once.
    """

    __tablename__ = "repermissions"

    consent_id: Mapped[uuid.UUID]
    contact_point_id: Mapped[uuid.UUID]
    purpose_id: Mapped[uuid.UUID]
    period_since: Mapped[datetime]
    ends_at: Mapped[datetime]
    token_hash: Mapped[bytes] = mapped_column(LargeBinary)
    message_id: Mapped[uuid.UUID | None]
    """The message the link went out in. No foreign key since migration 0040: ``ON DELETE SET NULL`` through a key
    that includes ``workspace_id`` is what Citus cannot do, and a message goes only with its contact (whose
    re-permissions the same erasure deletes) or with its workspace."""
    renewed_at: Mapped[datetime | None]
    renewed_event_id: Mapped[uuid.UUID | None]

    __table_args__ = (
        UniqueConstraint("consent_id", "period_since", "workspace_id", name="uq_repermissions_consent_id_period_since"),
        # unique per workspace for Citus (256 random bits are unique anyway); found by the hash alone
        UniqueConstraint("token_hash", "workspace_id", name="uq_repermissions_token_hash"),
        tenant_key("consent_id", "consents", ondelete="CASCADE"),
        tenant_key("contact_point_id", "contact_points", ondelete="CASCADE"),
        tenant_key("purpose_id", "purposes", ondelete="CASCADE"),
        Index("ix_repermissions_contact_point_id", "contact_point_id"),
    )
