"""Every rule of every transition table, checked against a statement of the rules written out here.

The statement below is not read from ``app.domain.transitions``: it is the state machine of DESIGN.md ("The
state machine") and CHANNEL_RULES.md, with the additions the tables make written out state by state, and the
reason for each. For every channel, every trigger and every state the test asks the table and compares: each
listed source state is allowed and lands on the listed target with the listed legal basis; every other state is
refused with :class:`TransitionNotAllowed`.
"""

from __future__ import annotations

import pytest

from app.domain.model import Channel, LegalBasis, State, Trigger
from app.domain.transitions import (
    ALL_STATES,
    IMPORTABLE,
    TABLES,
    TransitionNotAllowed,
    basis_of,
    decide,
    decide_import,
    rule_for,
)

NONE, PENDING, OPTED_IN, DECLINED = State.NONE, State.PENDING, State.OPTED_IN, State.DECLINED
OPTED_OUT, EXPIRED, OBJECTED = State.OPTED_OUT, State.EXPIRED, State.OBJECTED
EVERY_STATE = {NONE, PENDING, OPTED_IN, DECLINED, OPTED_OUT, EXPIRED, OBJECTED}
# A withdrawal is recorded in every state but 'objected' (which only print reaches): "do not contact me" said
# where no consent existed yet still binds later requests (over-suppression is the safe side, CHANNEL_RULES §2.3).
ANY_BUT_OBJECTED = EVERY_STATE - {OBJECTED}
CONSENT = LegalBasis.CONSENT

# trigger -> (sources, target, basis)
Spec = dict[Trigger, tuple[set[State], State, LegalBasis | None]]

