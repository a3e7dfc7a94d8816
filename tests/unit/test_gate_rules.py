"""The send gate's rules, stated here from DESIGN.md and the README ("Eligibility: the send gate").

permitted AND reachable AND NOT suppressed AND inside the send window; when several reasons apply, the
strongest is answered: objected, opted_out, suppressed, declined, expired, pending_confirmation, no_consent,
unverified_address, provider_blocked, undeliverable, address_expired, outside_send_window, no_contact_point.
Transactional purposes need no consent, only a verified address (confirmed by its own channel or given by the
tenant's records, never one a form brought), reachability and no "everything" suppression, and ignore send
windows. Marketing does not ask whether the address is verified: the address's own consent decides.
"""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, datetime, time, timedelta

import pytest

from app.domain.gate import (
    ELIGIBLE,
    PRECEDENCE,
    RANK,
    REACHABILITY_REASON,
    STATE_REASON,
    ConsentFact,
    GateDecision,
    PointFacts,
    Reason,
    Window,
    decide_point,
    effective_consent,
    is_suppressed,
    strongest,
)
from app.domain.model import (
    VERIFYING_TRIGGERS,
    Channel,
    PurposeKind,
    Reachability,
    State,
    SuppressionScope,
    Trigger,
    VerifiedVia,
)

ORDER = [
    "objected",
    "opted_out",
    "suppressed",
    "paused",
    "declined",
    "expired",
    "pending_confirmation",
    "no_consent",
    "unverified_address",
    "provider_blocked",
    "undeliverable",
    "address_expired",
    "outside_send_window",
    "no_contact_point",
]
PERMITTING = ["opted_in", "legitimate_interest", "transactional", "existing_customer"]
BY_STATE = {
    "opted_in": "opted_in",
    "objected": "objected",
    "opted_out": "opted_out",
    "declined": "declined",
    "expired": "expired",
    "pending": "pending_confirmation",
    "none": "no_consent",
}
BY_REACHABILITY = {
    "reachable": None,
    "provider_blocked": "provider_blocked",
    "undeliverable": "undeliverable",
    "expired": "address_expired",
}
T0 = datetime(2026, 1, 1, tzinfo=UTC)
NOON = datetime(2026, 6, 10, 10, 0, tzinfo=UTC)  # 12:00 in Berlin
NIGHT = datetime(2026, 6, 10, 21, 0, tzinfo=UTC)  # 23:00 in Berlin
DAYTIME = Window(time(8), time(21))
EVENT = uuid.UUID("01a20403-96cc-7247-94d2-bb2e46fed6b3")


def point(
    state,
    *,
    channel=Channel.SMS,
    reachability=Reachability.REACHABLE,
    scopes=(),
    timezone=None,
    event=EVENT,
    verified=True,
):
    consent = None if state is None else ConsentFact(state, T0, event)
    return PointFacts(
        id=uuid.uuid4(),
        channel=channel,
        value="+4915123456789",
        reachability=reachability,
        purpose_consent=consent,
        channel_consent=None,
        suppression_scopes=frozenset(scopes),
        timezone=timezone,
        verified=verified,
    )


def decide(facts, kind=PurposeKind.MARKETING, now=NOON, window=DAYTIME):
    return decide_point(facts, kind, now=now, window=window, default_timezone="Europe/Berlin")


def test_the_reasons_are_the_readmes_vocabulary():
    assert sorted(r.value for r in Reason) == sorted(ORDER + PERMITTING)
    assert [r.value for r in PRECEDENCE] == ORDER
    assert [RANK[r] for r in PRECEDENCE] == list(range(len(ORDER)))
    assert sorted(r.value for r in ELIGIBLE) == sorted(PERMITTING)


def test_each_state_and_each_reachability_gives_its_reason():
    assert {s.value: r.value for s, r in STATE_REASON.items()} == BY_STATE
    assert {a.value: (r.value if r else None) for a, r in REACHABILITY_REASON.items()} == BY_REACHABILITY


def test_only_the_addresss_own_proof_or_the_tenants_import_verifies_it():
    """How an address becomes verified (contact_points.verified_via), and that nothing else verifies it."""
    assert sorted(v.value for v in VerifiedVia) == ["api", "confirmed", "permission", "start_word"]
    assert {t.value: v.value for t, v in VERIFYING_TRIGGERS.items()} == {
        "confirm": "confirmed",
        "start_word": "start_word",
        "permission_granted": "permission",
        "import": "api",
    }
    assert Trigger.SIGNUP not in VERIFYING_TRIGGERS, "a form's signup is what must not verify"


