"""The send gate and consents that end: an opted-in consent past its end is ``expired``, with the end."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

from app.domain.gate import Reason, decide_point
from app.domain.model import Channel, PurposeKind, Reachability, State, SuppressionScope
from tests.unit.test_gate import DAYTIME, NOON_BERLIN, facts

END = NOON_BERLIN + timedelta(days=3)


def decide(f, kind=PurposeKind.MARKETING, now=NOON_BERLIN, window=DAYTIME):
    return decide_point(f, kind, now=now, window=window, default_timezone="Europe/Berlin")


def ending(f, at=END):
    assert f.purpose_consent is not None
    return dataclasses.replace(f, purpose_consent=dataclasses.replace(f.purpose_consent, ends_at=at))


def test_an_opted_in_consent_shows_its_end_and_is_expired_from_that_instant():
    before = decide(ending(facts()), now=END - timedelta(seconds=1))
    assert (before.eligible, before.reason, before.expires_at) == (True, Reason.OPTED_IN, END)
    at_the_end = decide(ending(facts()), now=END)
    assert (at_the_end.eligible, at_the_end.reason, at_the_end.expires_at) == (False, Reason.EXPIRED, END)


def test_a_consent_without_an_end_shows_none():
    decision = decide(facts())
    assert (decision.eligible, decision.expires_at) == (True, None)


def test_an_expired_consent_shows_when_it_expired():
    decision = decide(facts(State.EXPIRED))
    assert decision.reason is Reason.EXPIRED
    assert decision.expires_at == decision_since(facts(State.EXPIRED))


def decision_since(f):
    assert f.purpose_consent is not None
    return f.purpose_consent.since


def test_stronger_reasons_still_win_over_an_ended_consent():
    late = NOON_BERLIN + timedelta(days=10)
    suppressed = dataclasses.replace(ending(facts()), suppression_scopes=frozenset({SuppressionScope.ALL_MARKETING}))
    assert decide(suppressed, now=late).reason is Reason.SUPPRESSED
    withdrawn_later = ending(facts(channel_state=State.OPTED_OUT, channel_later=True))
    assert decide(withdrawn_later, now=late).reason is Reason.OPTED_OUT
    unreachable = dataclasses.replace(ending(facts()), reachability=Reachability.UNDELIVERABLE)
    assert decide(unreachable, now=late).reason is Reason.EXPIRED  # the consent's state outranks the address's


def test_an_ended_consent_is_not_waiting_for_the_send_window():
    night = END + timedelta(hours=12)  # 00:00 in Berlin: outside the daytime window
    decision = decide(ending(facts()), now=night)
    assert (decision.reason, decision.next_window_opens_at) == (Reason.EXPIRED, None)


def test_transactional_and_print_are_untouched():
    transactional = decide(ending(facts()), kind=PurposeKind.TRANSACTIONAL, now=END + timedelta(days=1))
    assert (transactional.eligible, transactional.expires_at) == (True, None)
    printed = decide(ending(facts(State.OPTED_IN, channel=Channel.PRINT)), now=END, window=None)
    assert printed.reason is Reason.LEGITIMATE_INTEREST
