"""The send gate: permitted AND reachable AND NOT suppressed AND inside the send window (DESIGN.md).

Transactional messages need no permission, but an address proven to be the contact's (``verified``): a form's
``signup`` key can attach any address to any ``external_id``, and an order mail must not follow it there.

One function decides for one contact point; eligibility, audiences and (later) every send use it, and the
audience export builds its SQL filter from the same tables below.

Precedence when several reasons apply — the person's own expressed will first, then our records of it, then
facts about the address, then time:
``objected`` > ``opted_out`` > ``suppressed`` > ``paused`` > ``declined`` > ``expired`` > ``pending_confirmation`` >
``no_consent`` > ``unverified_address`` > ``provider_blocked`` > ``undeliverable`` > ``address_expired`` >
``outside_send_window``.

A pause (the person's "pause all marketing for N weeks") is a suppression with an end: it stops marketing while
its end is after the moment decided for, and is answered as ``paused`` with the end (``paused_until``).

``existing_customer`` (UWG §7(3), CHANNEL_RULES.md E3) permits like ``opted_in``, on email only and for marketing
purposes whose ``similar_products_of`` names the category of a purchase made with that address: it answers where
the consent alone would answer ``no_consent``, ``pending_confirmation``, ``expired`` or ``declined``, with the
purchase's ledger event as evidence. Everything that stops ``opted_in`` stops it too (an objection, an opt-out, a
suppression, a pause, the address's reachability, the send window), and a consent that is ``opted_in`` is answered
as ``opted_in`` (consent is the stronger basis). It ends for good with the first withdrawal or objection ever
recorded for the address on that purpose or on all of them (:attr:`PointFacts.customer_withdrawn`): a later
purchase or a new sign-up that was never confirmed does not bring it back.
"""

from __future__ import annotations

import enum
import math
import uuid
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from app.domain.model import Channel, PurposeKind, Reachability, State, SuppressionScope


class Reason(enum.StrEnum):
    """Why a contact point may or may not be contacted."""

    OPTED_IN = "opted_in"
    LEGITIMATE_INTEREST = "legitimate_interest"
    TRANSACTIONAL = "transactional"
    OBJECTED = "objected"
    OPTED_OUT = "opted_out"
    SUPPRESSED = "suppressed"
    PAUSED = "paused"
    DECLINED = "declined"
    EXPIRED = "expired"
    PENDING_CONFIRMATION = "pending_confirmation"
    NO_CONSENT = "no_consent"
    UNVERIFIED_ADDRESS = "unverified_address"
    PROVIDER_BLOCKED = "provider_blocked"
    UNDELIVERABLE = "undeliverable"
    ADDRESS_EXPIRED = "address_expired"
    OUTSIDE_SEND_WINDOW = "outside_send_window"
    NO_CONTACT_POINT = "no_contact_point"
    #: UWG §7(3): email to an existing customer about similar products, without consent until they object.
    EXISTING_CUSTOMER = "existing_customer"


#: Lower is stronger; when no contact point of a channel is eligible, the strongest reason is answered.
PRECEDENCE: tuple[Reason, ...] = (
    Reason.OBJECTED,
    Reason.OPTED_OUT,
    Reason.SUPPRESSED,
    Reason.PAUSED,
    Reason.DECLINED,
    Reason.EXPIRED,
    Reason.PENDING_CONFIRMATION,
    Reason.NO_CONSENT,
    Reason.UNVERIFIED_ADDRESS,
    Reason.PROVIDER_BLOCKED,
    Reason.UNDELIVERABLE,
    Reason.ADDRESS_EXPIRED,
    Reason.OUTSIDE_SEND_WINDOW,
    Reason.NO_CONTACT_POINT,
)
RANK = {reason: rank for rank, reason in enumerate(PRECEDENCE)}