SCOPES = [(), (SuppressionScope.PURPOSE,), (SuppressionScope.ALL_MARKETING,), (SuppressionScope.ALL,)]


def expected_marketing(channel, state, reachability, scopes, now):
    """The rule, from the statement above (not from the gate's tables)."""
    if SuppressionScope.ALL in scopes:
        return False, "suppressed"
    if channel is Channel.PRINT:
        permission = "objected" if state is State.OBJECTED else "legitimate_interest"
    else:
        permission = BY_STATE[(state or State.NONE).value]
    reasons = [] if permission in PERMITTING else [permission]
    if scopes:
        reasons.append("suppressed")
    if BY_REACHABILITY[reachability.value]:
        reasons.append(BY_REACHABILITY[reachability.value])
    if reasons:
        return False, min(reasons, key=ORDER.index)
    if now is NIGHT and channel is not Channel.PRINT:
        return False, "outside_send_window"
    return True, permission


@pytest.mark.parametrize("channel", [Channel.SMS, Channel.PRINT])
@pytest.mark.parametrize("state", [None, *State])
def test_every_combination_of_permission_suppression_reachability_and_window(channel, state):
    for reachability, scopes, now, verified in itertools.product(Reachability, SCOPES, [NOON, NIGHT], [True, False]):
        window = DAYTIME if channel is Channel.SMS else None
        facts = point(state, channel=channel, reachability=reachability, scopes=scopes, verified=verified)
        decision = decide(facts, now=now, window=window)
        expected = expected_marketing(channel, state, reachability, scopes, now)
        assert (decision.eligible, decision.reason.value) == expected, (state, reachability, scopes, now)
        assert decision.evidence_event_id == (None if state is None else EVENT)
        opens = decision.reason is Reason.OUTSIDE_SEND_WINDOW
        assert decision.next_window_opens_at == (datetime(2026, 6, 11, 6, 0, tzinfo=UTC) if opens else None)


@pytest.mark.parametrize("channel", [Channel.EMAIL, Channel.SMS, Channel.PRINT])
@pytest.mark.parametrize("state", [None, *State])
def test_transactional_needs_a_verified_reachable_address_and_no_everything_suppression_only(channel, state):
    for reachability, scopes, now, verified in itertools.product(Reachability, SCOPES, [NOON, NIGHT], [True, False]):
        facts = point(state, channel=channel, reachability=reachability, scopes=scopes, verified=verified)
        decision = decide(facts, PurposeKind.TRANSACTIONAL, now)
        if SuppressionScope.ALL in scopes:
            expected = (False, "suppressed")
        elif not verified:
            expected = (False, "unverified_address")
        elif BY_REACHABILITY[reachability.value]:
            expected = (False, BY_REACHABILITY[reachability.value])
        else:
            expected = (True, "transactional")
        assert (decision.eligible, decision.reason.value) == expected, (reachability, scopes, now)
        assert decision.evidence_event_id == (None if state is None else EVENT)
        assert decision.next_window_opens_at is None


def consent(state, day, event=None):
    return ConsentFact(state, None if day is None else T0 + timedelta(days=day), event or uuid.uuid4())


def with_consents(purpose, channel_level):
    return PointFacts(
        id=uuid.uuid4(),
        channel=Channel.EMAIL,
        value="jane@example.com",
        reachability=Reachability.REACHABLE,
        purpose_consent=purpose,
        channel_consent=channel_level,
        suppression_scopes=frozenset(),
        timezone=None,
        verified=True,
    )


def test_the_later_of_the_purpose_and_the_channel_level_consent_decides():
    purpose, later = consent(State.OPTED_IN, 1), consent(State.OPTED_OUT, 2)
    assert effective_consent(with_consents(purpose, later)) is later
    assert effective_consent(with_consents(later, purpose)) is later
    assert effective_consent(with_consents(purpose, None)) is purpose
    assert effective_consent(with_consents(None, later)) is later
    assert effective_consent(with_consents(None, None)) is None


