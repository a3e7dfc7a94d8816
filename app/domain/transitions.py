"""The consent state machine: one transition table per channel, as data. No other code decides a transition.

A rule says: on ``trigger``, a consent in one of ``sources`` moves to ``target`` and from then on rests on
``basis`` (``None`` where nothing may be sent on it). Self-loops (``opted_out`` → ``opted_out`` on another
STOP) are listed deliberately: the repeated request is evidence worth keeping. ``import`` is not in the
tables: an import states its target, and :func:`decide_import` applies the one rule imports follow.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from app.domain.model import Channel, LegalBasis, State, Trigger

S = State
T = Trigger
ALL_STATES = frozenset(State)


@dataclass(frozen=True, slots=True)
class Rule:
    """One allowed transition."""

    trigger: Trigger
    sources: frozenset[State]
    target: State
    basis: LegalBasis | None


def _rule(trigger: Trigger, sources: Iterable[State], target: State, basis: LegalBasis | None = None) -> Rule:
    return Rule(trigger, frozenset(sources), target, basis)


_CONSENT = LegalBasis.CONSENT
# A withdrawal or objection is accepted in every state: "do not contact me" recorded where no consent
# existed yet still binds later requests (over-suppression is the safe side).
_WITHDRAWABLE = (S.NONE, S.PENDING, S.OPTED_IN, S.DECLINED, S.OPTED_OUT, S.EXPIRED)
# Erasure (Art. 17) is the last event of every address, whatever its state: the address is deleted right after,
# and its suppression keys keep it from marketing if it comes back (so it ends withdrawn, or objected for print).
_ERASED = _rule(T.ERASURE, ALL_STATES, S.OPTED_OUT)
# "Keep me subscribed" before a consent's end: only a consent still in force can be renewed (app/lifecycle).
_RENEWED = _rule(T.RENEWED, (S.OPTED_IN,), S.OPTED_IN, _CONSENT)

_EMAIL = (
    _rule(T.SIGNUP, (S.NONE, S.PENDING, S.EXPIRED, S.OPTED_OUT, S.DECLINED), S.PENDING),
    _rule(T.RESEND, (S.PENDING,), S.PENDING),
    _rule(T.CONFIRM, (S.PENDING,), S.OPTED_IN, _CONSENT),
    # the preference centre's "opt in again" on the address its link was mailed to: the link proves control of it
    _rule(T.PREFERENCE_OPT_IN, (S.NONE, S.PENDING, S.OPTED_OUT, S.EXPIRED, S.DECLINED), S.OPTED_IN, _CONSENT),
    _rule(T.LAPSE, (S.PENDING,), S.EXPIRED),
    _rule(T.UNSUBSCRIBE, _WITHDRAWABLE, S.OPTED_OUT),
    _rule(T.COMPLAINT, _WITHDRAWABLE, S.OPTED_OUT),
    _rule(T.OBJECTION, _WITHDRAWABLE, S.OPTED_OUT),
    _rule(T.VALIDITY_ENDED, (S.OPTED_IN,), S.EXPIRED),
    _RENEWED,
    _ERASED,
)

_PHONE = (
    _rule(T.SIGNUP, (S.NONE, S.PENDING, S.EXPIRED, S.OPTED_OUT, S.DECLINED), S.PENDING),
    _rule(T.RESEND, (S.PENDING,), S.PENDING),
    # From none/opted_out/expired this is a keyword-only opt-in; whether a workspace allows it is policy,
    # decided by the inbound-message service before it asks for this transition.
    _rule(T.START_WORD, (S.NONE, S.PENDING, S.OPTED_IN, S.OPTED_OUT, S.EXPIRED, S.DECLINED), S.OPTED_IN, _CONSENT),
    _rule(T.STOP_WORD, _WITHDRAWABLE, S.OPTED_OUT),
    _rule(T.PROVIDER_BLOCK, _WITHDRAWABLE, S.OPTED_OUT),
    _rule(T.UNSUBSCRIBE, _WITHDRAWABLE, S.OPTED_OUT),
    _rule(T.COMPLAINT, _WITHDRAWABLE, S.OPTED_OUT),
    _rule(T.OBJECTION, _WITHDRAWABLE, S.OPTED_OUT),
    _rule(T.LAPSE, (S.PENDING,), S.EXPIRED),
    _rule(T.VALIDITY_ENDED, (S.OPTED_IN,), S.EXPIRED),
    _RENEWED,
    _ERASED,
    # a recycled number: what the former owner agreed to, or was asked, ends; a withdrawal stays as it is (it binds
    # nobody new: the start word, or a signup, moves on from it)
    _rule(T.REASSIGNED, (S.PENDING, S.OPTED_IN), S.EXPIRED),
)

_PUSH = (
    _rule(T.PERMISSION_GRANTED, (S.NONE, S.DECLINED, S.OPTED_OUT, S.EXPIRED, S.OPTED_IN), S.OPTED_IN, _CONSENT),
    _rule(T.PERMISSION_DENIED, (S.NONE, S.DECLINED), S.DECLINED),
    _rule(T.PERMISSION_REVOKED, (S.OPTED_IN, S.OPTED_OUT), S.OPTED_OUT),
    _rule(T.UNINSTALLED, (S.NONE, S.OPTED_IN, S.DECLINED, S.OPTED_OUT, S.EXPIRED), S.OPTED_OUT),
    _rule(T.PROVIDER_GONE, (S.OPTED_IN, S.OPTED_OUT), S.OPTED_OUT),
    _rule(T.UNSUBSCRIBE, _WITHDRAWABLE, S.OPTED_OUT),
    _rule(T.OBJECTION, _WITHDRAWABLE, S.OPTED_OUT),
    _rule(T.VALIDITY_ENDED, (S.OPTED_IN,), S.EXPIRED),
    _RENEWED,
    _ERASED,
)

# Print needs no opt-in: ``none`` rests on legitimate interest (Art. 6(1)(f)) until the person objects.
_PRINT = (
    _rule(T.OBJECTION, (S.NONE, S.OBJECTED), S.OBJECTED),
    _rule(T.ROBINSON_MATCH, (S.NONE, S.OBJECTED), S.OBJECTED),
    _rule(T.OBJECTION_WITHDRAWN, (S.OBJECTED,), S.NONE, LegalBasis.LEGITIMATE_INTEREST),
    _rule(T.ERASURE, ALL_STATES, S.OBJECTED),
)

TABLES: Mapping[Channel, tuple[Rule, ...]] = MappingProxyType(
    {
        Channel.EMAIL: _EMAIL,
        Channel.SMS: _PHONE,
        Channel.WHATSAPP: _PHONE,
        Channel.APP_PUSH: _PUSH,
        Channel.WEB_PUSH: _PUSH,
        Channel.PRINT: _PRINT,
    }
)

_INDEX: Mapping[tuple[Channel, Trigger], Rule] = MappingProxyType(
    {(channel, rule.trigger): rule for channel, rules in TABLES.items() for rule in rules}
)

#: The states an import may set, per channel (print imports carry objections only).
IMPORTABLE: Mapping[Channel, frozenset[State]] = MappingProxyType(
    {
        channel: frozenset({S.OBJECTED})
        if channel is Channel.PRINT
        else frozenset({S.OPTED_IN, S.OPTED_OUT, S.DECLINED})
        for channel in Channel
    }
)


class TransitionNotAllowed(Exception):
    """The trigger is not allowed in the current state of this channel."""

    def __init__(self, channel: Channel, state: State, trigger: Trigger) -> None:
        if trigger is Trigger.MERGED:
            message = f"A merge may keep the {channel} consent '{state}' or tighten it, never loosen it."
        elif trigger is Trigger.IMPORT:
            importable = ", ".join(sorted(s.value for s in IMPORTABLE[channel]))
            message = f"An import cannot set the {channel} consent to '{state}'; it can set {importable}."
        else:
            allowed = sorted(s.value for s in rule.sources) if (rule := _INDEX.get((channel, trigger))) else []
            where = f"it is allowed from {', '.join(allowed)}" if allowed else f"not on the {channel} channel at all"
            message = f"'{trigger}' is not allowed when the {channel} consent is '{state}'; {where}."
        super().__init__(message)
        self.channel = channel
        self.state = state
        self.trigger = trigger


def rule_for(channel: Channel, trigger: Trigger) -> Rule | None:
    """The rule of ``trigger`` on ``channel``, if the channel knows the trigger."""
    return _INDEX.get((channel, trigger))


def decide(channel: Channel, state: State, trigger: Trigger) -> Rule:
    """The rule that applies, or :class:`TransitionNotAllowed`."""
    rule = _INDEX.get((channel, trigger))
    if rule is None or state not in rule.sources:
        raise TransitionNotAllowed(channel, state, trigger)
    return rule


def basis_of(channel: Channel, state: State) -> LegalBasis | None:
    """The legal basis a consent in ``state`` rests on."""
    if state is State.OPTED_IN:
        return LegalBasis.CONSENT
    if channel is Channel.PRINT and state is State.NONE:
        return LegalBasis.LEGITIMATE_INTEREST
    return None


#: The most restrictive state first: what a merge of two contacts keeps where both speak for the same consent.
RESTRICTIVENESS = (S.OBJECTED, S.OPTED_OUT, S.DECLINED, S.EXPIRED, S.PENDING, S.OPTED_IN, S.NONE)


def most_restrictive(states: Iterable[State]) -> State:
    """The most restrictive of ``states`` (objection > opt-out > declined > expired > pending > opted in > none)."""
    return min(states, key=RESTRICTIVENESS.index)


def decide_merge(channel: Channel, current: State, target: State) -> Rule:
    """A merge records the state it keeps: the same (the merge noted on the address) or a more restrictive one.

    ``merged`` is not in the tables, as ``import`` is not: it names its target, and may never loosen a consent.
    """
    withdrawn = S.OBJECTED if channel is Channel.PRINT else S.OPTED_OUT
    tightens = target is withdrawn and RESTRICTIVENESS.index(target) < RESTRICTIVENESS.index(current)
    if target is not current and not tightens:
        raise TransitionNotAllowed(channel, current, Trigger.MERGED)
    return Rule(Trigger.MERGED, frozenset({current}), target, basis_of(channel, target))


def decide_import(channel: Channel, target: State) -> Rule:
    """Imports may set only :data:`IMPORTABLE` states (whether a later withdrawal wins is the service's check)."""
    if target not in IMPORTABLE[channel]:
        raise TransitionNotAllowed(channel, target, Trigger.IMPORT)
    return Rule(Trigger.IMPORT, ALL_STATES, target, basis_of(channel, target))