#: The reason a consent state gives (opted_in permits; print's ``none`` rests on legitimate interest).
STATE_REASON: dict[State, Reason] = {
    State.OPTED_IN: Reason.OPTED_IN,
    State.OBJECTED: Reason.OBJECTED,
    State.OPTED_OUT: Reason.OPTED_OUT,
    State.DECLINED: Reason.DECLINED,
    State.EXPIRED: Reason.EXPIRED,
    State.PENDING: Reason.PENDING_CONFIRMATION,
    State.NONE: Reason.NO_CONSENT,
}
REACHABILITY_REASON: dict[Reachability, Reason | None] = {
    Reachability.REACHABLE: None,
    Reachability.PROVIDER_BLOCKED: Reason.PROVIDER_BLOCKED,
    Reachability.UNDELIVERABLE: Reason.UNDELIVERABLE,
    Reachability.EXPIRED: Reason.ADDRESS_EXPIRED,
}
ELIGIBLE = frozenset({Reason.OPTED_IN, Reason.LEGITIMATE_INTEREST, Reason.TRANSACTIONAL, Reason.EXISTING_CUSTOMER})
#: The consent states the existing-customer basis stands in for (never a withdrawal or objection; not ``opted_in``,
#: which is answered as itself).
CUSTOMER_REPLACES = frozenset({State.NONE, State.PENDING, State.EXPIRED, State.DECLINED})
#: The only channel of the existing-customer basis (UWG §7(3) speaks of electronic mail; SMS, WhatsApp and push
#: are never reached by it here, print has its own basis).
CUSTOMER_CHANNELS = frozenset({Channel.EMAIL})


@dataclass(frozen=True, slots=True)
class ConsentFact:
    """A consent row as the gate sees it.

    ``ends_at``: for an opted-in consent of a purpose with ``validity`` or ``inactivity``, the instant it ends
    (computed by the database: :func:`app.eligibility.repository.span_end_sql`); from then on it permits nothing
    and is answered ``expired``, whether or not the sweep has recorded ``validity_ended`` yet.
    """

    state: State
    since: datetime | None
    event_id: uuid.UUID | None
    ends_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class PointFacts:
    """Everything the gate needs about one contact point.

    ``verified``: the address is known to be the contact's (``contact_points.verified_at`` is set); only
    transactional purposes ask, marketing rests on the consent the address itself gave.
    ``paused_until``: the latest end of the pauses of the address (marketing only), running or over; the gate
    compares it with the moment it decides for.
    """

    id: uuid.UUID
    channel: Channel
    value: str
    reachability: Reachability
    purpose_consent: ConsentFact | None
    channel_consent: ConsentFact | None
    suppression_scopes: frozenset[SuppressionScope]
    timezone: str | None
    verified: bool
    paused_until: datetime | None = None
    customer_event_id: uuid.UUID | None = None
    """The ledger event of the newest purchase made with this address in a category the purpose names
    (``similar_products_of``); ``None``: no such purchase."""
    customer_withdrawn: bool = False
    """A withdrawal or objection was ever recorded for this address on the purpose or on all purposes: the
    existing-customer basis has ended for good."""


@dataclass(frozen=True, slots=True)
class Window:
    """A daily send window in the recipient's local time, from ``start`` up to ``end`` (exclusive).

    An ``end`` before ``start`` crosses midnight: 22:00-06:00 is open from 22:00 until 06:00 the next morning.
    An ``end`` equal to ``start`` is the whole day (24 hours from ``start``); the workspace settings refuse it
    as ambiguous, so only a window stored before that check can have it.
    """

    start: time
    end: time

    def contains(self, moment: time) -> bool:
        """Whether the local clock time ``moment`` is inside the window."""
        if self.start < self.end:
            return self.start <= moment < self.end
        return moment >= self.start or moment < self.end


@dataclass(frozen=True, slots=True)
class GateDecision:
    """The gate's answer for one contact point."""

    eligible: bool
    reason: Reason
    evidence_event_id: uuid.UUID | None
    next_window_opens_at: datetime | None = None
    paused_until: datetime | None = None
    expires_at: datetime | None = None
    """When the consent the decision rests on ends or ended: the end of an opted-in consent with a validity or
    inactivity rule (future, or past: ``expired`` before the sweep), the moment an ``expired`` consent expired."""
    holds_until: datetime | None = None
    """For an eligible decision: the moment it stops holding on the same facts (``None``: never by itself), the
    earlier of the end of the consent it rests on and the close of the send window it was decided inside. The
    dispatcher marks no call in flight from then on (hostile review 2026-12-06, R3)."""


def effective_consent(facts: PointFacts) -> ConsentFact | None:
    """The later of the purpose's consent and the channel-level one.

    An objection after an opt-in wins, and so does a fresh opt-in after a withdrawal of everything.
    """
    candidates = [c for c in (facts.purpose_consent, facts.channel_consent) if c is not None and c.since is not None]
    if not candidates:
        return None
    return max(candidates, key=lambda c: c.since or datetime.min.replace(tzinfo=UTC))