def test_a_consent_without_a_date_does_not_count():
    dated = consent(State.OPTED_IN, 1)
    undated = consent(State.OPTED_OUT, None)
    assert effective_consent(with_consents(undated, dated)) is dated
    assert effective_consent(with_consents(dated, undated)) is dated
    assert effective_consent(with_consents(undated, None)) is None
    decision = decide(with_consents(undated, None), window=None)
    assert (decision.reason, decision.evidence_event_id) == (Reason.NO_CONSENT, None)


def test_the_evidence_is_the_event_of_the_consent_that_decided():
    purpose = consent(State.OPTED_IN, 1, uuid.UUID(int=1))
    withdrawal = consent(State.OPTED_OUT, 2, uuid.UUID(int=2))
    decision = decide(with_consents(purpose, withdrawal), window=None)
    assert (decision.eligible, decision.reason, decision.evidence_event_id) == (
        False,
        Reason.OPTED_OUT,
        uuid.UUID(int=2),
    )


def test_of_two_opted_in_addresses_the_first_one_given_is_answered_with_its_evidence():
    first = decide(point(State.OPTED_IN, event=uuid.UUID(int=1)))
    second = decide(point(State.OPTED_IN, event=uuid.UUID(int=2)))
    assert strongest([first, second]).evidence_event_id == uuid.UUID(int=1)
    assert strongest([second, first]).evidence_event_id == uuid.UUID(int=2)
    refused = decide(point(State.OPTED_OUT, event=uuid.UUID(int=3)))
    assert strongest([refused, second, first]).evidence_event_id == uuid.UUID(int=2)


def test_with_no_eligible_address_the_strongest_reason_is_answered_and_the_first_on_a_tie():
    pending = decide(point(State.PENDING, event=uuid.UUID(int=1)))
    out_a = decide(point(State.OPTED_OUT, event=uuid.UUID(int=2)))
    out_b = decide(point(State.OPTED_OUT, event=uuid.UUID(int=3)))
    assert strongest([pending, out_a, out_b]) is out_a
    assert strongest([out_b, pending, out_a]) is out_b
    assert strongest([pending]) is pending
    assert strongest([]) is None


def test_a_decision_outside_the_window_is_not_eligible():
    decision = decide(point(State.OPTED_IN), now=NIGHT)
    assert decision == GateDecision(
        eligible=False,
        reason=Reason.OUTSIDE_SEND_WINDOW,
        evidence_event_id=EVENT,
        next_window_opens_at=datetime(2026, 6, 11, 6, 0, tzinfo=UTC),
    )
    inside = GateDecision(True, Reason.OPTED_IN, EVENT, None, holds_until=datetime(2026, 6, 10, 19, 0, tzinfo=UTC))
    assert decide(point(State.OPTED_IN), now=NOON) == inside  # until the window closes at 21:00 in Berlin


def test_the_contacts_zone_comes_before_the_workspaces():
    # 23:00 in Berlin is 17:00 in New York: inside for the contact, outside in the workspace's zone
    assert decide(point(State.OPTED_IN, timezone="America/New_York"), now=NIGHT).eligible
    assert not decide(point(State.OPTED_IN, timezone=None), now=NIGHT).eligible
    # 18:00 in Berlin is 21:30 in Kolkata: outside for the contact, inside in the workspace's zone
    evening = datetime(2026, 6, 10, 16, 0, tzinfo=UTC)
    assert not decide(point(State.OPTED_IN, timezone="Asia/Kolkata"), now=evening).eligible
    assert decide(point(State.OPTED_IN, timezone=None), now=evening).eligible


@pytest.mark.parametrize(
    "scopes", [set(combination) for n in range(4) for combination in itertools.combinations(list(SuppressionScope), n)]
)
@pytest.mark.parametrize("kind", list(PurposeKind))
def test_which_suppressions_stop_which_purposes(scopes, kind):
    # written out from CHANNEL_RULES.md: "all" stops every message, transactional included; "all_marketing" and a
    # suppression naming this purpose stop marketing only; nothing else stops anything
    expected = SuppressionScope.ALL in scopes or (
        kind == PurposeKind.MARKETING and bool(scopes & {SuppressionScope.ALL_MARKETING, SuppressionScope.PURPOSE})
    )
    assert is_suppressed(scopes, kind) is expected
    assert is_suppressed(list(scopes), kind) is expected, "any collection of scopes"
