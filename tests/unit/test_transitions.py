"""The transition tables: the only place transitions are decided."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.domain.model import Channel, LegalBasis, State, Trigger
from app.domain.transitions import (
    IMPORTABLE,
    TABLES,
    TransitionNotAllowed,
    basis_of,
    decide,
    decide_import,
    rule_for,
)

TRIGGERS = [t for t in Trigger if t is not Trigger.IMPORT]


def test_every_rule_names_the_legal_basis_of_its_target():
    for channel, rules in TABLES.items():
        for rule in rules:
            assert rule.basis == basis_of(channel, rule.target), (channel, rule)


def test_print_needs_no_opt_in_and_can_only_be_objected():
    targets = {rule.target for rule in TABLES[Channel.PRINT]}
    assert targets == {State.NONE, State.OBJECTED}
    assert basis_of(Channel.PRINT, State.NONE) is LegalBasis.LEGITIMATE_INTEREST
    with pytest.raises(TransitionNotAllowed):
        decide(Channel.PRINT, State.NONE, Trigger.CONFIRM)


def test_email_needs_double_opt_in():
    assert decide(Channel.EMAIL, State.NONE, Trigger.SIGNUP).target is State.PENDING
    assert decide(Channel.EMAIL, State.PENDING, Trigger.CONFIRM).target is State.OPTED_IN
    with pytest.raises(TransitionNotAllowed, match="'confirm' is not allowed when the email consent is 'none'"):
        decide(Channel.EMAIL, State.NONE, Trigger.CONFIRM)
    with pytest.raises(TransitionNotAllowed):
        decide(Channel.EMAIL, State.NONE, Trigger.START_WORD)


@pytest.mark.parametrize("channel", [Channel.SMS, Channel.WHATSAPP])
@pytest.mark.parametrize("state", [s for s in State if s is not State.OBJECTED])
def test_stop_word_withdraws_phone_consent_from_any_state(channel, state):
    assert decide(channel, state, Trigger.STOP_WORD).target is State.OPTED_OUT


def test_push_permission_denied_is_declined_and_revocation_opts_out():
    assert decide(Channel.APP_PUSH, State.NONE, Trigger.PERMISSION_DENIED).target is State.DECLINED
    assert decide(Channel.WEB_PUSH, State.DECLINED, Trigger.PERMISSION_GRANTED).target is State.OPTED_IN
    assert decide(Channel.APP_PUSH, State.OPTED_IN, Trigger.PROVIDER_GONE).target is State.OPTED_OUT


def test_not_allowed_names_the_current_state_and_the_allowed_sources():
    with pytest.raises(TransitionNotAllowed) as info:
        decide(Channel.PRINT, State.NONE, Trigger.OBJECTION_WITHDRAWN)
    assert info.value.state is State.NONE
    assert "allowed from objected" in str(info.value)


def test_imports_set_only_importable_states():
    assert decide_import(Channel.EMAIL, State.OPTED_IN).target is State.OPTED_IN
    assert decide_import(Channel.PRINT, State.OBJECTED).basis is None
    with pytest.raises(TransitionNotAllowed):
        decide_import(Channel.EMAIL, State.PENDING)
    assert all(State.PENDING not in states for states in IMPORTABLE.values())


@given(channel=st.sampled_from(list(Channel)), triggers=st.lists(st.sampled_from(TRIGGERS), max_size=30))
def test_random_sequences_only_ever_reach_states_the_table_targets(channel, triggers):
    reachable = {State.NONE} | {rule.target for rule in TABLES[channel]}
    state = State.NONE
    for trigger in triggers:
        rule = rule_for(channel, trigger)
        if rule is None or state not in rule.sources:
            with pytest.raises(TransitionNotAllowed):
                decide(channel, state, trigger)
            continue
        assert decide(channel, state, trigger) is rule
        assert state in rule.sources
        state = rule.target
        assert state in reachable


@pytest.mark.parametrize("channel", list(Channel))
@pytest.mark.parametrize("state", list(State))
def test_erasure_ends_every_address_withdrawn_whatever_its_state(channel, state):
    rule = decide(channel, state, Trigger.ERASURE)
    assert rule.target is (State.OBJECTED if channel is Channel.PRINT else State.OPTED_OUT)
    assert rule.basis is None, "nothing may be sent on an erased address"
