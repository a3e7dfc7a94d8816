"""Purposes: what messages are for, marketing or transactional."""

from __future__ import annotations

import uuid

from sqlalchemy import CheckConstraint, ForeignKey, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.lib.orm import Base, CreatedAt, UUIDPrimaryKey


class Purpose(UUIDPrimaryKey, CreatedAt, Base):
    """A purpose of a workspace (``newsletter``, ``order_updates``)."""

    __tablename__ = "purposes"

    workspace_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(Text)
    name: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(Text)

    __table_args__ = (
        UniqueConstraint("workspace_id", "key"),
        CheckConstraint("kind IN ('marketing', 'transactional')", name="kind_known"),
        CheckConstraint("key ~ '^[a-z][a-z0-9_]{0,62}$'", name="key_format"),
        CheckConstraint("length(name) BETWEEN 1 AND 200", name="name_length"),
    )