EMAIL: Spec = {
    # DESIGN.md: none/expired/opted_out -[signup]-> pending; also a second signup while pending (a new link) and
    # after a refusal; an address already opted in gets a mail saying so instead (no transition).
    Trigger.SIGNUP: ({NONE, PENDING, EXPIRED, OPTED_OUT, DECLINED}, PENDING, None),
    Trigger.RESEND: ({PENDING}, PENDING, None),
    Trigger.CONFIRM: ({PENDING}, OPTED_IN, CONSENT),  # double opt-in: only a pending signup is confirmed
    # the preference centre, on the address its link was mailed to (the link is the proof); email only
    Trigger.PREFERENCE_OPT_IN: ({NONE, PENDING, OPTED_OUT, EXPIRED, DECLINED}, OPTED_IN, CONSENT),
    Trigger.LAPSE: ({PENDING}, EXPIRED, None),
    Trigger.UNSUBSCRIBE: (ANY_BUT_OBJECTED, OPTED_OUT, None),
    Trigger.COMPLAINT: (ANY_BUT_OBJECTED, OPTED_OUT, None),  # CHANNEL_RULES E37: a complaint is an opt-out
    Trigger.OBJECTION: (ANY_BUT_OBJECTED, OPTED_OUT, None),
    Trigger.VALIDITY_ENDED: ({OPTED_IN}, EXPIRED, None),  # consent ageing (E11)
    Trigger.RENEWED: ({OPTED_IN}, OPTED_IN, CONSENT),  # "keep me subscribed" before the end (E11)
    Trigger.ERASURE: (EVERY_STATE, OPTED_OUT, None),  # Art. 17: the last event of an address, whatever its state
}
PHONE: Spec = {
    Trigger.SIGNUP: ({NONE, PENDING, EXPIRED, OPTED_OUT, DECLINED}, PENDING, None),
    Trigger.RESEND: ({PENDING}, PENDING, None),
    # the start word confirms a pending signup, and is a keyword-only opt-in from anywhere else (whether a
    # workspace allows that is the inbound service's policy); a repeated START is kept as evidence
    Trigger.START_WORD: (ANY_BUT_OBJECTED, OPTED_IN, CONSENT),
    Trigger.STOP_WORD: (ANY_BUT_OBJECTED, OPTED_OUT, None),
    Trigger.PROVIDER_BLOCK: (ANY_BUT_OBJECTED, OPTED_OUT, None),  # Twilio 21610 mirrors a STOP (§0.3)
    Trigger.UNSUBSCRIBE: (ANY_BUT_OBJECTED, OPTED_OUT, None),
    Trigger.COMPLAINT: (ANY_BUT_OBJECTED, OPTED_OUT, None),
    Trigger.OBJECTION: (ANY_BUT_OBJECTED, OPTED_OUT, None),
    Trigger.LAPSE: ({PENDING}, EXPIRED, None),
    Trigger.VALIDITY_ENDED: ({OPTED_IN}, EXPIRED, None),
    Trigger.RENEWED: ({OPTED_IN}, OPTED_IN, CONSENT),
    Trigger.ERASURE: (EVERY_STATE, OPTED_OUT, None),
    # a recycled number (issue 19): the former owner's consent or pending request ends; a withdrawal stays
    Trigger.REASSIGNED: ({PENDING, OPTED_IN}, EXPIRED, None),
}
PUSH: Spec = {
    # DESIGN.md: none/declined/opted_out -[permission granted + registered]-> opted_in; also after an expired
    # consent, and again when already in (a re-registration is recorded)
    Trigger.PERMISSION_GRANTED: ({NONE, DECLINED, OPTED_OUT, EXPIRED, OPTED_IN}, OPTED_IN, CONSENT),
    Trigger.PERMISSION_DENIED: ({NONE, DECLINED}, DECLINED, None),  # none -[denied]-> declined
    Trigger.PERMISSION_REVOKED: ({OPTED_IN, OPTED_OUT}, OPTED_OUT, None),
    # an uninstall ends whatever the installation had (but a pending one: push has no pending)
    Trigger.UNINSTALLED: ({NONE, OPTED_IN, DECLINED, OPTED_OUT, EXPIRED}, OPTED_OUT, None),
    Trigger.PROVIDER_GONE: ({OPTED_IN, OPTED_OUT}, OPTED_OUT, None),  # FCM UNREGISTERED, APNs 410, 404/410
    Trigger.UNSUBSCRIBE: (ANY_BUT_OBJECTED, OPTED_OUT, None),
    Trigger.OBJECTION: (ANY_BUT_OBJECTED, OPTED_OUT, None),
    Trigger.VALIDITY_ENDED: ({OPTED_IN}, EXPIRED, None),
    Trigger.RENEWED: ({OPTED_IN}, OPTED_IN, CONSENT),
    Trigger.ERASURE: (EVERY_STATE, OPTED_OUT, None),
}
PRINT: Spec = {
    # print needs no opt-in: none rests on legitimate interest until an objection (CHANNEL_RULES §6.1 D1, D2)
    Trigger.OBJECTION: ({NONE, OBJECTED}, OBJECTED, None),
    Trigger.ROBINSON_MATCH: ({NONE, OBJECTED}, OBJECTED, None),
    Trigger.OBJECTION_WITHDRAWN: ({OBJECTED}, NONE, LegalBasis.LEGITIMATE_INTEREST),  # with proof
    Trigger.ERASURE: (EVERY_STATE, OBJECTED, None),  # an erased postal address stays objected
}
SPEC: dict[Channel, Spec] = {
    Channel.EMAIL: EMAIL,
    Channel.SMS: PHONE,
    Channel.WHATSAPP: PHONE,
    Channel.APP_PUSH: PUSH,
    Channel.WEB_PUSH: PUSH,
    Channel.PRINT: PRINT,
}
TRIGGERS = [t for t in Trigger if t is not Trigger.IMPORT]  # an import states its target (decide_import)


@pytest.mark.parametrize("trigger", TRIGGERS)
@pytest.mark.parametrize("channel", list(Channel))
def test_each_source_state_is_allowed_and_every_other_state_refused(channel, trigger):
    expected = SPEC[channel].get(trigger)
    sources, target, basis = expected or (set(), None, None)
    for state in EVERY_STATE:
        if state in sources:
            rule = decide(channel, state, trigger)
            assert (rule.trigger, rule.target, rule.basis) == (trigger, target, basis), (channel, trigger, state)
        else:
            with pytest.raises(TransitionNotAllowed) as refused:
                decide(channel, state, trigger)
            assert (refused.value.channel, refused.value.state, refused.value.trigger) == (channel, state, trigger)


