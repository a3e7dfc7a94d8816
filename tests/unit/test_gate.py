"""The send gate: reasons, precedence, transactional vs marketing, send windows across time zones and DST."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, time, timedelta

import pytest

from app.domain.gate import (
    PRECEDENCE,
    ConsentFact,
    PointFacts,
    Reason,
    Window,
    decide_point,
    next_opening,
    strongest,
)
from app.domain.model import Channel, PurposeKind, Reachability, State, SuppressionScope

NOON_BERLIN = datetime(2026, 6, 10, 10, 0, tzinfo=UTC)  # 12:00 in Berlin (CEST)
T0 = datetime(2026, 1, 1, tzinfo=UTC)
EVENT = uuid.UUID("01a20403-96cc-7247-94d2-bb2e46fed6b3")


def facts(
    state=State.OPTED_IN,
    *,
    channel=Channel.SMS,
    channel_state=None,
    channel_later=True,
    reachability=Reachability.REACHABLE,
    scopes=(),
    timezone="Europe/Berlin",
    verified=True,
):
    purpose = None if state is None else ConsentFact(state, T0, EVENT)
    level = None
    if channel_state is not None:
        when = T0 + timedelta(days=1 if channel_later else -1)
        level = ConsentFact(channel_state, when, uuid.uuid4())
    return PointFacts(
        id=uuid.uuid4(),
        channel=channel,
        value="+4915123456789",
        reachability=reachability,
        purpose_consent=purpose,
        channel_consent=level,
        suppression_scopes=frozenset(scopes),
        timezone=timezone,
        verified=verified,
    )


DAYTIME = Window(time(8), time(21))


def decide(f, kind=PurposeKind.MARKETING, now=NOON_BERLIN, window=DAYTIME):
    return decide_point(f, kind, now=now, window=window, default_timezone="Europe/Berlin")


@pytest.mark.parametrize(
    ("state", "reason"),
    [
        (State.OPTED_IN, Reason.OPTED_IN),
        (State.PENDING, Reason.PENDING_CONFIRMATION),
        (State.OPTED_OUT, Reason.OPTED_OUT),
        (State.DECLINED, Reason.DECLINED),
        (State.EXPIRED, Reason.EXPIRED),
        (State.NONE, Reason.NO_CONSENT),
        (None, Reason.NO_CONSENT),
    ],
)
def test_every_consent_state_gives_its_reason(state, reason):
    decision = decide(facts(state))
    assert decision.reason is reason
    assert decision.eligible is (reason is Reason.OPTED_IN)
    assert decision.evidence_event_id == (EVENT if state is not None else None)


def test_print_rests_on_legitimate_interest_until_objected():
    assert decide(facts(None, channel=Channel.PRINT), window=None).reason is Reason.LEGITIMATE_INTEREST
    objected = decide(facts(None, channel=Channel.PRINT, channel_state=State.OBJECTED), window=None)
    assert (objected.eligible, objected.reason) == (False, Reason.OBJECTED)


@pytest.mark.parametrize(
    ("reachability", "reason"),
    [
        (Reachability.UNDELIVERABLE, Reason.UNDELIVERABLE),
        (Reachability.PROVIDER_BLOCKED, Reason.PROVIDER_BLOCKED),
        (Reachability.EXPIRED, Reason.ADDRESS_EXPIRED),
    ],
)
def test_unreachable_addresses_are_not_eligible_even_with_consent(reachability, reason):
    assert decide(facts(reachability=reachability)).reason is reason


def test_suppression_blocks_marketing_and_only_everything_blocks_transactional():
    assert decide(facts(scopes=[SuppressionScope.ALL_MARKETING])).reason is Reason.SUPPRESSED
    assert decide(facts(scopes=[SuppressionScope.PURPOSE])).reason is Reason.SUPPRESSED
    transactional = decide(facts(State.OPTED_OUT, scopes=[SuppressionScope.ALL_MARKETING]), PurposeKind.TRANSACTIONAL)
    assert (transactional.eligible, transactional.reason) == (True, Reason.TRANSACTIONAL)
    everything = decide(facts(scopes=[SuppressionScope.ALL]), PurposeKind.TRANSACTIONAL)
    assert (everything.eligible, everything.reason) == (False, Reason.SUPPRESSED)


def test_transactional_needs_no_consent_but_reachability_and_ignores_the_window():
    night = datetime(2026, 6, 10, 1, 0, tzinfo=UTC)
    assert decide(facts(None), PurposeKind.TRANSACTIONAL, now=night).eligible
    assert (
        decide(facts(None, reachability=Reachability.UNDELIVERABLE), PurposeKind.TRANSACTIONAL).reason
        is Reason.UNDELIVERABLE
    )


def test_transactional_needs_a_verified_address_marketing_does_not_ask():
    """Finding 21 (issue 16): an address a form attached to a contact is not the contact's until verified."""
    unverified = decide(facts(None, verified=False), PurposeKind.TRANSACTIONAL)
    assert (unverified.eligible, unverified.reason) == (False, Reason.UNVERIFIED_ADDRESS)
    opted_in = decide(facts(State.OPTED_IN, verified=False), PurposeKind.TRANSACTIONAL)
    assert (opted_in.eligible, opted_in.reason) == (False, Reason.UNVERIFIED_ADDRESS), "consent is not proof"
    assert opted_in.evidence_event_id == EVENT
    assert decide(facts(State.OPTED_IN, verified=False)).reason is Reason.OPTED_IN, "marketing follows consent"
    assert decide(facts(None, verified=True), PurposeKind.TRANSACTIONAL).reason is Reason.TRANSACTIONAL
    # an unverified address that cannot be reached either: it may not be the contact's at all, which comes first;
    # an "everything" suppression (the person's own will) comes before that
    unreachable = facts(None, verified=False, reachability=Reachability.UNDELIVERABLE)
    assert decide(unreachable, PurposeKind.TRANSACTIONAL).reason is Reason.UNVERIFIED_ADDRESS
    everything = facts(None, verified=False, scopes=[SuppressionScope.ALL])
    assert decide(everything, PurposeKind.TRANSACTIONAL).reason is Reason.SUPPRESSED


