"""The vocabulary of consent: channels, states, triggers, legal bases, actors, reachability."""

from __future__ import annotations

import enum


class Channel(enum.StrEnum):
    """Where a person can be contacted."""

    EMAIL = "email"
    SMS = "sms"
    WHATSAPP = "whatsapp"
    APP_PUSH = "app_push"
    WEB_PUSH = "web_push"
    PRINT = "print"


class State(enum.StrEnum):
    """The state of one consent (contact point and purpose). ``none`` means no record."""

    NONE = "none"
    PENDING = "pending"
    OPTED_IN = "opted_in"
    DECLINED = "declined"
    OPTED_OUT = "opted_out"
    EXPIRED = "expired"
    OBJECTED = "objected"


class Trigger(enum.StrEnum):
    """What happened. Which trigger may move which state is in :mod:`app.domain.transitions`."""

    SIGNUP = "signup"
    RESEND = "resend"
    CONFIRM = "confirm"
    LAPSE = "lapse"
    UNSUBSCRIBE = "unsubscribe"
    COMPLAINT = "complaint"
    OBJECTION = "objection"
    OBJECTION_WITHDRAWN = "objection_withdrawn"
    ROBINSON_MATCH = "robinson_match"
    START_WORD = "start_word"
    STOP_WORD = "stop_word"
    PROVIDER_BLOCK = "provider_block"
    PERMISSION_GRANTED = "permission_granted"
    PERMISSION_DENIED = "permission_denied"
    PERMISSION_REVOKED = "permission_revoked"
    UNINSTALLED = "uninstalled"
    PROVIDER_GONE = "provider_gone"
    VALIDITY_ENDED = "validity_ended"
    IMPORT = "import"
    ERASURE = "erasure"
    MERGED = "merged"
    #: A pause of all marketing to an address until a given time (the preference centre); the consent's state
    #: stays as it is (the event is recorded with ``from_state = to_state``), a ``paused`` suppression does the rest.
    PAUSE = "pause"
    #: The person ended a pause early.
    PAUSE_ENDED = "pause_ended"
    #: The person opted in again on the preference centre, on the email address the link was mailed to or named
    #: (the link is the proof of control of that address; never from a mail's footer link).
    PREFERENCE_OPT_IN = "preference_opt_in"
    #: The phone number went to someone else (a recycled number): the SMS and WhatsApp consents given before that
    #: date end (``expired``); the new owner starts afresh (``POST /v1/contacts/{contact}/reassigned-numbers``).
    REASSIGNED = "reassigned"
    #: A sale recorded for an email address (``POST /v1/contacts/{contact}/purchases``): a note on the address
    #: that moves no consent; it is the evidence of the existing-customer basis (UWG §7(3), :attr:`LegalBasis.UWG_7_3`).
    PURCHASE = "purchase"
    #: The person kept an opted-in consent before its end (the re-permission message's "keep me subscribed"
    #: button); the state stays ``opted_in`` and the purpose's validity counts from this event.
    RENEWED = "renewed"


class LegalBasis(enum.StrEnum):
    """Why processing is lawful (GDPR Art. 6; UWG §7(3) for existing customers)."""

    CONSENT = "consent"
    LEGITIMATE_INTEREST = "legitimate_interest"
    UWG_7_3 = "uwg_7_3"


class ActorType(enum.StrEnum):
    """Who caused an event."""

    API_KEY = "api_key"
    SUBJECT = "subject"
    PROVIDER = "provider"
    SYSTEM = "system"


class Reachability(enum.StrEnum):
    """Whether a contact point can receive anything at all (kept apart from permission)."""

    REACHABLE = "reachable"
    UNDELIVERABLE = "undeliverable"
    PROVIDER_BLOCKED = "provider_blocked"
    EXPIRED = "expired"


class VerifiedVia(enum.StrEnum):
    """How an address became known to be its contact's.

    `confirmed`: the email confirmation link; `start_word`: texted from the number; `permission`: the push
    permission of the device or browser; `api`: a key that may write consents (import, API). Transactional
    messages go only to verified addresses: a form's `signup` key can name any address for any `external_id`, so
    an address it brings is not the contact's until its own proof comes.
    """

    CONFIRMED = "confirmed"
    START_WORD = "start_word"
    PERMISSION = "permission"
    API = "api"


#: Ledger triggers that verify the address they are recorded for: its channel's own proof, or an import (scope
#: ``consents:write``: the tenant's records name the address for the contact).
VERIFYING_TRIGGERS: dict[Trigger, VerifiedVia] = {
    Trigger.CONFIRM: VerifiedVia.CONFIRMED,
    Trigger.START_WORD: VerifiedVia.START_WORD,
    Trigger.PERMISSION_GRANTED: VerifiedVia.PERMISSION,
    Trigger.IMPORT: VerifiedVia.API,
}


class PurposeKind(enum.StrEnum):
    """Marketing needs permission; transactional needs a verified, reachable address and no 'everything' suppression."""

    MARKETING = "marketing"
    TRANSACTIONAL = "transactional"


class SuppressionScope(enum.StrEnum):
    """What a suppression blocks."""

    PURPOSE = "purpose"
    ALL_MARKETING = "all_marketing"
    ALL = "all"


class SuppressionReason(enum.StrEnum):
    """Why an identifier is suppressed."""

    UNSUBSCRIBE = "unsubscribe"
    OBJECTION_ART21 = "objection_art21"
    #: A "no advertising" mailbox sticker (objection kind ``sticker``): no Art. 21 objection (CHANNEL_RULES.md D7);
    #: it covers the household too. Migration 0046.
    OBJECTION_STICKER = "objection_sticker"
    COMPLAINT = "complaint"
    HARD_BOUNCE = "hard_bounce"
    ERASURE = "erasure"
    PROVIDER_BLOCK = "provider_block"
    ROBINSON = "robinson"
    #: The person paused marketing until ``suppressions.until`` (the only reason with an end; never scope ``all``).
    PAUSED = "paused"


class SuppressionSource(enum.StrEnum):
    """Why an identifier is suppressed: a reason, or `unrecorded`.

    `unrecorded`: a suppression older than the recording of its sources (migration 0047), which may have sources not
    known; lifting a known one never lifts it.
    """

    UNSUBSCRIBE = "unsubscribe"
    OBJECTION_ART21 = "objection_art21"
    OBJECTION_STICKER = "objection_sticker"
    COMPLAINT = "complaint"
    HARD_BOUNCE = "hard_bounce"
    ERASURE = "erasure"
    PROVIDER_BLOCK = "provider_block"
    ROBINSON = "robinson"
    PAUSED = "paused"
    UNRECORDED = "unrecorded"


class RequestChannel(enum.StrEnum):
    """How a data-subject request (erasure) reached the workspace."""

    EMAIL = "email"
    LETTER = "letter"
    WEB_FORM = "web_form"
    PHONE = "phone"
    IN_PERSON = "in_person"
    OTHER = "other"


class ObjectionKind(enum.StrEnum):
    """How an objection reached us."""

    PERSONAL = "personal"
    STICKER = "sticker"
    ART21 = "art21"
    ROBINSON = "robinson"


#: States in which a withdrawal or objection is recorded (an objection stands until lifted with proof).
WITHDRAWN_STATES = frozenset({State.OPTED_OUT, State.OBJECTED})
