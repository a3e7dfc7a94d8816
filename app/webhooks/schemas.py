"""API types of webhook subscriptions."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

import msgspec

EventType = Literal["consent.changed", "message.status", "contact.merged"]


class SubscriptionIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Where to send which events. Without `secret`, one is generated and shown once."""

    url: Annotated[str, msgspec.Meta(min_length=8, max_length=2000, description="An https URL.")]
    events: Annotated[list[EventType], msgspec.Meta(min_length=1)]
    secret: Annotated[str, msgspec.Meta(min_length=24, max_length=200)] | None = None


class SubscriptionOut(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A subscription. `secret` appears only in the answer that created it (it is stored sealed)."""

    id: uuid.UUID
    url: str
    events: list[str]
    created_at: datetime
    pending: int = 0
    failed: int = 0
    secret: str | None = None