def decide_point(
    facts: PointFacts,
    kind: PurposeKind,
    *,
    now: datetime,
    window: Window | None,
    default_timezone: str,
) -> GateDecision:
    """Decide one contact point for one purpose."""
    consent = effective_consent(facts)
    event_id = consent.event_id if consent else None
    if SuppressionScope.ALL in facts.suppression_scopes:
        return GateDecision(eligible=False, reason=Reason.SUPPRESSED, evidence_event_id=event_id)
    if kind is PurposeKind.TRANSACTIONAL:
        return _transactional(facts, event_id)

    state = consent.state if consent else State.NONE
    expires_at = expiry(consent)
    permission, event_id = _permission(facts, state, expires_at, now, event_id)
    if permission is Reason.EXISTING_CUSTOMER:
        expires_at = None  # the basis stands in for the consent; the consent's end says nothing about it
    reasons = [] if permission in ELIGIBLE else [permission]
    if is_suppressed(facts.suppression_scopes, kind):  # here: the marketing scopes (``all`` stopped it above)
        reasons.append(Reason.SUPPRESSED)
    paused = is_paused(facts.paused_until, now)
    if paused:
        reasons.append(Reason.PAUSED)
    if (blocked := REACHABILITY_REASON[facts.reachability]) is not None:
        reasons.append(blocked)
    if reasons:
        reason = min(reasons, key=RANK.__getitem__)
        return GateDecision(
            eligible=False,
            reason=reason,
            evidence_event_id=event_id,
            paused_until=facts.paused_until if reason is Reason.PAUSED else None,
            expires_at=expires_at,
        )
    timezone = facts.timezone or default_timezone
    if window is not None:
        opens = next_opening(window, now, timezone)
        if opens is not None:
            return GateDecision(
                eligible=False,
                reason=Reason.OUTSIDE_SEND_WINDOW,
                evidence_event_id=event_id,
                next_window_opens_at=opens,
                expires_at=expires_at,
            )
    return GateDecision(
        eligible=True,
        reason=permission,
        evidence_event_id=event_id,
        expires_at=expires_at,
        holds_until=_holds_until(permission, expires_at, window, now, timezone),
    )


def _holds_until(
    permission: Reason, expires_at: datetime | None, window: Window | None, now: datetime, timezone: str
) -> datetime | None:
    """When an eligible decision stops holding on the same facts: its consent's end, its send window's close."""
    ends = [expires_at] if permission is Reason.OPTED_IN and expires_at is not None else []
    if window is not None and (closes := window_closes(window, now, timezone)) is not None:
        ends.append(closes)
    return min(ends, default=None)


def expiry(consent: ConsentFact | None) -> datetime | None:
    """When ``consent`` ends (opted in, with an end) or expired (state ``expired``: since when); else ``None``."""
    if consent is None:
        return None
    if consent.state is State.OPTED_IN:
        return consent.ends_at
    if consent.state is State.EXPIRED:
        return consent.since
    return None


def _permission(
    facts: PointFacts, state: State, expires_at: datetime | None, now: datetime, event_id: uuid.UUID | None
) -> tuple[Reason, uuid.UUID | None]:
    """The reason the consent (or the basis beside it) gives a marketing purpose, and the event it rests on.

    An opted-in consent past its end is ``expired`` before any sweep records it (and there, as for a recorded
    expiry, the existing-customer basis may stand in).
    """
    if facts.channel is Channel.PRINT:
        return (Reason.OBJECTED if state is State.OBJECTED else Reason.LEGITIMATE_INTEREST), event_id
    if state is State.OPTED_IN and expires_at is not None and expires_at <= now:
        state = State.EXPIRED
    if is_existing_customer(facts, state):
        return Reason.EXISTING_CUSTOMER, facts.customer_event_id
    return STATE_REASON[state], event_id


def is_existing_customer(facts: PointFacts, state: State) -> bool:
    """Whether the existing-customer basis (UWG §7(3)) permits marketing to this address in consent ``state``.

    All of: an email address, a purchase in a category the purpose names, never a withdrawal or objection on the
    purpose or on all purposes, and a consent state it may stand in for (:data:`CUSTOMER_REPLACES`).
    """
    return (
        facts.channel in CUSTOMER_CHANNELS
        and facts.customer_event_id is not None
        and not facts.customer_withdrawn
        and state in CUSTOMER_REPLACES
    )


