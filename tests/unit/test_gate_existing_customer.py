"""The existing-customer basis in the send gate (UWG §7(3), CHANNEL_RULES.md E3; README "Existing customers").

It permits like ``opted_in``, on email only, for a purchase in a category the purpose names, where the consent alone
would answer ``no_consent``, ``pending_confirmation``, ``expired`` or ``declined``; any objection, opt-out,
suppression or pause beats it, and a withdrawal or objection ever recorded for the address ends it for good.
"""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime, time, timedelta

from hypothesis import given
from hypothesis import strategies as st

from app.domain.gate import (
    CUSTOMER_CHANNELS,
    CUSTOMER_REPLACES,
    ELIGIBLE,
    RANK,
    ConsentFact,
    PointFacts,
    Reason,
    Window,
    decide_point,
)
from app.domain.model import Channel, PurposeKind, Reachability, State, SuppressionScope

NOW = datetime(2026, 6, 10, 10, 0, tzinfo=UTC)  # 12:00 in Berlin
DAYTIME = Window(time(8), time(21))
CONSENT_EVENT = uuid.UUID("01a20403-96cc-7247-94d2-bb2e46fed6b3")
PURCHASE_EVENT = uuid.UUID("01a20403-96cc-7247-94d2-bb2e46fed6b4")


def customer(state=None, *, channel=Channel.EMAIL, withdrawn=False, scopes=(), paused_until=None, reachable=True):
    consent = None if state is None else ConsentFact(state, NOW - timedelta(days=3), CONSENT_EVENT)
    return PointFacts(
        id=uuid.uuid4(),
        channel=channel,
        value="jane@example.com",
        reachability=Reachability.REACHABLE if reachable else Reachability.UNDELIVERABLE,
        purpose_consent=consent,
        channel_consent=None,
        suppression_scopes=frozenset(scopes),
        timezone=None,
        verified=True,
        paused_until=paused_until,
        customer_event_id=PURCHASE_EVENT,
        customer_withdrawn=withdrawn,
    )


def decide(facts, kind=PurposeKind.MARKETING, now=NOW, window=DAYTIME):
    return decide_point(facts, kind, now=now, window=window, default_timezone="Europe/Berlin")


def test_a_customer_without_consent_is_eligible_by_email_with_the_purchase_as_evidence():
    decision = decide(customer())
    assert (decision.eligible, decision.reason, decision.evidence_event_id) == (
        True,
        Reason.EXISTING_CUSTOMER,
        PURCHASE_EVENT,
    )


def test_it_stands_in_for_no_consent_pending_expired_and_declined_only():
    assert {State.NONE, State.PENDING, State.EXPIRED, State.DECLINED} == CUSTOMER_REPLACES
    for state in (State.PENDING, State.EXPIRED, State.DECLINED):
        assert decide(customer(state)).reason is Reason.EXISTING_CUSTOMER


def test_an_opt_in_is_answered_as_the_consent_it_is():
    decision = decide(customer(State.OPTED_IN))
    assert (decision.reason, decision.evidence_event_id) == (Reason.OPTED_IN, CONSENT_EVENT)


def test_an_opt_out_or_objection_beats_it():
    for state, reason in ((State.OPTED_OUT, Reason.OPTED_OUT), (State.OBJECTED, Reason.OBJECTED)):
        decision = decide(customer(state))
        assert (decision.eligible, decision.reason) == (False, reason)


def test_a_withdrawal_ever_recorded_ends_it_even_when_the_consent_moved_on_since():
    # e.g. unsubscribed, then a new sign-up that was never confirmed, then another purchase
    decision = decide(customer(State.PENDING, withdrawn=True))
    assert (decision.eligible, decision.reason) == (False, Reason.PENDING_CONFIRMATION)
    assert decide(customer(withdrawn=True)).reason is Reason.NO_CONSENT


