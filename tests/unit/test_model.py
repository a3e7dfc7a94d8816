"""The vocabulary of consent: the values the API, the ledger and the database store (README, DESIGN.md)."""

from __future__ import annotations

import enum

import pytest

from app.domain import model

VOCABULARY: dict[type[enum.StrEnum], list[str]] = {
    model.Channel: ["email", "sms", "whatsapp", "app_push", "web_push", "print"],
    model.State: ["none", "pending", "opted_in", "declined", "opted_out", "expired", "objected"],
    model.Trigger: [
        "signup",
        "resend",
        "confirm",
        "lapse",
        "unsubscribe",
        "complaint",
        "objection",
        "objection_withdrawn",
        "robinson_match",
        "start_word",
        "stop_word",
        "provider_block",
        "permission_granted",
        "permission_denied",
        "permission_revoked",
        "uninstalled",
        "provider_gone",
        "validity_ended",
        "import",
        "erasure",
        "merged",
        "pause",
        "pause_ended",
        "preference_opt_in",
        "reassigned",
        "purchase",
        "renewed",
    ],
    model.LegalBasis: ["consent", "legitimate_interest", "uwg_7_3"],
    model.ActorType: ["api_key", "subject", "provider", "system"],
    model.Reachability: ["reachable", "undeliverable", "provider_blocked", "expired"],
    model.PurposeKind: ["marketing", "transactional"],
    model.SuppressionScope: ["purpose", "all_marketing", "all"],
    model.SuppressionReason: [
        "unsubscribe",
        "objection_art21",
        "objection_sticker",
        "complaint",
        "hard_bounce",
        "erasure",
        "provider_block",
        "robinson",
        "paused",
    ],
    model.SuppressionSource: [*(reason.value for reason in model.SuppressionReason), "unrecorded"],
    model.RequestChannel: ["email", "letter", "web_form", "phone", "in_person", "other"],
    model.ObjectionKind: ["personal", "sticker", "art21", "robinson"],
}


@pytest.mark.parametrize(("kind", "values"), VOCABULARY.items(), ids=lambda v: getattr(v, "__name__", ""))
def test_every_value_is_the_documented_one(kind, values):
    assert [member.value for member in kind] == values
    assert [member.name.lower() for member in kind] == values


def test_withdrawals_and_objections_are_the_states_a_later_import_cannot_override():
    assert {model.State.OPTED_OUT, model.State.OBJECTED} == model.WITHDRAWN_STATES