def test_a_verified_address_wins_over_an_unverified_one_of_the_same_channel():
    attached = decide(facts(None, verified=False), PurposeKind.TRANSACTIONAL)
    own = decide(facts(None, verified=True), PurposeKind.TRANSACTIONAL)
    assert strongest([attached, own]) is own
    assert strongest([attached]) is attached


def test_the_later_of_purpose_and_channel_level_consent_wins():
    assert decide(facts(State.OPTED_IN, channel_state=State.OPTED_OUT, channel_later=True)).reason is Reason.OPTED_OUT
    assert decide(facts(State.OPTED_IN, channel_state=State.OPTED_OUT, channel_later=False)).reason is Reason.OPTED_IN


def test_precedence_when_several_reasons_apply():
    assert (
        decide(
            facts(State.OPTED_OUT, scopes=[SuppressionScope.ALL_MARKETING], reachability=Reachability.UNDELIVERABLE)
        ).reason
        is Reason.OPTED_OUT
    )
    assert decide(facts(State.PENDING, scopes=[SuppressionScope.ALL_MARKETING])).reason is Reason.SUPPRESSED
    assert decide(facts(State.NONE, reachability=Reachability.PROVIDER_BLOCKED)).reason is Reason.NO_CONSENT
    night = datetime(2026, 6, 10, 22, 0, tzinfo=UTC)
    assert decide(facts(reachability=Reachability.UNDELIVERABLE), now=night).reason is Reason.UNDELIVERABLE
    assert PRECEDENCE.index(Reason.OBJECTED) == 0


def test_strongest_prefers_an_eligible_point_then_the_strongest_reason():
    good, bad, worse = decide(facts()), decide(facts(State.PENDING)), decide(facts(State.OPTED_OUT))
    assert strongest([bad, good, worse]) is good
    assert strongest([bad, worse]) is worse
    assert strongest([]) is None


def test_outside_the_window_answers_when_it_opens():
    evening = datetime(2026, 6, 10, 19, 30, tzinfo=UTC)  # 21:30 in Berlin
    decision = decide(facts(), now=evening)
    assert (decision.eligible, decision.reason) == (False, Reason.OUTSIDE_SEND_WINDOW)
    assert decision.next_window_opens_at == datetime(2026, 6, 11, 6, 0, tzinfo=UTC)  # 08:00 CEST
    early = datetime(2026, 6, 10, 4, 0, tzinfo=UTC)  # 06:00 in Berlin
    assert decide(facts(), now=early).next_window_opens_at == datetime(2026, 6, 10, 6, 0, tzinfo=UTC)


def test_the_contacts_time_zone_decides_and_the_workspace_zone_is_the_fallback():
    # 12:00 UTC is 08:00 in New York (EDT) -> open; 07:00 in New York in winter (EST) -> closed
    summer = datetime(2026, 6, 10, 12, 0, tzinfo=UTC)
    winter = datetime(2026, 1, 10, 12, 0, tzinfo=UTC)
    assert decide(facts(timezone="America/New_York"), now=summer).eligible
    closed = decide(facts(timezone="America/New_York"), now=winter)
    assert closed.reason is Reason.OUTSIDE_SEND_WINDOW
    assert closed.next_window_opens_at == datetime(2026, 1, 10, 13, 0, tzinfo=UTC)
    assert (
        decide(facts(timezone=None), now=datetime(2026, 6, 10, 5, 0, tzinfo=UTC)).reason is Reason.OUTSIDE_SEND_WINDOW
    )


@pytest.mark.parametrize(
    ("now", "zone", "expected"),
    [
        # the night before Europe's spring-forward (29 March 2026): 08:00 CEST is 06:00 UTC, not 07:00
        (datetime(2026, 3, 28, 22, 0, tzinfo=UTC), "Europe/Berlin", datetime(2026, 3, 29, 6, 0, tzinfo=UTC)),
        # the night before fall-back (25 October 2026): 08:00 CET is 07:00 UTC
        (datetime(2026, 10, 24, 22, 0, tzinfo=UTC), "Europe/Berlin", datetime(2026, 10, 25, 7, 0, tzinfo=UTC)),
        # US spring-forward (8 March 2026): 08:00 EDT is 12:00 UTC
        (datetime(2026, 3, 8, 3, 0, tzinfo=UTC), "America/New_York", datetime(2026, 3, 8, 12, 0, tzinfo=UTC)),
    ],
)
def test_next_opening_is_right_across_dst_changes(now, zone, expected):
    assert next_opening(Window(time(8), time(21)), now, zone) == expected


def test_no_window_means_any_time():
    assert decide(facts(), now=datetime(2026, 6, 10, 1, 0, tzinfo=UTC), window=None).eligible
