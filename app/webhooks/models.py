"""Webhook subscriptions and their deliveries (the outbox, written in the transaction of the change)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import CheckConstraint, Index, Integer, Text, UniqueConstraint, text
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, mapped_column

from app.lib.orm import Base, CreatedAt, TenantKey, UUIDPrimaryKey, tenant_key
from app.webhooks.status import WebhookStatus


class WebhookSubscription(UUIDPrimaryKey, TenantKey, CreatedAt, Base):
    """Where a workspace wants its change events sent; the signing secret is stored sealed (write-only)."""

    __tablename__ = "webhook_subscriptions"

    url: Mapped[str] = mapped_column(Text)
    events: Mapped[list[str]] = mapped_column(ARRAY(Text))
    secret_sealed: Mapped[str] = mapped_column(Text)

    __table_args__ = (Index("ix_webhook_subscriptions_workspace_id", "workspace_id"),)


class WebhookDelivery(UUIDPrimaryKey, TenantKey, CreatedAt, Base):
    """One event for one subscription: queued with the change, claimed by a sender, retried until it lands."""

    __tablename__ = "webhook_deliveries"

    subscription_id: Mapped[uuid.UUID]
    event_id: Mapped[uuid.UUID]
    event_type: Mapped[str] = mapped_column(Text)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    status: Mapped[str] = mapped_column(Text, server_default="queued")
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    next_attempt_at: Mapped[datetime] = mapped_column(server_default=text("now()"))
    last_status: Mapped[int | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    delivered_at: Mapped[datetime | None]

    __table_args__ = (
        UniqueConstraint(
            "subscription_id", "event_id", "workspace_id", name="uq_webhook_deliveries_subscription_id_event_id"
        ),
        tenant_key("subscription_id", "webhook_subscriptions", ondelete="CASCADE"),
        CheckConstraint(f"status IN ({', '.join(repr(v.value) for v in WebhookStatus)})", name="status_known"),
        # what senders scan: due deliveries, and claims whose lease ran out (a claim moves next_attempt_at on)
        Index("ix_webhook_deliveries_due", "next_attempt_at", postgresql_where=text("status IN ('queued', 'sending')")),
    )