@pytest.mark.parametrize("channel", list(Channel))
def test_a_channel_knows_exactly_the_triggers_of_its_rules_each_once(channel):
    triggers = [rule.trigger for rule in TABLES[channel]]
    assert sorted(triggers) == sorted(SPEC[channel]), "a trigger missing, extra or listed twice"
    for trigger in TRIGGERS:
        rule = rule_for(channel, trigger)
        if trigger in SPEC[channel]:
            assert rule is not None
            assert (set(rule.sources), rule.target, rule.basis) == SPEC[channel][trigger]
        else:
            assert rule is None


def test_the_phone_and_push_channels_share_their_tables():
    assert TABLES[Channel.SMS] == TABLES[Channel.WHATSAPP]
    assert TABLES[Channel.APP_PUSH] == TABLES[Channel.WEB_PUSH]


def test_all_states_are_the_seven_of_the_design():
    assert set(ALL_STATES) == EVERY_STATE
    assert len(State) == 7


# opted in rests on consent on every channel, print's 'none' on legitimate interest; no other state permits
BASES = {(channel, OPTED_IN): CONSENT for channel in Channel} | {(Channel.PRINT, NONE): LegalBasis.LEGITIMATE_INTEREST}


@pytest.mark.parametrize("channel", list(Channel))
def test_the_legal_basis_of_each_state(channel):
    for state in EVERY_STATE:
        assert basis_of(channel, state) == BASES.get((channel, state)), state


@pytest.mark.parametrize("channel", list(Channel))
def test_imports_set_only_the_importable_states_with_their_basis(channel):
    importable = {OBJECTED} if channel is Channel.PRINT else {OPTED_IN, OPTED_OUT, DECLINED}
    assert IMPORTABLE[channel] == importable
    for state in EVERY_STATE:
        if state in importable:
            rule = decide_import(channel, state)
            assert (rule.trigger, rule.target, rule.sources) == (Trigger.IMPORT, state, frozenset(EVERY_STATE))
            assert rule.basis == (CONSENT if state is OPTED_IN else None)
        else:
            with pytest.raises(TransitionNotAllowed) as refused:
                decide_import(channel, state)
            assert (refused.value.state, refused.value.trigger) == (state, Trigger.IMPORT)


def test_a_refusal_names_the_current_state_and_the_states_it_is_allowed_from():
    with pytest.raises(TransitionNotAllowed) as refused:
        decide(Channel.EMAIL, OPTED_IN, Trigger.CONFIRM)
    assert str(refused.value) == (
        "'confirm' is not allowed when the email consent is 'opted_in'; it is allowed from pending."
    )
    with pytest.raises(TransitionNotAllowed) as several:
        decide(Channel.APP_PUSH, PENDING, Trigger.PERMISSION_REVOKED)
    assert str(several.value).endswith("it is allowed from opted_in, opted_out.")


def test_a_refusal_of_a_trigger_the_channel_does_not_know_says_so():
    with pytest.raises(TransitionNotAllowed) as refused:
        decide(Channel.PRINT, NONE, Trigger.CONFIRM)
    assert str(refused.value) == (
        "'confirm' is not allowed when the print consent is 'none'; not on the print channel at all."
    )


def test_a_refused_import_names_the_states_an_import_can_set():
    with pytest.raises(TransitionNotAllowed) as refused:
        decide_import(Channel.EMAIL, PENDING)
    assert str(refused.value) == (
        "An import cannot set the email consent to 'pending'; it can set declined, opted_in, opted_out."
    )
    with pytest.raises(TransitionNotAllowed, match=r"it can set objected\.$"):
        decide_import(Channel.PRINT, NONE)