def _transactional(facts: PointFacts, event_id: uuid.UUID | None) -> GateDecision:
    """A transactional purpose (no "everything" suppression, checked before): a verified, reachable address.

    An unverified address is refused before its reachability is looked at: it may not be the contact's at all.
    """
    if not facts.verified:
        return GateDecision(eligible=False, reason=Reason.UNVERIFIED_ADDRESS, evidence_event_id=event_id)
    blocked = REACHABILITY_REASON[facts.reachability]
    if blocked is not None:
        return GateDecision(eligible=False, reason=blocked, evidence_event_id=event_id)
    return GateDecision(eligible=True, reason=Reason.TRANSACTIONAL, evidence_event_id=event_id)


def next_opening(window: Window, now: datetime, timezone: str) -> datetime | None:
    """``None`` inside the window; else the first instant after ``now`` at which it is open (UTC).

    Computed on the local clock, so DST is right: the window opens when the clock next shows ``start`` or, where
    a clock change lands inside the window (a start in the hour skipped in spring, an hour repeated in autumn
    that falls back into the window), at the moment of the change.
    """
    zone = ZoneInfo(timezone)
    local = now.astimezone(zone)
    if window.contains(local.time()):
        return None
    day = local.date() if local.time() < window.start else local.date() + timedelta(days=1)
    opening = datetime.combine(day, window.start, tzinfo=zone).astimezone(UTC)
    if opening < now:  # the start lies in a repeated autumn hour whose first pass is over: the second pass
        opening = datetime.combine(day, window.start, tzinfo=zone).replace(fold=1).astimezone(UTC)
    change = _clock_change(now, opening, zone)
    if change is None:
        return opening
    return next_opening(window, change, timezone) or change


def window_closes(window: Window, now: datetime, timezone: str) -> datetime | None:
    """Inside the window at ``now``: the instant it closes at the latest (UTC); ``None``: a whole-day window.

    The next time the local clock shows ``end``; where the zone's offset changes before that, the moment of the
    change (earlier than or at the close: the caller decides again from there, it never holds too long).
    """
    if window.start == window.end:
        return None
    zone = ZoneInfo(timezone)
    local = now.astimezone(zone)
    day = local.date() if local.time() < window.end else local.date() + timedelta(days=1)
    closing = datetime.combine(day, window.end, tzinfo=zone).astimezone(UTC)
    if closing <= now:  # the end lies in a repeated autumn hour whose first pass is over: the second pass
        closing = datetime.combine(day, window.end, tzinfo=zone).replace(fold=1).astimezone(UTC)
    change = _clock_change(now, closing, zone)
    return min(closing, change) if change is not None else closing


def _clock_change(after: datetime, until: datetime, zone: ZoneInfo) -> datetime | None:
    """The moment the zone's UTC offset changes between ``after`` and ``until`` (``None``: it does not).

    Offsets change months apart, so there is at most one change in the two days looked at; zone rules put it on
    a whole second, which a bisection over whole seconds finds exactly.
    """
    offset = after.astimezone(zone).utcoffset()
    if until.astimezone(zone).utcoffset() == offset:
        return None
    low, high = math.floor(after.timestamp()), math.ceil(until.timestamp())
    while high - low > 1:
        middle = (low + high) // 2
        if datetime.fromtimestamp(middle, zone).utcoffset() == offset:
            low = middle
        else:
            high = middle
    return datetime.fromtimestamp(high, UTC)


def strongest(decisions: list[GateDecision]) -> GateDecision | None:
    """The eligible decision if any, else the one with the strongest reason."""
    if not decisions:
        return None
    eligible = [d for d in decisions if d.eligible]
    if eligible:
        return eligible[0]
    return min(decisions, key=lambda d: RANK[d.reason])


def is_paused(paused_until: datetime | None, now: datetime) -> bool:
    """Whether a pause ending at ``paused_until`` still holds at ``now`` (it ends by itself: nothing is swept)."""
    return paused_until is not None and paused_until > now


def is_suppressed(scopes: Collection[SuppressionScope], kind: PurposeKind) -> bool:
    """Whether suppressions of these scopes stop a purpose of ``kind`` (the rule :func:`decide_point` applies).

    ``scopes`` are those of the suppressions that concern the purpose, as in :attr:`PointFacts.suppression_scopes`:
    a ``purpose`` suppression only when it names this purpose. ``all`` stops every message; ``all_marketing`` and
    ``purpose`` stop marketing.
    """
    if SuppressionScope.ALL in scopes:
        return True
    return kind is PurposeKind.MARKETING and any(
        scope in (SuppressionScope.ALL_MARKETING, SuppressionScope.PURPOSE) for scope in scopes
    )
