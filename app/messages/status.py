"""The statuses of messages, deliveries and history steps (the database refuses any other: ``status_known``).

The columns stay ``text``; these enums are the values, and the check constraints on ``messages``,
``deliveries`` and ``message_events`` are built from them (migrations 0015 and 0017).
"""

from __future__ import annotations

import enum


class DeliveryStatus(enum.StrEnum):
    """Where one channel's delivery stands (``deliveries.status``)."""

    QUEUED = "queued"
    """Waiting for ``next_attempt_at`` (a new delivery, a retry, or a closed send window)."""
    SENDING = "sending"
    """Claimed by a dispatcher, under its lease."""
    SENT = "sent"
    """The provider accepted it."""
    DELIVERED = "delivered"
    """The provider reported it delivered (or read)."""
    FAILED = "failed"
    """Given up: a permanent error, attempts used up, a provider's failure report, or its data gone."""
    BLOCKED_AT_SEND = "blocked_at_send"
    """The send gate refused at send time (consent withdrawn since queueing, …): nothing was sent."""
    UNKNOWN = "unknown"
    """A marketing delivery whose provider call was in flight when its worker died: perhaps sent, never re-sent
    (at most once). A provider's status callback that names it settles it (``sent``, ``delivered``, ``failed``)."""


class MessageStatus(enum.StrEnum):
    """What a message was answered with when accepted (``messages.status``); its deliveries carry the rest."""

    QUEUED = "queued"
    NO_ELIGIBLE_CHANNEL = "no_eligible_channel"
    """No channel of the route was permitted: nothing was queued."""


class Step(enum.StrEnum):
    """One step of a message's history (``message_events.status``, and ``status`` of ``message.status`` webhooks)."""

    QUEUED = "queued"
    SENDING = "sending"
    """A further attempt began (the first one is not recorded: ``queued`` is followed by its outcome)."""
    SENT = "sent"
    DELIVERED = "delivered"
    FAILED = "failed"
    BLOCKED_AT_SEND = "blocked_at_send"
    RETRY_SCHEDULED = "retry_scheduled"
    WAITING_FOR_SEND_WINDOW = "waiting_for_send_window"
    NO_ELIGIBLE_CHANNEL = "no_eligible_channel"
    UNKNOWN = "unknown"
    """The provider call was in flight when its worker died (marketing: not re-sent, see :class:`DeliveryStatus`)."""
    OPENED = "opened"
    """Engagement (recorded once per message): the open pixel loaded, WhatsApp's ``read``, a push open reported."""
    CLICKED = "clicked"
    """Engagement (once per message): a tracked link was followed (:mod:`app.messages.tracking`)."""
    CONVERTED = "converted"
    """Engagement (once per message): the shop reported a conversion with an API key."""


#: The engagement signals among the steps: each recorded at most once per message.
SIGNAL_STEPS = (Step.OPENED, Step.CLICKED, Step.CONVERTED)


def step_of(status: DeliveryStatus | MessageStatus) -> Step:
    """The history step that records a delivery or message reaching ``status``."""
    return Step(status.value)
