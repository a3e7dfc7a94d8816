"""The one Protocol every channel adapter implements, and the typed result it answers.

Adapters never raise for delivery problems: vendor exceptions are mapped to a :class:`SendResult` with an
:class:`Outcome` the dispatcher acts on (retry, give up, or mirror a provider-side fact).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Protocol


class Outcome(enum.StrEnum):
    """What became of a delivery."""

    ACCEPTED = "accepted"
    TRANSIENT = "transient"
    """Try again later (timeout, 5xx, rate limit)."""
    PERMANENT = "permanent"
    """This content or address will not be accepted (invalid number, 5xx SMTP reply)."""
    BLOCKED = "blocked"
    """The provider blocks the recipient (Twilio 21610: the person texted STOP to the provider)."""
    GONE = "gone"
    """The address no longer exists (web push 404/410, FCM UNREGISTERED, APNs 410)."""


@dataclass(frozen=True, slots=True)
class Outbound:
    """One delivery as an adapter sees it."""

    id: str
    """Stable per delivery: the idempotency key where the provider supports one, and in Message-IDs."""
    channel: str
    to: str
    """The contact point's value: email, E.164 number, installation id, endpoint, postal key."""
    content: dict[str, Any]
    details: dict[str, Any] = field(default_factory=dict)
    """What the contact point carries besides its value (push token, subscription keys, postal fields)."""
    sender: str | None = None
    extras: dict[str, Any] = field(default_factory=dict)
    """Channel specifics prepared by the dispatcher (unsubscribe URLs, VAPID key, status callback URL)."""


@dataclass(frozen=True, slots=True)
class SendResult:
    """The provider's answer."""

    outcome: Outcome
    provider_message_id: str | None = None
    error_code: str | None = None
    detail: str = ""


class ChannelAdapter(Protocol):
    """Sends one delivery on its channel."""

    async def send(self, outbound: Outbound) -> SendResult:
        """Hand the delivery to the provider; never raises for delivery problems."""
        ...