def test_suppressions_pauses_reachability_and_the_window_beat_it_as_they_beat_an_opt_in():
    assert decide(customer(scopes=[SuppressionScope.ALL_MARKETING])).reason is Reason.SUPPRESSED
    assert decide(customer(scopes=[SuppressionScope.PURPOSE])).reason is Reason.SUPPRESSED
    assert decide(customer(scopes=[SuppressionScope.ALL])).reason is Reason.SUPPRESSED
    paused = decide(customer(paused_until=NOW + timedelta(days=7)))
    assert (paused.reason, paused.paused_until) == (Reason.PAUSED, NOW + timedelta(days=7))
    assert decide(customer(paused_until=NOW - timedelta(days=1))).reason is Reason.EXISTING_CUSTOMER  # pause over
    assert decide(customer(reachable=False)).reason is Reason.UNDELIVERABLE
    night = decide(customer(), now=datetime(2026, 6, 10, 21, 0, tzinfo=UTC))
    assert (night.eligible, night.reason) == (False, Reason.OUTSIDE_SEND_WINDOW)


def test_never_on_sms_whatsapp_push_or_print():
    assert {Channel.EMAIL} == CUSTOMER_CHANNELS
    assert decide(customer(channel=Channel.SMS)).reason is Reason.NO_CONSENT
    assert decide(customer(channel=Channel.WHATSAPP)).reason is Reason.NO_CONSENT
    assert decide(customer(channel=Channel.APP_PUSH)).reason is Reason.NO_CONSENT
    assert decide(customer(channel=Channel.WEB_PUSH)).reason is Reason.NO_CONSENT
    assert decide(customer(channel=Channel.PRINT)).reason is Reason.LEGITIMATE_INTEREST  # print's own basis


def test_transactional_purposes_are_not_its_business():
    assert decide(customer(), kind=PurposeKind.TRANSACTIONAL).reason is Reason.TRANSACTIONAL


def test_existing_customer_permits_like_opted_in():
    assert Reason.EXISTING_CUSTOMER in ELIGIBLE


facts_strategy = st.builds(
    lambda channel, state, withdrawn, scopes, paused, reachability, event: dataclasses.replace(
        customer(state, channel=channel, withdrawn=withdrawn, scopes=scopes, paused_until=paused),
        reachability=reachability,
        customer_event_id=event,
    ),
    st.sampled_from(Channel),
    st.none() | st.sampled_from(State),
    st.booleans(),
    st.frozensets(st.sampled_from(SuppressionScope)),
    st.none() | st.sampled_from([NOW - timedelta(hours=1), NOW + timedelta(hours=1)]),
    st.sampled_from(Reachability),
    st.none() | st.just(PURCHASE_EVENT),
)


@given(facts_strategy, st.sampled_from([NOW, datetime(2026, 6, 10, 21, 0, tzinfo=UTC)]))
def test_the_basis_only_ever_adds_an_email_permission_where_nothing_forbids_it(facts, now):
    without = dataclasses.replace(facts, customer_event_id=None, customer_withdrawn=False)
    decision, plain = decide(facts, now=now), decide(without, now=now)
    if decision.reason is Reason.EXISTING_CUSTOMER:
        state = facts.purpose_consent.state if facts.purpose_consent else State.NONE
        assert facts.channel is Channel.EMAIL
        assert facts.customer_event_id is not None
        assert not facts.customer_withdrawn
        assert state in CUSTOMER_REPLACES
        assert not facts.suppression_scopes
        assert facts.reachability is Reachability.REACHABLE
        assert facts.paused_until is None or facts.paused_until <= now
        assert decision.evidence_event_id == PURCHASE_EVENT
        assert plain.reason in (Reason.NO_CONSENT, Reason.PENDING_CONFIRMATION, Reason.EXPIRED, Reason.DECLINED)
    elif decision.reason is Reason.OUTSIDE_SEND_WINDOW:
        assert decision.eligible is False
    else:
        # without the basis at work, the decision is the consent's own; where the basis answered the consent
        # question, a later fact about the address (undeliverable, unverified…) may answer instead of "no consent"
        assert decision.eligible == plain.eligible
        if decision.reason != plain.reason:
            replaced = (Reason.NO_CONSENT, Reason.PENDING_CONFIRMATION, Reason.EXPIRED, Reason.DECLINED)
            assert plain.reason in replaced
            assert RANK[decision.reason] > RANK[plain.reason]
    if facts.channel is not Channel.EMAIL or facts.customer_withdrawn or facts.customer_event_id is None:
        assert decision == plain
    if plain.eligible:
        assert decision == plain  # an opt-in (or print's basis) is answered as itself
