"""The one Protocol every channel adapter implements, the typed result it answers, and the HTTP-status policy.

Adapters never raise for delivery problems: vendor exceptions are mapped to a :class:`SendResult` with an
:class:`Outcome` the dispatcher acts on (retry, give up, or mirror a provider-side fact). Every adapter that sees an
HTTP status maps it with :func:`outcome_for_status`, naming what its provider says differently as its parameters.
"""

from __future__ import annotations

import enum
from collections.abc import Collection
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


_TOO_MANY_REQUESTS = 429
_SERVER_ERRORS = 500


def outcome_for_status(
    status: int | None,
    *,
    gone: Collection[int] = (),
    transient: Collection[int] = (),
    accepted: Collection[int] = (),
) -> Outcome:
    """What a provider's HTTP status means for the delivery: the one policy every HTTP adapter applies.

    - No answer at all (``None``) is transient.
    - 2xx, and the statuses in ``accepted`` (a print house's 409: it has the job already), are accepted.
    - The statuses in ``gone`` mean the address no longer exists. Each provider says so its own way (web push
      404 and 410, APNs 410, FCM 404; a 404 from Twilio or a print house is a wrong URL), so there is no default.
    - 429, 5xx and the statuses in ``transient`` (FCM's 401: the access token is fetched again) are transient.
    - Everything else is permanent: the other 4xx, and 1xx and 3xx, which no provider answers (redirects are not
      followed: a redirecting endpoint is a wrong URL, and trying again will not change it).

    What a provider says in its body rather than its status (APNs ``ExpiredProviderToken``, FCM ``UNREGISTERED``,
    Twilio's error 21610) is for its adapter to look at before asking this.
    """
    if status is None:
        return Outcome.TRANSIENT
    if status in accepted or 200 <= status < 300:  # noqa: PLR2004
        return Outcome.ACCEPTED
    if status in gone:
        return Outcome.GONE
    if status in transient or status == _TOO_MANY_REQUESTS or status >= _SERVER_ERRORS:
        return Outcome.TRANSIENT
    return Outcome.PERMANENT


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
    maybe_delivered: bool = False
    """A transient failure after the request may have reached the provider (no answer in time, the connection
    lost while waiting): sending again could repeat the message. The dispatcher's policy decides
    (:mod:`app.messages.policy`: marketing at most once, transactional at least once)."""


class ChannelAdapter(Protocol):
    """Sends one delivery on its channel.

    An adapter names its provider for reports in a ``provider`` attribute (``twilio``, ``smtp``, ``fcm``, …), or,
    where the provider depends on the delivery, with ``provider_for(outbound)`` (:func:`provider_of`).
    """

    async def send(self, outbound: Outbound) -> SendResult:
        """Hand the delivery to the provider; never raises for delivery problems."""
        ...


def provider_of(adapter: object, outbound: Outbound) -> str | None:
    """The provider that carries ``outbound`` through ``adapter``, as reports name it (``None``: unknown)."""
    choose = getattr(adapter, "provider_for", None)
    if callable(choose):
        found = choose(outbound)
        return found if isinstance(found, str) else None
    named = getattr(adapter, "provider", None)
    return named if isinstance(named, str) else None
