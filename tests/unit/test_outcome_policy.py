"""The one HTTP-status policy of the provider adapters (channel_providers.base.outcome_for_status), and what
becomes of a delivery whose provider call was in flight when its worker died (app.messages.policy)."""

from __future__ import annotations

import pytest

from app.domain.model import PurposeKind
from app.messages.policy import AfterCrash, after_crash
from app.messages.status import DeliveryStatus
from channel_providers.base import Outcome, outcome_for_status


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (None, Outcome.TRANSIENT),
        (200, Outcome.ACCEPTED),
        (201, Outcome.ACCEPTED),
        (204, Outcome.ACCEPTED),
        (299, Outcome.ACCEPTED),
        (100, Outcome.PERMANENT),
        (301, Outcome.PERMANENT),
        (307, Outcome.PERMANENT),
        (400, Outcome.PERMANENT),
        (401, Outcome.PERMANENT),
        (403, Outcome.PERMANENT),
        (404, Outcome.PERMANENT),
        (409, Outcome.PERMANENT),
        (410, Outcome.PERMANENT),
        (413, Outcome.PERMANENT),
        (429, Outcome.TRANSIENT),
        (500, Outcome.TRANSIENT),
        (502, Outcome.TRANSIENT),
        (503, Outcome.TRANSIENT),
        (599, Outcome.TRANSIENT),
    ],
)
def test_without_provider_rules_2xx_is_accepted_429_and_5xx_transient_the_rest_permanent(status, expected):
    assert outcome_for_status(status) is expected


def test_gone_is_only_what_the_provider_says_is_gone():
    assert outcome_for_status(404) is Outcome.PERMANENT, "a 404 is a wrong URL unless the provider says otherwise"
    assert outcome_for_status(404, gone=(404, 410)) is Outcome.GONE
    assert outcome_for_status(410, gone=(404, 410)) is Outcome.GONE
    assert outcome_for_status(410, gone=(404,)) is Outcome.PERMANENT
    assert outcome_for_status(None, gone=(404, 410)) is Outcome.TRANSIENT


def test_a_provider_may_add_transient_and_accepted_statuses():
    assert outcome_for_status(401, transient=(401,)) is Outcome.TRANSIENT
    assert outcome_for_status(403, transient=(401,)) is Outcome.PERMANENT
    assert outcome_for_status(409, accepted=(409,)) is Outcome.ACCEPTED
    assert outcome_for_status(503, accepted=(409,)) is Outcome.TRANSIENT


def test_extra_statuses_cannot_turn_a_success_into_a_failure():
    assert outcome_for_status(200, gone=(200,), transient=(200,)) is Outcome.ACCEPTED


@pytest.mark.parametrize(
    ("rules", "status", "expected"),
    [
        # what each adapter passes, and what its provider's documented answers become
        ({"gone": (410,)}, 410, Outcome.GONE),  # APNs Unregistered
        ({"gone": (410,)}, 400, Outcome.PERMANENT),  # APNs BadDeviceToken
        ({"gone": (404,), "transient": (401,)}, 404, Outcome.GONE),  # FCM NOT_FOUND
        ({"gone": (404,), "transient": (401,)}, 401, Outcome.TRANSIENT),  # FCM token expired
        ({"gone": (404, 410)}, 404, Outcome.GONE),  # web push
        ({"gone": (404, 410)}, 413, Outcome.PERMANENT),  # web push payload too large
        ({"accepted": (409,)}, 409, Outcome.ACCEPTED),  # print house: the job exists already
        ({}, 400, Outcome.PERMANENT),  # Twilio 21211 invalid number
    ],
)
def test_the_adapters_provider_rules(rules, status, expected):
    assert outcome_for_status(status, **rules) is expected


def test_in_flight_at_a_crash_marketing_is_at_most_once_and_transactional_at_least_once():
    assert after_crash(PurposeKind.MARKETING) is AfterCrash.UNKNOWN
    assert after_crash(PurposeKind.TRANSACTIONAL) is AfterCrash.RESEND


def test_every_purpose_kind_has_a_crash_policy_and_unknown_is_a_delivery_status():
    assert {after_crash(kind) for kind in PurposeKind} <= set(AfterCrash)
    assert AfterCrash.UNKNOWN.value == DeliveryStatus.UNKNOWN.value
