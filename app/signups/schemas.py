"""API types of signups."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

import msgspec

from app.domain.model import State
from app.ledger.schemas import ExternalId, check_ip
from app.workspaces.settings import known_time_zone


class SignupContact(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Who signs up, as the caller knows them."""

    external_id: ExternalId | None = None
    locale: Annotated[str, msgspec.Meta(pattern=r"^[a-z]{2,3}(-[A-Z]{2})?$")] | None = None
    timezone: Annotated[str, msgspec.Meta(max_length=64)] | None = None

    def __post_init__(self) -> None:
        """An unknown time zone is refused here (422), not met by the dispatcher at send time."""
        if self.timezone is not None and not known_time_zone(self.timezone):
            msg = f"timezone is not an IANA time zone such as Europe/Berlin (got {self.timezone!r})"
            raise ValueError(msg)


class SignupEvidence(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    """How the signup happened (stored as proof; personal data, erasable)."""

    ip: Annotated[str, msgspec.Meta(max_length=64)] | None = None
    user_agent: Annotated[str, msgspec.Meta(max_length=2000)] | None = None
    source_url: Annotated[str, msgspec.Meta(max_length=2000)] | None = None
    form_id: Annotated[str, msgspec.Meta(max_length=200)] | None = None
    checkbox_checked: bool | None = None
    """Whether the person ticked the consent box; ``false`` is refused (no consent was given, nothing starts)."""

    def __post_init__(self) -> None:
        """Evidence that proves the opposite of a signup, or an ``ip`` that is no IP address, is refused (422)."""
        check_ip(self.ip)
        if self.checkbox_checked is False:
            msg = "checkbox_checked is false: the person did not tick the consent box, so no opt-in is started"
            raise ValueError(msg)


class SignupIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Start an opt-in.

    Email: a confirmation mail is sent (double opt-in). SMS and WhatsApp: the person then texts the start word
    to the number answered.
    """

    channel: Literal["email", "sms", "whatsapp"]
    address: Annotated[
        str,
        msgspec.Meta(min_length=1, max_length=320, description="Email address, or phone number in any common form."),
    ]
    purpose: Annotated[str, msgspec.Meta(min_length=1, max_length=63)]
    notice_id: uuid.UUID
    contact: SignupContact = msgspec.field(default_factory=SignupContact)
    evidence: SignupEvidence = msgspec.field(default_factory=SignupEvidence)


class Instructions(msgspec.Struct, kw_only=True):
    """What the person has to do to confirm."""

    send_keyword: str
    to_number: str | None


class SignupOut(msgspec.Struct, kw_only=True):
    """The signup was recorded (the same shape whether or not the address was known).

    ``state`` is always ``pending``. Email: a confirmation mail went out, or, for an address already subscribed, a
    mail saying so. SMS and WhatsApp: the instructions to text the start word, whether or not the number is
    subscribed already. The answer does not tell the cases apart (no enumeration by a form key);
    ``GET /v1/contacts/{contact}`` shows the actual state.
    """

    contact_id: uuid.UUID
    contact_point_id: uuid.UUID
    state: State
    instructions: Instructions | None = None
