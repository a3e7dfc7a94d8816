"""API types of the email channel's provider webhook."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec


class EmailEventIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One bounce or complaint, as the mail provider (or its adapter) reports it."""

    id: Annotated[str, msgspec.Meta(min_length=1, max_length=200, description="The provider's event id (dedupe).")]
    type: Literal["bounce", "complaint"]
    recipient: Annotated[str, msgspec.Meta(min_length=3, max_length=320)]
    bounce_type: Literal["hard", "soft"] | None = None
    occurred_at: datetime | None = None
    message_id: Annotated[str, msgspec.Meta(max_length=998)] | None = None
    diagnostic: Annotated[str, msgspec.Meta(max_length=1000, description="DSN status or feedback type.")] | None = None


class EmailEventsIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A signed delivery of events."""

    events: Annotated[list[EmailEventIn], msgspec.Meta(min_length=1, max_length=1000)]


class EmailEventsOut(msgspec.Struct, kw_only=True):
    """What the delivery did: events processed now, repeats of earlier ones, recipients we do not know."""

    processed: int
    duplicates: int
    unknown_recipients: int
