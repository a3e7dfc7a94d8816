"""API types of messages."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

import msgspec

from app.domain.model import Channel
from app.lib.text import SINGLE_LINE

Text = Annotated[str, msgspec.Meta(min_length=1, max_length=1600)]


class EmailContent(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """An email: marketing mail gets List-Unsubscribe headers and a visible unsubscribe link."""

    subject: Annotated[str, msgspec.Meta(min_length=1, max_length=500), SINGLE_LINE]
    text: Annotated[str, msgspec.Meta(min_length=1, max_length=200_000)]
    html: Annotated[str, msgspec.Meta(max_length=500_000)] | None = None


class SmsContent(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """An SMS text (at most 10 segments)."""

    text: Text


class WhatsAppContent(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    """A WhatsApp text (inside the 24-hour session) or an approved template (Twilio Content SID)."""

    text: Annotated[str, msgspec.Meta(min_length=1, max_length=4096)] | None = None
    template_sid: str | None = None
    variables: dict[str, str] | None = None


class AppPushContent(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    """An app notification (payload at most 4 KB)."""

    title: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    body: Annotated[str, msgspec.Meta(min_length=1, max_length=2000)]
    data: dict[str, str] | None = None


class WebPushContent(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    """A browser notification (encrypted payload at most 3,993 bytes)."""

    title: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    body: Annotated[str, msgspec.Meta(min_length=1, max_length=2000)]
    url: Annotated[str, msgspec.Meta(max_length=2000, pattern="^https://")] | None = None


class PrintContent(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    """A letter: the print house's template and its variables."""

    template: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    variables: dict[str, str] | None = None


class Content(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    """Content per channel; every channel of the route needs its content."""

    email: EmailContent | None = None
    sms: SmsContent | None = None
    whatsapp: WhatsAppContent | None = None
    app_push: AppPushContent | None = None
    web_push: WebPushContent | None = None
    print: PrintContent | None = None


#: How far ahead a message may be scheduled (``send_at``).
SEND_AT_AHEAD = timedelta(days=366)


class MessageIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Send ``content`` to a contact on the first (or every) permitted channel of ``route``."""

    contact: Annotated[str, msgspec.Meta(min_length=1, max_length=200, description="Contact id or external_id.")]
    purpose: Annotated[str, msgspec.Meta(min_length=1, max_length=63)]
    route: Annotated[list[Channel], msgspec.Meta(min_length=1, max_length=6)]
    strategy: Annotated[
        Literal["first_eligible", "all_eligible"],
        msgspec.Meta(
            description="first_eligible: the first channel of the route with an eligible address; all_eligible: "
            "every channel of the route that has one (one address per channel, the first eligible)."
        ),
    ] = "first_eligible"
    content: Content
    send_at: (
        Annotated[
            datetime,
            msgspec.Meta(tz=True, description="Not before this time (RFC 3339 with a time zone); now when absent."),
        ]
        | None
    ) = None
    campaign: (
        Annotated[
            str,
            msgspec.Meta(
                min_length=1,
                max_length=100,
                description="A label for reports (`group_by=campaign`): what was sent and what opt-outs it caused.",
            ),
            SINGLE_LINE,
        ]
        | None
    ) = None

    def __post_init__(self) -> None:
        """``send_at`` in UTC (compared with the clock and stored so), at most :data:`SEND_AT_AHEAD` ahead."""
        if self.send_at is not None:
            try:  # year 1 at +14:00, year 9999 at -12:00 have no UTC time
                self.send_at = self.send_at.astimezone(UTC)
            except OverflowError:
                raise ValueError("`send_at` lies outside the UTC calendar") from None
            if self.send_at > datetime.now(UTC) + SEND_AT_AHEAD:  # the send window's next opening must exist
                raise ValueError("`send_at` lies more than a year ahead")


class Skipped(msgspec.Struct, kw_only=True):
    """A channel of the route that was not chosen, and why."""

    channel: Channel
    reason: str


class Chosen(msgspec.Struct, kw_only=True):
    """A channel the message goes out on."""

    channel: Channel
    contact_point_id: uuid.UUID
    not_before: datetime | None = None
    """When it waits (``send_at``, or the next opening of the send window)."""


class Decision(msgspec.Struct, kw_only=True):
    """What routing decided: the first chosen channel (``channel``/``contact_point_id``), all of them, the rest."""

    channel: Channel | None
    contact_point_id: uuid.UUID | None
    chosen: list[Chosen]
    skipped: list[Skipped]


class MessageOut(msgspec.Struct, kw_only=True):
    """The message as accepted."""

    message_id: uuid.UUID
    status: Literal["queued", "no_eligible_channel"]
    decision: Decision


class StatusEntry(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One step of a delivery's history."""

    at: datetime
    channel: Channel | None
    status: str
    provider_message_id: str | None = None
    error: str | None = None
    detail: dict[str, Any] | None = None


class DeliveryOut(msgspec.Struct, kw_only=True):
    """One channel's delivery."""

    channel: Channel
    contact_point_id: uuid.UUID
    status: str
    attempts: int
    provider_message_id: str | None
    last_error: str | None


class MessageDetail(msgspec.Struct, kw_only=True):
    """A message with its deliveries and status history."""

    message_id: uuid.UUID
    contact_id: uuid.UUID
    purpose: str
    status: str
    created_at: datetime
    decision: Decision
    deliveries: list[DeliveryOut]
    history: list[StatusEntry]
    campaign: str | None = None


class ExportedMessage(msgspec.Struct, kw_only=True):
    """A message sent (or meant) to the person, with its content, routing decision and history."""

    id: uuid.UUID
    purpose: str | None
    status: str
    created_at: datetime
    send_at: datetime | None
    route: list[str]
    content: dict[str, Any]
    decision: dict[str, Any]
    deliveries: list[DeliveryOut]
    history: list[StatusEntry]


class MessageEventIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    """An engagement signal of a message.

    ``opened``: the device, with the push message's ``token`` (or an API key, for a message sent with tracking);
    ``converted``: the shop, with an API key.
    """

    type: Literal["opened", "converted"]
    occurred_at: Annotated[datetime, msgspec.Meta(tz=True)] | None = None
    """When it happened, with a time zone (default: now; at most a few minutes in the future)."""
    token: Annotated[str, msgspec.Meta(min_length=1, max_length=100)] | None = None
    """The push message's ``event_token`` (from its payload): the device's credential, instead of an API key."""
    reference: Annotated[str, msgspec.Meta(min_length=1, max_length=200), SINGLE_LINE] | None = None
    """The shop's own reference of the conversion (an order number; no personal data)."""


class MessageEventOut(msgspec.Struct, kw_only=True):
    """The signal, and whether it was new (a message records each signal once; a repeat changes nothing)."""

    message_id: uuid.UUID
    type: str
    recorded: bool
