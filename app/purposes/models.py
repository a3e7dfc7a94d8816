"""Purposes: what messages are for, marketing or transactional."""

from __future__ import annotations

import uuid

from sqlalchemy import CheckConstraint, Integer, Text, UniqueConstraint, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Mapped, mapped_column

from app.domain.validity import span_check_sql
from app.lib.orm import Base, CreatedAt, TenantKey, UUIDPrimaryKey, tenant_key

_SPANS = ("validity", "inactivity", "repermission_before")


class Purpose(UUIDPrimaryKey, TenantKey, CreatedAt, Base):
    """A purpose of a workspace (``newsletter``, ``order_updates``)."""

    __tablename__ = "purposes"

    key: Mapped[str] = mapped_column(Text)
    name: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(Text)
    #: Product categories whose buyers may get this purpose's email without consent (UWG §7(3), migration 0033).
    similar_products_of: Mapped[list[str]] = mapped_column(
        ARRAY(Text), server_default=text("'{}'::text[]"), default=list
    )
    #: How long a consent lasts since it was given, and without engagement (ISO 8601 calendar spans,
    #: :mod:`app.domain.validity`), and how long before its end a re-permission message is queued.
    validity: Mapped[str | None] = mapped_column(Text)
    inactivity: Mapped[str | None] = mapped_column(Text)
    repermission_before: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        UniqueConstraint("workspace_id", "key"),
        CheckConstraint("kind IN ('marketing', 'transactional')", name="kind_known"),
        CheckConstraint("key ~ '^[a-z][a-z0-9_]{0,62}$'", name="key_format"),
        CheckConstraint("length(name) BETWEEN 1 AND 200", name="name_length"),
        CheckConstraint("cardinality(similar_products_of) <= 50", name="similar_products_of_size"),
        *(CheckConstraint(span_check_sql(c), name=f"{c}_span") for c in _SPANS),
        CheckConstraint(
            "repermission_before IS NULL OR validity IS NOT NULL OR inactivity IS NOT NULL",
            name="repermission_needs_an_end",
        ),
    )


class Notice(UUIDPrimaryKey, TenantKey, CreatedAt, Base):
    """An immutable, versioned consent text shown to people; every consent given references one."""

    __tablename__ = "notices"

    purpose_id: Mapped[uuid.UUID]
    channels: Mapped[list[str]] = mapped_column(ARRAY(Text))
    locale: Mapped[str] = mapped_column(Text)
    version: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(Text)

    __table_args__ = (
        UniqueConstraint(
            "purpose_id", "locale", "version", "workspace_id", name="uq_notices_purpose_id_locale_version"
        ),
        tenant_key("purpose_id", "purposes", ondelete="RESTRICT"),
        CheckConstraint("cardinality(channels) >= 1", name="channels_not_empty"),
        CheckConstraint("length(text) BETWEEN 1 AND 20000", name="text_length"),
        CheckConstraint("sha256 ~ '^[0-9a-f]{64}$'", name="sha256_hex"),
    )
