"""What becomes of a delivery the provider may have accepted without our knowing.

Its worker died during the call, or the call got no answer in time or lost its connection while waiting
(``SendResult.maybe_delivered``).

The dispatcher commits ``in_flight_at`` before each provider call and clears it with the call's outcome, so a
delivery claimed again with the mark still set is one the provider may have accepted. Sending it again could
repeat it, not sending it could lose it; which is worse depends on the purpose:

- **marketing: at most once.** A repeated offer is the kind of message people complain about and a consent
  service exists to prevent; a lost one costs little. The delivery becomes ``unknown`` and is never re-sent; a
  provider that reports status (Twilio's status callback names the delivery) may still settle it.
- **transactional: at least once.** A lost order confirmation or password reset is the worse failure; the
  delivery is sent again (the email Message-ID and the push Topic, derived from the delivery id, let receivers
  fold the repeat).
"""

from __future__ import annotations

import enum

from app.domain.model import PurposeKind


class AfterCrash(enum.StrEnum):
    """What the dispatcher does with a delivery found in flight."""

    RESEND = "resend"
    """At least once: another attempt."""
    UNKNOWN = "unknown"
    """At most once: settled ``unknown``, never sent again."""


def after_crash(kind: PurposeKind) -> AfterCrash:
    """The policy for a delivery of a purpose of ``kind`` whose provider call was in flight at a crash."""
    return AfterCrash.UNKNOWN if kind is PurposeKind.MARKETING else AfterCrash.RESEND
