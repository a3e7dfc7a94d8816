"""The send gate and pauses: a suppression with an end stops marketing until then, and only marketing."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest

from app.domain.gate import Reason, decide_point, is_paused
from app.domain.model import Channel, PurposeKind, Reachability, State, SuppressionScope
from tests.unit.test_gate import DAYTIME, NOON_BERLIN, facts

LATER = NOON_BERLIN + timedelta(weeks=4)


def decide(f, kind=PurposeKind.MARKETING, now=NOON_BERLIN, window=DAYTIME):
    return decide_point(f, kind, now=now, window=window, default_timezone="Europe/Berlin")


def paused(f, until=LATER):
    return dataclasses.replace(f, paused_until=until)


def test_a_running_pause_answers_paused_with_its_end():
    decision = decide(paused(facts()))
    assert (decision.eligible, decision.reason, decision.paused_until) == (False, Reason.PAUSED, LATER)


def test_a_pause_ends_by_itself_at_its_end():
    assert decide(paused(facts()), now=LATER - timedelta(seconds=1)).reason is Reason.PAUSED
    at_the_end = decide(paused(facts()), now=LATER)
    assert (at_the_end.eligible, at_the_end.reason, at_the_end.paused_until) == (True, Reason.OPTED_IN, None)
    assert not is_paused(LATER, LATER)
    assert not is_paused(None, LATER)


def test_transactional_messages_are_not_paused():
    decision = decide(paused(facts(None)), kind=PurposeKind.TRANSACTIONAL)
    assert (decision.eligible, decision.reason, decision.paused_until) == (True, Reason.TRANSACTIONAL, None)


def test_postal_advertising_is_paused_too():
    decision = decide(paused(facts(None, channel=Channel.PRINT)), window=None)
    assert decision.reason is Reason.PAUSED


@pytest.mark.parametrize(
    ("point", "reason"),
    [
        (facts(State.OBJECTED), Reason.OBJECTED),
        (facts(State.OPTED_OUT), Reason.OPTED_OUT),
        (facts(scopes=[SuppressionScope.ALL_MARKETING]), Reason.SUPPRESSED),
        (facts(State.DECLINED), Reason.PAUSED),
        (facts(State.PENDING), Reason.PAUSED),
        (facts(None), Reason.PAUSED),
        (facts(reachability=Reachability.UNDELIVERABLE), Reason.PAUSED),
    ],
)
def test_a_pause_ranks_after_the_persons_lasting_will_and_before_the_rest(point, reason):
    decision = decide(paused(point))
    assert decision.reason is reason
    assert decision.paused_until == (LATER if reason is Reason.PAUSED else None)


def test_a_pause_is_answered_before_the_send_window():
    night = NOON_BERLIN + timedelta(hours=12)
    decision = decide(paused(facts()), now=night)
    assert (decision.reason, decision.next_window_opens_at) == (Reason.PAUSED, None)
