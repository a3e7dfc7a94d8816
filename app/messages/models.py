"""Messages, their deliveries (the transactional outbox) and the status history."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import CheckConstraint, ForeignKey, Index, Integer, LargeBinary, Text, text
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, mapped_column

from app.lib.orm import Base, CreatedAt, TenantKey, UUIDPrimaryKey, tenant_key
from app.messages.status import DeliveryStatus, MessageStatus, Step


def _known(values: type[enum.StrEnum]) -> CheckConstraint:
    """``status`` is one of ``values`` (named ``ck_<table>_status_known``)."""
    return CheckConstraint(f"status IN ({', '.join(repr(v.value) for v in values)})", name="status_known")


#: Whether a message event carries a mail scanner's signs (an open or click a security gateway made).
SCANNED = "coalesce(detail ? 'scanner_signals', false)"


class Message(UUIDPrimaryKey, TenantKey, CreatedAt, Base):
    """A request to reach a contact, with the routing decision made when it was accepted."""

    __tablename__ = "messages"

    contact_id: Mapped[uuid.UUID]
    purpose_id: Mapped[uuid.UUID]
    strategy: Mapped[str] = mapped_column(Text)
    route: Mapped[list[str]] = mapped_column(ARRAY(Text))
    content: Mapped[dict[str, Any]] = mapped_column(JSONB)
    decision: Mapped[dict[str, Any]] = mapped_column(JSONB)
    status: Mapped[str] = mapped_column(Text)
    send_at: Mapped[datetime | None]
    campaign: Mapped[str | None] = mapped_column(Text)
    """The caller's label for reports (``group_by=campaign``)."""

    __table_args__ = (
        tenant_key("contact_id", "contacts", ondelete="CASCADE"),
        tenant_key("purpose_id", "purposes", ondelete="RESTRICT"),
        Index("ix_messages_contact_id", "contact_id"),
        _known(MessageStatus),
        CheckConstraint("char_length(campaign) BETWEEN 1 AND 100", name="campaign_length"),
    )


class Delivery(UUIDPrimaryKey, TenantKey, Base):
    """One channel's delivery of a message: the outbox row dispatchers claim (``FOR UPDATE SKIP LOCKED``)."""

    __tablename__ = "deliveries"

    message_id: Mapped[uuid.UUID]
    channel: Mapped[str] = mapped_column(Text)
    contact_point_id: Mapped[uuid.UUID]
    status: Mapped[str] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    next_attempt_at: Mapped[datetime]
    lease_until: Mapped[datetime | None]
    leased_by: Mapped[str | None] = mapped_column(Text)
    provider_message_id: Mapped[str | None] = mapped_column(Text)
    last_error: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime]
    in_flight_at: Mapped[datetime | None]
    """When the current attempt's provider call began (committed before it); cleared with its outcome. Still set
    when the delivery is claimed again: the previous worker died (or lost its lease) during the call."""

    __table_args__ = (
        tenant_key("message_id", "messages", ondelete="CASCADE"),
        tenant_key("contact_point_id", "contact_points", ondelete="CASCADE"),
        _known(DeliveryStatus),
        Index("ix_deliveries_message_id", "message_id"),
        # a STOP's campaign (the last message sent to the number), and erasure's cascade from the address
        Index("ix_deliveries_contact_point_id", "contact_point_id"),
        # what dispatchers scan: work that is due, and leases that ran out
        Index(
            "ix_deliveries_due",
            "next_attempt_at",
            postgresql_where=text("status IN ('queued', 'sending')"),
        ),
        Index(
            "ix_deliveries_provider_message_id",
            "provider_message_id",
            postgresql_where=text("provider_message_id IS NOT NULL"),
        ),
    )


class MessageEvent(UUIDPrimaryKey, TenantKey, Base):
    """One step of a message's history (its status is a :class:`~app.messages.status.Step`).

    ``workspace_id`` since migration 0040 (the message's): the history lives on its message's shard under Citus.
    """

    __tablename__ = "message_events"

    message_id: Mapped[uuid.UUID]
    delivery_id: Mapped[uuid.UUID | None]
    channel: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(Text)
    provider_message_id: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    at: Mapped[datetime]

    __table_args__ = (
        tenant_key("message_id", "messages", ondelete="CASCADE"),
        tenant_key("delivery_id", "deliveries", ondelete="CASCADE"),
        Index("ix_message_events_message_id_at", "message_id", "at"),
        _known(Step),
        # an engagement signal is recorded once per message (a second click, a repeated report: nothing new), a
        # person's apart from a mail scanner's: a scanner fetches first and must not take the person's place
        # (migration 0039)
        Index(
            "uq_message_events_signal",
            "message_id",
            "status",
            "workspace_id",
            unique=True,
            postgresql_where=text(f"status IN ('opened', 'clicked', 'converted') AND NOT {SCANNED}"),
        ),
        Index(
            "uq_message_events_scanner_signal",
            "message_id",
            "status",
            "workspace_id",
            unique=True,
            postgresql_where=text(f"status IN ('opened', 'clicked', 'converted') AND {SCANNED}"),
        ),
    )


class TokenKind(enum.StrEnum):
    """What a message token stands for (``message_tokens.kind``)."""

    LINK = "link"
    """A tracked link of an email: ``/l/{token}`` redirects to ``url``, a URL that was in the mail."""
    OPEN = "open"
    """An email's open pixel (``/o/{token}``)."""
    EVENT = "event"
    """A push message's event token: the device reports ``opened`` with it (``POST /v1/messages/{id}/events``)."""


class MessageToken(CreatedAt, Base):
    """A token minted at send time for one message's engagement signals; only its SHA-256 is stored.

    Tokens exist only where the contact consented to the workspace's tracking purpose: a message without any
    has its opens and clicks unknown, never false.
    """

    __tablename__ = "message_tokens"

    token_hash: Mapped[bytes] = mapped_column(LargeBinary, primary_key=True)
    #: in the primary key for Citus (migration 0040; 256 random bits are unique anyway): found by the hash alone
    workspace_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"), primary_key=True)
    message_id: Mapped[uuid.UUID]
    delivery_id: Mapped[uuid.UUID]
    kind: Mapped[str] = mapped_column(Text)
    url: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        tenant_key("message_id", "messages", ondelete="CASCADE"),
        tenant_key("delivery_id", "deliveries", ondelete="CASCADE"),
        Index("ix_message_tokens_message_id", "message_id"),
        Index("ix_message_tokens_delivery_id", "delivery_id"),
        CheckConstraint("kind IN ('link', 'open', 'event')", name="kind_known"),
        CheckConstraint("(kind = 'link') = (url IS NOT NULL)", name="url_of_links"),
    )
